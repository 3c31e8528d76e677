//! [`ConfigBuilder`]: realistic config spaces for tests and for the simulator.
//!
//! The builder lays capabilities out the way firmware and silicon do (standard list from 0x40,
//! extended list from 0x100, each entry linked to the next) and records BAR sizes, which real config
//! space only reveals through size probing.
//!
//! It asserts its own preconditions: a BAR size must be a power of two, a capability must fit. Those
//! are programming errors in the caller, not outside data, so they panic (see `# Panics`).

use crate::caps::{LinkSpeed, PortType};
use crate::config::{CONVENTIONAL_SIZE, EXTENDED_SIZE, HEADER_SIZE};
use crate::decode::KnownSizes;
use crate::regs;

/// A finished config space with the sizes that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltConfig {
    /// 4096 bytes of config space.
    pub bytes: Vec<u8>,
    /// BAR and ROM sizes.
    pub sizes: KnownSizes,
    /// Per-VF BAR sizes when the config has SR-IOV.
    pub vf_bar_sizes: [Option<u64>; 6],
}

/// Options for the PCI Express capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieOptions {
    /// Device/port type.
    pub port_type: PortType,
    /// Function level reset capable.
    pub flr: bool,
    /// Max payload supported encoding (0 = 128 B ... 5 = 4096 B).
    pub max_payload_field: u8,
    /// Link speed (cap and status).
    pub speed: LinkSpeed,
    /// Link width (cap and status).
    pub width: u8,
    /// Negotiated speed, if lower than the capability.
    pub trained_speed: Option<LinkSpeed>,
    /// Negotiated width, if narrower than the capability.
    pub trained_width: Option<u8>,
    /// Slot: (hot-plug capable, surprise, physical slot number).
    pub slot: Option<(bool, bool, u16)>,
    /// ARI forwarding supported and enabled (downstream ports).
    pub ari_forwarding: bool,
}

impl PcieOptions {
    /// An endpoint at the given link.
    pub fn endpoint(speed: LinkSpeed, width: u8) -> Self {
        Self {
            port_type: PortType::Endpoint,
            flr: true,
            max_payload_field: 1,
            speed,
            width,
            trained_speed: None,
            trained_width: None,
            slot: None,
            ari_forwarding: false,
        }
    }
}

/// Options for the SR-IOV capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SriovOptions {
    /// TotalVFs (and InitialVFs).
    pub total_vfs: u16,
    /// NumVFs currently enabled.
    pub num_vfs: u16,
    /// First VF offset.
    pub first_vf_offset: u16,
    /// VF stride.
    pub vf_stride: u16,
    /// VF device id.
    pub vf_device_id: u16,
    /// VF BARs: (index, 64-bit, prefetchable, per-VF size).
    pub vf_bars: Vec<(u8, bool, bool, u64)>,
}

/// Builds a config space byte by byte. See the module docs.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    bytes: Vec<u8>,
    sizes: KnownSizes,
    vf_bar_sizes: [Option<u64>; 6],
    next_cap: usize,
    last_cap_link: usize,
    next_ecap: usize,
    last_ecap: Option<usize>,
}

fn put16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn low32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).expect("masked to 32 bits")
}

fn high32(v: u64) -> u32 {
    u32::try_from(v >> 32).expect("shifted to 32 bits")
}

impl ConfigBuilder {
    /// A type 0 (endpoint) function with the given ids and 24-bit class code.
    pub fn endpoint(vendor_id: u16, device_id: u16, class: u32) -> Self {
        Self::with_header(vendor_id, device_id, class, 0x00)
    }

    /// A type 1 (bridge) function.
    pub fn bridge(vendor_id: u16, device_id: u16, class: u32) -> Self {
        Self::with_header(vendor_id, device_id, class, 0x01)
    }

    fn with_header(vendor_id: u16, device_id: u16, class: u32, header_type: u8) -> Self {
        let mut bytes = vec![0u8; EXTENDED_SIZE];
        put16(&mut bytes, regs::VENDOR_ID, vendor_id);
        put16(&mut bytes, regs::DEVICE_ID, device_id);
        put32(
            &mut bytes,
            regs::REVISION_ID,
            (class & 0x00ff_ffff) << 8 | 0x01,
        );
        bytes[regs::HEADER_TYPE] = header_type;
        put16(
            &mut bytes,
            regs::COMMAND,
            regs::COMMAND_MEMORY | regs::COMMAND_MASTER | regs::COMMAND_INTX_DISABLE,
        );
        Self {
            bytes,
            sizes: KnownSizes::default(),
            vf_bar_sizes: [None; 6],
            next_cap: HEADER_SIZE,
            last_cap_link: regs::CAPABILITY_LIST,
            next_ecap: CONVENTIONAL_SIZE,
            last_ecap: None,
        }
    }

    /// Sets the revision id.
    pub fn revision(mut self, revision: u8) -> Self {
        self.bytes[regs::REVISION_ID] = revision;
        self
    }

    /// Sets subsystem ids (type 0 header).
    pub fn subsystem(mut self, vendor_id: u16, id: u16) -> Self {
        put16(&mut self.bytes, regs::SUBSYSTEM_VENDOR_ID, vendor_id);
        put16(&mut self.bytes, regs::SUBSYSTEM_ID, id);
        self
    }

    /// Sets the command register.
    pub fn command(mut self, command: u16) -> Self {
        put16(&mut self.bytes, regs::COMMAND, command);
        self
    }

    /// Sets the interrupt pin (1 = INTA).
    pub fn interrupt_pin(mut self, pin: u8) -> Self {
        self.bytes[regs::INTERRUPT_PIN] = pin;
        self
    }

    /// Marks the function as part of a multi-function device.
    pub fn multifunction(mut self) -> Self {
        self.bytes[regs::HEADER_TYPE] |= 0x80;
        self
    }

    fn check_bar(index: u8, address: u64, size: u64, min: u64) {
        assert!(index < 6, "BAR index {index} out of range");
        assert!(
            size.is_power_of_two() && size >= min,
            "BAR size {size:#x} must be a power of two >= {min:#x}"
        );
        assert!(
            address.is_multiple_of(size),
            "BAR address {address:#x} must be aligned to its size {size:#x}"
        );
    }

    /// A 32-bit memory BAR.
    ///
    /// # Panics
    /// Index above 5, size not a power of two of at least 16 bytes, or address not aligned to size.
    pub fn bar32(mut self, index: u8, address: u32, size: u64, prefetchable: bool) -> Self {
        Self::check_bar(index, u64::from(address), size, 16);
        let flags = if prefetchable {
            regs::BAR_MEM_PREFETCH
        } else {
            0
        };
        put32(
            &mut self.bytes,
            regs::BAR_0 + 4 * usize::from(index),
            address | flags,
        );
        self.sizes.bars[usize::from(index)] = Some(size);
        self
    }

    /// A 64-bit memory BAR occupying `index` and `index + 1`.
    ///
    /// # Panics
    /// Index above 4, size not a power of two of at least 16 bytes, or address not aligned to size.
    pub fn bar64(mut self, index: u8, address: u64, size: u64, prefetchable: bool) -> Self {
        assert!(
            index < 5,
            "64-bit BAR at index {index} has no room for its upper half"
        );
        Self::check_bar(index, address, size, 16);
        let flags = regs::BAR_MEM_TYPE_64
            | if prefetchable {
                regs::BAR_MEM_PREFETCH
            } else {
                0
            };
        let at = regs::BAR_0 + 4 * usize::from(index);
        put32(&mut self.bytes, at, low32(address) | flags);
        put32(&mut self.bytes, at + 4, high32(address));
        self.sizes.bars[usize::from(index)] = Some(size);
        self
    }

    /// An I/O BAR.
    ///
    /// # Panics
    /// Index above 5, size not a power of two of at least 4 bytes, or address not aligned to size.
    pub fn io_bar(mut self, index: u8, address: u32, size: u64) -> Self {
        Self::check_bar(index, u64::from(address), size, 4);
        put32(
            &mut self.bytes,
            regs::BAR_0 + 4 * usize::from(index),
            address | regs::BAR_SPACE_IO,
        );
        self.sizes.bars[usize::from(index)] = Some(size);
        self
    }

    /// An expansion ROM.
    ///
    /// # Panics
    /// Size not a power of two of at least 2 KiB, or address not aligned to size.
    pub fn rom(mut self, address: u32, size: u64, enabled: bool) -> Self {
        assert!(
            size.is_power_of_two() && size >= 0x800,
            "ROM size {size:#x} invalid"
        );
        assert!(
            u64::from(address).is_multiple_of(size),
            "ROM address not aligned"
        );
        let at = if self.bytes[regs::HEADER_TYPE] & 0x7f == 1 {
            regs::BRIDGE_ROM_ADDRESS
        } else {
            regs::ROM_ADDRESS
        };
        put32(&mut self.bytes, at, address | u32::from(enabled));
        self.sizes.rom = Some(size);
        self
    }

    /// Bridge bus numbers and a non-prefetchable and 64-bit prefetchable window.
    pub fn bridge_windows(
        mut self,
        (primary, secondary, subordinate): (u8, u8, u8),
        memory: (u32, u32),
        prefetchable: (u64, u64),
    ) -> Self {
        self.bytes[regs::PRIMARY_BUS] = primary;
        self.bytes[regs::SECONDARY_BUS] = secondary;
        self.bytes[regs::SUBORDINATE_BUS] = subordinate;
        let mem = |a: u32| u16::try_from((a >> 16) & 0xfff0).expect("masked");
        put16(&mut self.bytes, regs::MEMORY_BASE, mem(memory.0));
        put16(&mut self.bytes, regs::MEMORY_LIMIT, mem(memory.1));
        let pref = |a: u64| u16::try_from((low32(a) >> 16) & 0xfff0).expect("masked") | 0x1;
        put16(
            &mut self.bytes,
            regs::PREF_MEMORY_BASE,
            pref(prefetchable.0),
        );
        put16(
            &mut self.bytes,
            regs::PREF_MEMORY_LIMIT,
            pref(prefetchable.1),
        );
        put32(
            &mut self.bytes,
            regs::PREF_BASE_UPPER32,
            high32(prefetchable.0),
        );
        put32(
            &mut self.bytes,
            regs::PREF_LIMIT_UPPER32,
            high32(prefetchable.1),
        );
        self
    }

    /// Appends a standard capability. `body` is everything after the id and next-pointer bytes.
    ///
    /// # Panics
    /// When the capability does not fit below 0x100.
    pub fn cap_raw(mut self, id: u8, body: &[u8]) -> Self {
        let at = self.next_cap;
        let len = (2 + body.len()).next_multiple_of(4);
        assert!(
            at + len <= CONVENTIONAL_SIZE,
            "capability {id:#x} does not fit below 0x100"
        );
        self.bytes[at] = id;
        self.bytes[at + 1] = 0;
        self.bytes[at + 2..at + 2 + body.len()].copy_from_slice(body);
        self.bytes[self.last_cap_link] = u8::try_from(at).expect("below 0x100");
        self.last_cap_link = at + 1;
        self.next_cap = at + len;
        let status = u16::from_le_bytes([self.bytes[regs::STATUS], self.bytes[regs::STATUS + 1]]);
        put16(
            &mut self.bytes,
            regs::STATUS,
            status | regs::STATUS_CAP_LIST,
        );
        self
    }

    /// Appends an extended capability. `body` is everything after the 4-byte header.
    ///
    /// # Panics
    /// When the capability does not fit below 0x1000.
    pub fn ecap_raw(mut self, id: u16, version: u8, body: &[u8]) -> Self {
        let at = self.next_ecap;
        let len = (4 + body.len()).next_multiple_of(4);
        assert!(
            at + len <= EXTENDED_SIZE,
            "extended capability {id:#x} does not fit"
        );
        put32(
            &mut self.bytes,
            at,
            u32::from(id) | u32::from(version & 0xf) << 16,
        );
        self.bytes[at + 4..at + 4 + body.len()].copy_from_slice(body);
        if let Some(prev) = self.last_ecap {
            let header = u32::from_le_bytes([
                self.bytes[prev],
                self.bytes[prev + 1],
                self.bytes[prev + 2],
                self.bytes[prev + 3],
            ]);
            let at32 = u32::try_from(at).expect("below 0x1000");
            put32(&mut self.bytes, prev, (header & 0x000f_ffff) | at32 << 20);
        }
        self.last_ecap = Some(at);
        self.next_ecap = at + len;
        self
    }

    /// Power management v3; `no_soft_reset` set means a PM reset does nothing.
    pub fn pm(self, no_soft_reset: bool) -> Self {
        let mut b = [0u8; 6];
        put16(
            &mut b,
            0,
            0x0003 | regs::PM_CAP_D1 | regs::PM_CAP_D2 | 0xc800,
        );
        put16(
            &mut b,
            2,
            if no_soft_reset {
                regs::PM_CTRL_NO_SOFT_RESET
            } else {
                0
            },
        );
        self.cap_raw(regs::CAP_ID_PM, &b)
    }

    /// MSI with `2^log2_vectors` vectors, 64-bit, maskable.
    pub fn msi(self, log2_vectors: u8) -> Self {
        let mut b = [0u8; 22];
        let flags =
            regs::MSI_FLAGS_64BIT | regs::MSI_FLAGS_MASKBIT | u16::from(log2_vectors.min(5)) << 1;
        put16(&mut b, 0, flags);
        self.cap_raw(regs::CAP_ID_MSI, &b)
    }

    /// MSI-X with its table and PBA in `bar`.
    ///
    /// # Panics
    /// A table size of 0 or above 2048.
    pub fn msix(self, table_size: u16, bar: u8, table_offset: u32, pba_offset: u32) -> Self {
        assert!(
            (1..=2048).contains(&table_size),
            "MSI-X table size {table_size} invalid"
        );
        let mut b = [0u8; 10];
        put16(&mut b, 0, table_size - 1);
        put32(&mut b, 2, table_offset | u32::from(bar & 7));
        put32(&mut b, 6, pba_offset | u32::from(bar & 7));
        self.cap_raw(regs::CAP_ID_MSIX, &b)
    }

    /// The PCI Express capability (version 2).
    pub fn pcie(self, o: PcieOptions) -> Self {
        // Cap-relative offsets; the body starts at +2.
        let mut c = [0u8; 0x3c];
        let port = match o.port_type {
            PortType::Endpoint => 0x0,
            PortType::LegacyEndpoint => 0x1,
            PortType::RootPort => 0x4,
            PortType::UpstreamPort => 0x5,
            PortType::DownstreamPort => 0x6,
            PortType::PcieToPciBridge => 0x7,
            PortType::PciToPcieBridge => 0x8,
            PortType::RootComplexIntegratedEndpoint => 0x9,
            PortType::RootComplexEventCollector => 0xa,
            PortType::Unknown(v) => v & 0xf,
        };
        let slot = o.slot.is_some();
        put16(
            &mut c,
            regs::EXP_FLAGS,
            0x0002 | u16::from(port) << 4 | u16::from(slot) << 8,
        );
        let devcap = u32::from(o.max_payload_field & 7)
            | regs::EXP_DEVCAP_EXT_TAG
            | if o.flr { regs::EXP_DEVCAP_FLR } else { 0 };
        put32(&mut c, regs::EXP_DEVCAP, devcap);
        put16(
            &mut c,
            regs::EXP_DEVCTL,
            regs::EXP_DEVCTL_RELAX_EN
                | regs::EXP_DEVCTL_EXT_TAG
                | regs::EXP_DEVCTL_NOSNOOP_EN
                | 0x2000,
        );
        let width = u32::from(o.width & 0x3f);
        let lnkcap = u32::from(o.speed.field() & 0xf) | width << 4 | regs::EXP_LNKCAP_DLLLARC;
        put32(&mut c, regs::EXP_LNKCAP, lnkcap);
        let speed = o.trained_speed.unwrap_or(o.speed).field() & 0xf;
        let trained = u16::from(o.trained_width.unwrap_or(o.width) & 0x3f);
        put16(
            &mut c,
            regs::EXP_LNKSTA,
            u16::from(speed) | trained << 4 | regs::EXP_LNKSTA_DLLLA,
        );
        if let Some((hot_plug, surprise, number)) = o.slot {
            let sltcap = u32::from(number & 0x1fff) << 19
                | if hot_plug { regs::EXP_SLTCAP_HPC } else { 0 }
                | if surprise { regs::EXP_SLTCAP_HPS } else { 0 };
            put32(&mut c, regs::EXP_SLTCAP, sltcap);
            put16(&mut c, regs::EXP_SLTSTA, regs::EXP_SLTSTA_PDS);
        }
        let ari = if o.ari_forwarding {
            regs::EXP_DEVCAP2_ARI
        } else {
            0
        };
        put32(
            &mut c,
            regs::EXP_DEVCAP2,
            ari | regs::EXP_DEVCAP2_10BIT_TAG_COMP,
        );
        put16(
            &mut c,
            regs::EXP_DEVCTL2,
            if o.ari_forwarding {
                regs::EXP_DEVCTL2_ARI
            } else {
                0
            },
        );
        // Supported speeds vector: every speed up to the maximum.
        let max = u32::from(o.speed.field().min(7));
        let vector = (1..=max).fold(0u32, |v, s| v | 1 << s);
        put32(&mut c, regs::EXP_LNKCAP2, vector);
        self.cap_raw(regs::CAP_ID_EXP, &c[2..])
    }

    /// A vendor-specific capability of `length` bytes (including the 3-byte header).
    ///
    /// # Panics
    /// `length` below 3.
    pub fn vendor_specific(self, length: u8) -> Self {
        assert!(length >= 3, "vendor-specific length must cover its header");
        let mut b = vec![0u8; usize::from(length) - 2];
        b[0] = length;
        self.cap_raw(regs::CAP_ID_VNDR, &b)
    }

    /// Bridge subsystem ids capability.
    pub fn ssvid(self, vendor_id: u16, id: u16) -> Self {
        let mut b = [0u8; 6];
        put16(&mut b, 2, vendor_id);
        put16(&mut b, 4, id);
        self.cap_raw(regs::CAP_ID_SSVID, &b)
    }

    /// Advanced features capability with TP and (optionally) FLR.
    pub fn advanced_features(self, flr: bool) -> Self {
        let mut b = [0u8; 4];
        b[0] = 0x06; // length
        b[1] = regs::AF_CAP_TP | if flr { regs::AF_CAP_FLR } else { 0 };
        self.cap_raw(regs::CAP_ID_AF, &b)
    }

    /// Enhanced allocation with one 32-bit memory entry for BAR 0.
    pub fn enhanced_allocation(self, base: u32, size: u32) -> Self {
        let mut b = [0u8; 14];
        b[0] = 1; // one entry
        // Entry DW0: 2 more dwords, BEI 0, primary property 0 (memory), enabled.
        put32(&mut b, 2, 0x8000_0002);
        put32(&mut b, 6, base & 0xffff_fffc);
        put32(&mut b, 10, (size.saturating_sub(1)) & 0xffff_fffc);
        self.cap_raw(regs::CAP_ID_EA, &b)
    }

    /// AER (version 2), no errors logged, ECRC capable.
    pub fn aer(self) -> Self {
        let mut b = [0u8; 0x44];
        put32(&mut b, 0x0c - 4, 0x0006_2030); // severity: DLP, SDES, FCP, RxOF, MalfTLP
        put32(&mut b, 0x14 - 4, 0x0000_2000); // correctable mask: advisory non-fatal
        put32(&mut b, 0x18 - 4, 0x0000_00a0); // ECRC generation and check capable
        self.ecap_raw(regs::ECAP_ID_AER, 2, &b)
    }

    /// Virtual channel with only VC0.
    pub fn virtual_channel(self) -> Self {
        let mut b = [0u8; 0x1c];
        put32(&mut b, 0x10 - 4, 0x8000_00ff); // VC0 resource control: enabled, TC0-7 mapped
        self.ecap_raw(regs::ECAP_ID_VC, 1, &b)
    }

    /// Device serial number.
    pub fn serial_number(self, serial: u64) -> Self {
        let mut b = [0u8; 8];
        put32(&mut b, 0, low32(serial));
        put32(&mut b, 4, high32(serial));
        self.ecap_raw(regs::ECAP_ID_DSN, 1, &b)
    }

    /// Power budgeting with no entries populated.
    pub fn power_budgeting(self) -> Self {
        self.ecap_raw(regs::ECAP_ID_PWR, 1, &[0u8; 0x0c])
    }

    /// ACS with the given capability and control bits.
    pub fn acs(self, capability: u16, control: u16) -> Self {
        let mut b = [0u8; 4];
        put16(&mut b, 0, capability);
        put16(&mut b, 2, control);
        self.ecap_raw(regs::ECAP_ID_ACS, 1, &b)
    }

    /// ARI with the next function number.
    pub fn ari(self, next_function: u8) -> Self {
        let mut b = [0u8; 4];
        put16(&mut b, 0, u16::from(next_function) << 8);
        self.ecap_raw(regs::ECAP_ID_ARI, 1, &b)
    }

    /// ATS, disabled.
    pub fn ats(self) -> Self {
        let mut b = [0u8; 4];
        put16(&mut b, 0, 0x0020); // page aligned requests
        self.ecap_raw(regs::ECAP_ID_ATS, 1, &b)
    }

    /// SR-IOV.
    ///
    /// # Panics
    /// More VFs enabled than TotalVFs, or a VF BAR size that is not a power of two.
    pub fn sriov(mut self, o: &SriovOptions) -> Self {
        assert!(o.num_vfs <= o.total_vfs, "NumVFs above TotalVFs");
        let mut c = [0u8; regs::SRIOV_LEN];
        put16(
            &mut c,
            regs::SRIOV_CTRL,
            if o.num_vfs > 0 {
                regs::SRIOV_CTRL_VFE | regs::SRIOV_CTRL_MSE
            } else {
                0
            },
        );
        put16(&mut c, regs::SRIOV_INITIAL_VF, o.total_vfs);
        put16(&mut c, regs::SRIOV_TOTAL_VF, o.total_vfs);
        put16(&mut c, regs::SRIOV_NUM_VF, o.num_vfs);
        put16(&mut c, regs::SRIOV_VF_OFFSET, o.first_vf_offset);
        put16(&mut c, regs::SRIOV_VF_STRIDE, o.vf_stride);
        put16(&mut c, regs::SRIOV_VF_DID, o.vf_device_id);
        put32(&mut c, regs::SRIOV_SUP_PGSIZE, 0x0000_0553);
        put32(&mut c, regs::SRIOV_SYS_PGSIZE, 0x0000_0001);
        for &(index, is64, prefetchable, size) in &o.vf_bars {
            assert!(size.is_power_of_two(), "VF BAR size must be a power of two");
            let flags = if is64 { regs::BAR_MEM_TYPE_64 } else { 0 }
                | if prefetchable {
                    regs::BAR_MEM_PREFETCH
                } else {
                    0
                };
            put32(&mut c, regs::SRIOV_BAR + 4 * usize::from(index), flags);
            if let Some(slot) = self.vf_bar_sizes.get_mut(usize::from(index)) {
                *slot = Some(size);
            }
        }
        self.ecap_raw(regs::ECAP_ID_SRIOV, 1, &c[4..])
    }

    /// Resizable BAR: entries of (BAR index, current size, supported sizes), sizes in bytes, 1 MiB..128 TiB.
    ///
    /// # Panics
    /// No entries, more than six, or a size that is not a power of two in range.
    pub fn resizable_bar(self, entries: &[(u8, u64, &[u64])]) -> Self {
        assert!(
            (1..=6).contains(&entries.len()),
            "1 to 6 resizable BAR entries"
        );
        let log = |s: u64| {
            assert!(
                s.is_power_of_two() && (1 << 20..=1 << 47).contains(&s),
                "rebar size {s:#x}"
            );
            s.trailing_zeros() - 20
        };
        let mut b = vec![0u8; 8 * entries.len()];
        let count = u32::try_from(entries.len()).expect("at most 6");
        for (i, (bar, current, supported)) in entries.iter().enumerate() {
            let cap = supported.iter().fold(0u32, |v, s| v | 1 << (log(*s) + 4));
            let mut ctrl = u32::from(*bar & 7) | log(*current) << 8;
            if i == 0 {
                ctrl |= count << 5;
            }
            put32(&mut b, 8 * i, cap);
            put32(&mut b, 8 * i + 4, ctrl);
        }
        self.ecap_raw(regs::ECAP_ID_REBAR, 1, &b)
    }

    /// DPC, root-port extensions present, disabled.
    pub fn dpc(self) -> Self {
        let mut b = [0u8; 0x14];
        put16(&mut b, 0, 0x0020 | 0x0080);
        self.ecap_raw(regs::ECAP_ID_DPC, 1, &b)
    }

    /// LTR with 1 ms maximum latencies (value 1, scale 5 = 1 * 32^5 ns... rounded in hardware terms).
    pub fn ltr(self) -> Self {
        let mut b = [0u8; 4];
        put16(&mut b, 0, 0x1001);
        put16(&mut b, 2, 0x1001);
        self.ecap_raw(regs::ECAP_ID_LTR, 1, &b)
    }

    /// L1 PM substates, all four supported.
    pub fn l1_substates(self) -> Self {
        let mut b = [0u8; 0x0c];
        put32(&mut b, 0, 0x0000_001f);
        self.ecap_raw(regs::ECAP_ID_L1SS, 1, &b)
    }

    /// Secondary PCIe (needed at 8 GT/s and above).
    pub fn secondary_pcie(self, lanes: u8) -> Self {
        let b = vec![0u8; 8 + 2 * usize::from(lanes)];
        self.ecap_raw(regs::ECAP_ID_SECPCI, 1, &b)
    }

    /// PASID with the given width.
    pub fn pasid(self, max_width: u8) -> Self {
        let mut b = [0u8; 4];
        put16(&mut b, 0, 0x0006 | u16::from(max_width & 0x1f) << 8);
        self.ecap_raw(regs::ECAP_ID_PASID, 1, &b)
    }

    /// PRI with an outstanding-request capacity.
    pub fn pri(self, capacity: u32) -> Self {
        let mut b = [0u8; 0x0c];
        put16(&mut b, 2, 0x0100); // stopped
        put32(&mut b, 4, capacity);
        self.ecap_raw(regs::ECAP_ID_PRI, 1, &b)
    }

    /// PTM requester.
    pub fn ptm(self) -> Self {
        let mut b = [0u8; 8];
        put32(&mut b, 0, 0x0000_0001);
        self.ecap_raw(regs::ECAP_ID_PTM, 1, &b)
    }

    /// A DVSEC of the given vendor and id.
    pub fn dvsec(self, vendor_id: u16, section_id: u16) -> Self {
        let mut b = [0u8; 8];
        put32(&mut b, 0, u32::from(vendor_id) | 12 << 20);
        put16(&mut b, 4, section_id);
        self.ecap_raw(regs::ECAP_ID_DVSEC, 1, &b)
    }

    /// A vendor-specific extended capability.
    pub fn vsec(self, section_id: u16) -> Self {
        let mut b = [0u8; 12];
        put32(&mut b, 0, u32::from(section_id) | 1 << 16 | 16 << 20);
        self.ecap_raw(regs::ECAP_ID_VNDR, 1, &b)
    }

    /// Data object exchange mailbox.
    pub fn doe(self) -> Self {
        self.ecap_raw(regs::ECAP_ID_DOE, 2, &[0u8; 0x14])
    }

    /// Physical layer 16 GT/s for `lanes` lanes.
    pub fn physical_layer_16gt(self, lanes: u8) -> Self {
        let b = vec![0u8; 0x1c + usize::from(lanes)];
        self.ecap_raw(regs::ECAP_ID_PL_16GT, 1, &b)
    }

    /// Physical layer 32 GT/s.
    pub fn physical_layer_32gt(self) -> Self {
        self.ecap_raw(regs::ECAP_ID_PL_32GT, 1, &[0u8; 0x1c])
    }

    /// Finishes the config space.
    pub fn build(self) -> BuiltConfig {
        BuiltConfig {
            bytes: self.bytes,
            sizes: self.sizes,
            vf_bar_sizes: self.vf_bar_sizes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;

    #[test]
    #[should_panic(expected = "power of two")]
    fn bar32_non_power_of_two_size_panics() {
        let _ =
            ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802).bar32(0, 0xf000_0000, 0x3000, false);
    }

    #[test]
    #[should_panic(expected = "aligned")]
    fn bar64_unaligned_address_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802).bar64(0, 0x1000, 0x4000, false);
    }

    #[test]
    #[should_panic(expected = "no room")]
    fn bar64_in_last_slot_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802).bar64(5, 0, 0x4000, false);
    }

    #[test]
    #[should_panic(expected = "does not fit below 0x100")]
    fn cap_raw_overflowing_standard_space_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802).cap_raw(0x09, &[0u8; 200]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn ecap_raw_overflowing_extended_space_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802).ecap_raw(0x0b, 1, &[0u8; 4000]);
    }

    #[test]
    #[should_panic(expected = "table size")]
    fn msix_zero_table_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802).msix(0, 0, 0, 0);
    }

    #[test]
    #[should_panic(expected = "NumVFs")]
    fn sriov_more_vfs_than_total_panics() {
        let o = SriovOptions {
            total_vfs: 2,
            num_vfs: 3,
            first_vf_offset: 1,
            vf_stride: 1,
            vf_device_id: 1,
            vf_bars: vec![],
        };
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x020000).sriov(&o);
    }

    #[test]
    #[should_panic(expected = "resizable BAR entries")]
    fn resizable_bar_without_entries_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x030000).resizable_bar(&[]);
    }

    #[test]
    #[should_panic(expected = "invalid")]
    fn rom_too_small_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x030000).rom(0, 0x400, false);
    }

    #[test]
    #[should_panic(expected = "cover its header")]
    fn vendor_specific_too_short_panics() {
        let _ = ConfigBuilder::endpoint(0x1234, 0x5678, 0x030000).vendor_specific(2);
    }

    #[test]
    fn capabilities_are_linked_in_order() {
        let built = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802)
            .pm(false)
            .msi(0)
            .build();
        let facts = decode(&built.bytes).expect("valid");
        let offsets: Vec<(u8, u16)> = facts
            .capabilities
            .iter()
            .map(|c| (c.id, c.offset))
            .collect();
        assert_eq!(offsets, vec![(0x01, 0x40), (0x05, 0x48)]);
    }

    #[test]
    fn extended_capabilities_are_linked_in_order() {
        let built = ConfigBuilder::endpoint(0x1234, 0x5678, 0x010802)
            .pcie(PcieOptions::endpoint(LinkSpeed::Gt8, 4))
            .aer()
            .serial_number(7)
            .build();
        let facts = decode(&built.bytes).expect("valid");
        let offsets: Vec<(u16, u16)> = facts
            .extended_capabilities
            .iter()
            .map(|c| (c.id, c.offset))
            .collect();
        assert_eq!(offsets, vec![(0x0001, 0x100), (0x0003, 0x148)]);
    }
}
