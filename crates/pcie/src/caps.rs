//! Standard (conventional) capabilities, found through the list at 0x34.
//!
//! ```text
//!  capability header
//!  15          8 7           0
//! +-------------+-------------+
//! | next ptr    | cap id      |   next ptr: bits 1:0 reserved, 0 ends the list
//! +-------------+-------------+
//! ```

use std::fmt;

use serde::{Serialize, Serializer};

use crate::config::{CONVENTIONAL_SIZE, ConfigSpace, HEADER_SIZE};
use crate::error::DecodeWarning;
use crate::regs;

/// Linux walks at most 48 standard capabilities (`PCI_FIND_CAP_TTL`); so do we.
pub const MAX_CAPABILITIES: usize = 48;

/// One standard capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// Capability id.
    pub id: u8,
    /// Offset in config space.
    pub offset: u16,
    /// Human name.
    pub name: &'static str,
    /// Decoded registers, for the capabilities pcipool reasons about (flattened into the entry in JSON,
    /// with a `kind` tag).
    #[serde(flatten)]
    pub detail: CapabilityDetail,
}

/// Decoded registers of a standard capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CapabilityDetail {
    /// Power management.
    PowerManagement(PowerManagement),
    /// Message signalled interrupts.
    Msi(Msi),
    /// MSI-X.
    MsiX(MsiX),
    /// PCI Express.
    PciExpress(PciExpress),
    /// Vendor specific: only its length is architected.
    VendorSpecific {
        /// Length byte.
        length: u8,
    },
    /// Subsystem ids of a bridge.
    SubsystemVendor {
        /// Subsystem vendor id.
        subsystem_vendor_id: u16,
        /// Subsystem id.
        subsystem_id: u16,
    },
    /// Enhanced allocation.
    EnhancedAllocation(EnhancedAllocation),
    /// Advanced features (FLR for conventional PCI).
    AdvancedFeatures(AdvancedFeatures),
    /// Registers beyond the bytes supplied.
    Truncated,
    /// Known or unknown capability pcipool does not decode further.
    Other,
}

/// Power management capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PowerManagement {
    /// PM spec version (PMC bits 2:0).
    pub version: u8,
    /// D1 supported.
    pub d1: bool,
    /// D2 supported.
    pub d2: bool,
    /// Current power state D0..D3hot.
    pub power_state: u8,
    /// No_Soft_Reset: a D3hot->D0 transition keeps state, so it cannot serve as a reset.
    pub no_soft_reset: bool,
}

/// MSI capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Msi {
    /// MSI enabled.
    pub enabled: bool,
    /// Vectors the function can request.
    pub vectors_capable: u8,
    /// Vectors enabled.
    pub vectors_enabled: u8,
    /// 64-bit message address capable.
    pub address_64bit: bool,
    /// Per-vector masking capable.
    pub per_vector_masking: bool,
}

/// MSI-X capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsiX {
    /// MSI-X enabled.
    pub enabled: bool,
    /// Function mask set.
    pub function_masked: bool,
    /// Number of table entries.
    pub table_size: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR.
    pub table_offset: u32,
    /// BAR holding the pending-bit array.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u32,
}

/// Advanced features capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdvancedFeatures {
    /// Transactions-pending bit supported.
    pub transactions_pending: bool,
    /// Function level reset supported.
    pub flr: bool,
}

/// Enhanced allocation capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnhancedAllocation {
    /// Entries as declared.
    pub declared_entries: u8,
    /// Entries decoded (fewer when the data runs out).
    pub entries: Vec<EaEntry>,
}

/// One enhanced allocation entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EaEntry {
    /// BAR equivalent indicator.
    pub bei: u8,
    /// Primary properties.
    pub primary_properties: u8,
    /// Entry enabled.
    pub enabled: bool,
    /// Base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// PCI Express port/device type (capability bits 7:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortType {
    /// PCI Express endpoint.
    Endpoint,
    /// Legacy PCI Express endpoint.
    LegacyEndpoint,
    /// Root port of a root complex.
    RootPort,
    /// Upstream port of a switch.
    UpstreamPort,
    /// Downstream port of a switch.
    DownstreamPort,
    /// PCI Express to PCI/PCI-X bridge.
    PcieToPciBridge,
    /// PCI/PCI-X to PCI Express bridge.
    PciToPcieBridge,
    /// Root complex integrated endpoint.
    RootComplexIntegratedEndpoint,
    /// Root complex event collector.
    RootComplexEventCollector,
    /// Reserved value, kept.
    Unknown(u8),
}

impl PortType {
    /// From the 4-bit field.
    pub fn from_field(v: u8) -> Self {
        match v {
            0x0 => Self::Endpoint,
            0x1 => Self::LegacyEndpoint,
            0x4 => Self::RootPort,
            0x5 => Self::UpstreamPort,
            0x6 => Self::DownstreamPort,
            0x7 => Self::PcieToPciBridge,
            0x8 => Self::PciToPcieBridge,
            0x9 => Self::RootComplexIntegratedEndpoint,
            0xa => Self::RootComplexEventCollector,
            other => Self::Unknown(other),
        }
    }

    /// Whether the function is an endpoint of some kind (the things pcipool lends).
    pub fn is_endpoint(self) -> bool {
        matches!(
            self,
            Self::Endpoint | Self::LegacyEndpoint | Self::RootComplexIntegratedEndpoint
        )
    }

    /// Whether this port has a link to a device below it (can host a slot).
    pub fn is_downstream_facing(self) -> bool {
        matches!(self, Self::RootPort | Self::DownstreamPort)
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Endpoint => "endpoint",
            Self::LegacyEndpoint => "legacy_endpoint",
            Self::RootPort => "root_port",
            Self::UpstreamPort => "upstream_port",
            Self::DownstreamPort => "downstream_port",
            Self::PcieToPciBridge => "pcie_to_pci_bridge",
            Self::PciToPcieBridge => "pci_to_pcie_bridge",
            Self::RootComplexIntegratedEndpoint => "rc_integrated_endpoint",
            Self::RootComplexEventCollector => "rc_event_collector",
            Self::Unknown(v) => return write!(f, "unknown({v:#x})"),
        };
        f.write_str(s)
    }
}

impl Serialize for PortType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A link speed as encoded in LnkCap/LnkSta (1 = 2.5 GT/s ... 6 = 64 GT/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkSpeed {
    /// 2.5 GT/s (Gen1).
    Gt2_5,
    /// 5 GT/s (Gen2).
    Gt5,
    /// 8 GT/s (Gen3).
    Gt8,
    /// 16 GT/s (Gen4).
    Gt16,
    /// 32 GT/s (Gen5).
    Gt32,
    /// 64 GT/s (Gen6).
    Gt64,
    /// Reserved encoding, kept.
    Unknown(u8),
}

impl LinkSpeed {
    /// From the 4-bit speed field.
    pub fn from_field(v: u8) -> Self {
        match v {
            1 => Self::Gt2_5,
            2 => Self::Gt5,
            3 => Self::Gt8,
            4 => Self::Gt16,
            5 => Self::Gt32,
            6 => Self::Gt64,
            other => Self::Unknown(other),
        }
    }

    /// The field encoding.
    pub fn field(self) -> u8 {
        match self {
            Self::Gt2_5 => 1,
            Self::Gt5 => 2,
            Self::Gt8 => 3,
            Self::Gt16 => 4,
            Self::Gt32 => 5,
            Self::Gt64 => 6,
            Self::Unknown(v) => v,
        }
    }

    /// The transfer rate in tenths of GT/s (80 for 8 GT/s), 0 for a reserved encoding.
    pub fn gts_x10(self) -> u16 {
        match self {
            Self::Gt2_5 => 25,
            Self::Gt5 => 50,
            Self::Gt8 => 80,
            Self::Gt16 => 160,
            Self::Gt32 => 320,
            Self::Gt64 => 640,
            Self::Unknown(_) => 0,
        }
    }

    /// Usable bandwidth per lane per direction in MB/s after line encoding
    /// (8b/10b for Gen1-2, 128b/130b for Gen3-5, FLIT for Gen6, rounded).
    pub fn lane_mb_per_s(self) -> u32 {
        match self {
            Self::Gt2_5 => 250,
            Self::Gt5 => 500,
            Self::Gt8 => 985,
            Self::Gt16 => 1969,
            Self::Gt32 => 3938,
            Self::Gt64 => 7563,
            Self::Unknown(_) => 0,
        }
    }
}

impl fmt::Display for LinkSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gt2_5 => f.write_str("2.5GT/s"),
            Self::Gt5 => f.write_str("5GT/s"),
            Self::Gt8 => f.write_str("8GT/s"),
            Self::Gt16 => f.write_str("16GT/s"),
            Self::Gt32 => f.write_str("32GT/s"),
            Self::Gt64 => f.write_str("64GT/s"),
            Self::Unknown(v) => write!(f, "unknown({v})"),
        }
    }
}

impl Serialize for LinkSpeed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Link capability and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkFacts {
    /// Port number from LnkCap.
    pub port_number: u8,
    /// Maximum speed.
    pub max_speed: LinkSpeed,
    /// Maximum width (lanes).
    pub max_width: u8,
    /// Negotiated speed.
    pub speed: LinkSpeed,
    /// Negotiated width (lanes).
    pub width: u8,
    /// Data link layer active reporting capable (needed for surprise-removal detection).
    pub dll_active_reporting: bool,
    /// Data link layer link active (valid when reporting capable).
    pub dll_active: bool,
    /// Surprise down error reporting capable.
    pub surprise_down_reporting: bool,
}

/// Slot capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotFacts {
    /// Physical slot number.
    pub physical_slot: u16,
    /// Hot-plug capable.
    pub hot_plug_capable: bool,
    /// Hot-plug surprise: the device may be removed without notice.
    pub hot_plug_surprise: bool,
    /// Presence detect state.
    pub presence_detected: bool,
}

/// PCI Express capability: the facts that matter for lending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciExpress {
    /// Capability version (1 or 2).
    pub version: u8,
    /// Device/port type.
    pub port_type: PortType,
    /// Slot implemented (downstream ports).
    pub slot_implemented: bool,
    /// Interrupt message number.
    pub interrupt_message: u8,
    /// Max payload supported, bytes.
    pub max_payload_supported: u16,
    /// Max payload set, bytes.
    pub max_payload: u16,
    /// Max read request set, bytes.
    pub max_read_request: u16,
    /// Function level reset capable (DevCap bit 28).
    pub flr_capable: bool,
    /// Extended (8-bit) tags supported.
    pub extended_tag_supported: bool,
    /// Extended tags enabled.
    pub extended_tag_enabled: bool,
    /// Relaxed ordering enabled.
    pub relaxed_ordering_enabled: bool,
    /// No-snoop enabled.
    pub no_snoop_enabled: bool,
    /// Link registers.
    pub link: LinkFacts,
    /// Slot registers, when a slot is implemented.
    pub slot: Option<SlotFacts>,
    /// ARI forwarding supported (v2 downstream ports).
    pub ari_forwarding_supported: bool,
    /// ARI forwarding enabled.
    pub ari_forwarding_enabled: bool,
    /// Speeds listed in LnkCap2 (empty for v1 or when the vector is zero).
    pub supported_speeds: Vec<LinkSpeed>,
}

/// Name of a standard capability id, as lspci words it.
pub fn capability_name(id: u8) -> &'static str {
    match id {
        regs::CAP_ID_PM => "Power Management",
        regs::CAP_ID_AGP => "AGP",
        regs::CAP_ID_VPD => "Vital Product Data",
        regs::CAP_ID_SLOTID => "Slot ID",
        regs::CAP_ID_MSI => "MSI",
        regs::CAP_ID_CHSWP => "CompactPCI hot-swap",
        regs::CAP_ID_PCIX => "PCI-X",
        regs::CAP_ID_HT => "HyperTransport",
        regs::CAP_ID_VNDR => "Vendor Specific Information",
        regs::CAP_ID_DBG => "Debug port",
        regs::CAP_ID_CCRC => "CompactPCI central resource control",
        regs::CAP_ID_SHPC => "Hot-plug capable",
        regs::CAP_ID_SSVID => "Subsystem",
        regs::CAP_ID_AGP3 => "AGP3",
        regs::CAP_ID_SECDEV => "Secure device",
        regs::CAP_ID_EXP => "Express",
        regs::CAP_ID_MSIX => "MSI-X",
        regs::CAP_ID_SATA => "SATA HBA",
        regs::CAP_ID_AF => "PCI Advanced Features",
        regs::CAP_ID_EA => "Enhanced Allocation (EA)",
        regs::CAP_ID_FPB => "Flattening Portal Bridge",
        _ => "Unknown",
    }
}

/// Walks the capability list. `pointer_offset` is 0x34 (0x14 for CardBus).
pub(crate) fn walk(
    cfg: &ConfigSpace<'_>,
    pointer_offset: usize,
    warnings: &mut Vec<DecodeWarning>,
) -> Vec<Capability> {
    let mut caps = Vec::new();
    let mut visited = [false; CONVENTIONAL_SIZE / 4];
    let mut from = u16::try_from(pointer_offset).unwrap_or(u16::MAX);
    let mut next = usize::from(cfg.u8(pointer_offset).unwrap_or(0) & 0xfc);
    while next != 0 {
        let at = u16::try_from(next).unwrap_or(u16::MAX);
        if next < HEADER_SIZE || !cfg.has(next, 2) {
            // The list must live above the 64-byte header and inside the captured bytes.
            warnings.push(DecodeWarning::CapabilityPointerOutOfRange { from, pointer: at });
            break;
        }
        if visited[next / 4] {
            warnings.push(DecodeWarning::CapabilityLoop { at });
            break;
        }
        visited[next / 4] = true;
        if caps.len() >= MAX_CAPABILITIES {
            warnings.push(DecodeWarning::TooManyCapabilities { count: caps.len() });
            break;
        }
        let id = cfg.u8(next).unwrap_or(0xff);
        if id == 0xff {
            warnings.push(DecodeWarning::CapabilityChainBroken { at });
            break;
        }
        let detail = decode_detail(cfg, id, next);
        if detail == CapabilityDetail::Truncated {
            warnings.push(DecodeWarning::CapabilityTruncated {
                id: u16::from(id),
                at,
            });
        }
        caps.push(Capability {
            id,
            offset: at,
            name: capability_name(id),
            detail,
        });
        from = at;
        next = usize::from(cfg.u8(next + 1).unwrap_or(0) & 0xfc);
    }
    caps
}

fn decode_detail(cfg: &ConfigSpace<'_>, id: u8, at: usize) -> CapabilityDetail {
    let detail = match id {
        regs::CAP_ID_PM => power_management(cfg, at).map(CapabilityDetail::PowerManagement),
        regs::CAP_ID_MSI => msi(cfg, at).map(CapabilityDetail::Msi),
        regs::CAP_ID_MSIX => msix(cfg, at).map(CapabilityDetail::MsiX),
        regs::CAP_ID_EXP => pci_express(cfg, at).map(CapabilityDetail::PciExpress),
        regs::CAP_ID_VNDR => cfg
            .u8(at + 2)
            .map(|length| CapabilityDetail::VendorSpecific { length }),
        regs::CAP_ID_SSVID => cfg.u32(at + 4).map(|v| CapabilityDetail::SubsystemVendor {
            subsystem_vendor_id: low16(v),
            subsystem_id: high16(v),
        }),
        regs::CAP_ID_EA => enhanced_allocation(cfg, at).map(CapabilityDetail::EnhancedAllocation),
        regs::CAP_ID_AF => cfg.u8(at + regs::AF_CAP).map(|c| {
            CapabilityDetail::AdvancedFeatures(AdvancedFeatures {
                transactions_pending: c & regs::AF_CAP_TP != 0,
                flr: c & regs::AF_CAP_FLR != 0,
            })
        }),
        _ => Some(CapabilityDetail::Other),
    };
    detail.unwrap_or(CapabilityDetail::Truncated)
}

fn low16(v: u32) -> u16 {
    u16::try_from(v & 0xffff).unwrap_or(0)
}

fn high16(v: u32) -> u16 {
    u16::try_from(v >> 16).unwrap_or(0)
}

fn bits8(v: u32, mask: u32, shift: u32) -> u8 {
    u8::try_from((v & mask) >> shift).unwrap_or(u8::MAX)
}

fn power_management(cfg: &ConfigSpace<'_>, at: usize) -> Option<PowerManagement> {
    let pmc = cfg.u16(at + regs::PM_PMC)?;
    let csr = cfg.u16(at + regs::PM_CTRL)?;
    Some(PowerManagement {
        version: bits8(u32::from(pmc), u32::from(regs::PM_CAP_VER_MASK), 0),
        d1: pmc & regs::PM_CAP_D1 != 0,
        d2: pmc & regs::PM_CAP_D2 != 0,
        power_state: bits8(u32::from(csr), u32::from(regs::PM_CTRL_STATE_MASK), 0),
        no_soft_reset: csr & regs::PM_CTRL_NO_SOFT_RESET != 0,
    })
}

fn msi(cfg: &ConfigSpace<'_>, at: usize) -> Option<Msi> {
    let flags = u32::from(cfg.u16(at + regs::MSI_FLAGS)?);
    let address_64bit = flags & u32::from(regs::MSI_FLAGS_64BIT) != 0;
    let per_vector_masking = flags & u32::from(regs::MSI_FLAGS_MASKBIT) != 0;
    // Message data ends at +0x0a (32-bit) or +0x0e (64-bit); mask and pending add 8 bytes.
    let len = match (address_64bit, per_vector_masking) {
        (false, false) => 0x0a,
        (true, false) => 0x0e,
        (false, true) => 0x14,
        (true, true) => 0x18,
    };
    if !cfg.has(at, len) {
        return None;
    }
    let log2 = |v: u8| 1u8.checked_shl(u32::from(v.min(5))).unwrap_or(32);
    Some(Msi {
        enabled: flags & u32::from(regs::MSI_FLAGS_ENABLE) != 0,
        vectors_capable: log2(bits8(flags, u32::from(regs::MSI_FLAGS_QMASK), 1)),
        vectors_enabled: log2(bits8(flags, u32::from(regs::MSI_FLAGS_QSIZE), 4)),
        address_64bit,
        per_vector_masking,
    })
}

fn msix(cfg: &ConfigSpace<'_>, at: usize) -> Option<MsiX> {
    let flags = cfg.u16(at + regs::MSIX_FLAGS)?;
    let table = cfg.u32(at + regs::MSIX_TABLE)?;
    let pba = cfg.u32(at + regs::MSIX_PBA)?;
    Some(MsiX {
        enabled: flags & regs::MSIX_FLAGS_ENABLE != 0,
        function_masked: flags & regs::MSIX_FLAGS_MASKALL != 0,
        table_size: (flags & regs::MSIX_FLAGS_QSIZE) + 1,
        table_bar: bits8(table, regs::MSIX_BIR_MASK, 0),
        table_offset: table & !regs::MSIX_BIR_MASK,
        pba_bar: bits8(pba, regs::MSIX_BIR_MASK, 0),
        pba_offset: pba & !regs::MSIX_BIR_MASK,
    })
}

fn enhanced_allocation(cfg: &ConfigSpace<'_>, at: usize) -> Option<EnhancedAllocation> {
    let declared_entries = cfg.u8(at + 2)? & 0x3f;
    // Type 1 functions carry one extra dword (fixed secondary/subordinate bus numbers) before the entries;
    // the caller cannot tell us the header type cheaply, so take it from the header byte.
    let mut pos = at + 4;
    if cfg.u8(regs::HEADER_TYPE).map(|h| h & 0x7f) == Some(1) {
        pos += 4;
    }
    let mut entries = Vec::new();
    for _ in 0..declared_entries {
        let Some(dw0) = cfg.u32(pos) else { break };
        let entry_dwords = usize::try_from(dw0 & 0x7).unwrap_or(0);
        let Some(base_lo) = cfg.u32(pos + 4) else {
            break;
        };
        let Some(max_lo) = cfg.u32(pos + 8) else {
            break;
        };
        let mut base = u64::from(base_lo & 0xffff_fffc);
        let mut max = u64::from(max_lo & 0xffff_fffc) | 0x3;
        let mut extra = 12;
        if base_lo & 0x2 != 0 {
            base |= u64::from(cfg.u32(pos + extra).unwrap_or(0)) << 32;
            extra += 4;
        }
        if max_lo & 0x2 != 0 {
            max |= u64::from(cfg.u32(pos + extra).unwrap_or(0)) << 32;
        }
        entries.push(EaEntry {
            bei: bits8(dw0, 0xf0, 4),
            primary_properties: bits8(dw0, 0xff00, 8),
            enabled: dw0 & 0x8000_0000 != 0,
            base,
            size: max.saturating_add(1),
        });
        pos += 4 + 4 * entry_dwords;
    }
    Some(EnhancedAllocation {
        declared_entries,
        entries,
    })
}

fn payload_bytes(field: u32) -> u16 {
    // 128 << n; encodings above 5 are reserved, clamp so the shift stays in range.
    128u16 << field.min(5)
}

fn pci_express(cfg: &ConfigSpace<'_>, at: usize) -> Option<PciExpress> {
    let flags = cfg.u16(at + regs::EXP_FLAGS)?;
    let version = bits8(u32::from(flags), u32::from(regs::EXP_FLAGS_VERS), 0);
    let slot_implemented = flags & regs::EXP_FLAGS_SLOT != 0;
    let devcap = cfg.u32(at + regs::EXP_DEVCAP)?;
    let devctl = u32::from(cfg.u16(at + regs::EXP_DEVCTL)?);
    let lnkcap = cfg.u32(at + regs::EXP_LNKCAP)?;
    let lnksta = u32::from(cfg.u16(at + regs::EXP_LNKSTA)?);
    let slot = if slot_implemented {
        let sltcap = cfg.u32(at + regs::EXP_SLTCAP)?;
        let sltsta = cfg.u16(at + regs::EXP_SLTSTA)?;
        Some(SlotFacts {
            physical_slot: u16::try_from(sltcap >> 19).unwrap_or(u16::MAX),
            hot_plug_capable: sltcap & regs::EXP_SLTCAP_HPC != 0,
            hot_plug_surprise: sltcap & regs::EXP_SLTCAP_HPS != 0,
            presence_detected: sltsta & regs::EXP_SLTSTA_PDS != 0,
        })
    } else {
        None
    };
    let (devcap2, devctl2, lnkcap2) = if version >= 2 {
        (
            cfg.u32(at + regs::EXP_DEVCAP2).unwrap_or(0),
            cfg.u16(at + regs::EXP_DEVCTL2).unwrap_or(0),
            cfg.u32(at + regs::EXP_LNKCAP2).unwrap_or(0),
        )
    } else {
        (0, 0, 0)
    };
    let supported_speeds = (1u8..=7)
        .filter(|bit| lnkcap2 & (1u32 << bit) != 0)
        .map(LinkSpeed::from_field)
        .collect();
    Some(PciExpress {
        version,
        port_type: PortType::from_field(bits8(
            u32::from(flags),
            u32::from(regs::EXP_FLAGS_TYPE),
            4,
        )),
        slot_implemented,
        interrupt_message: bits8(u32::from(flags), u32::from(regs::EXP_FLAGS_IRQ), 9),
        max_payload_supported: payload_bytes(devcap & regs::EXP_DEVCAP_PAYLOAD),
        max_payload: payload_bytes((devctl & u32::from(regs::EXP_DEVCTL_PAYLOAD)) >> 5),
        max_read_request: payload_bytes((devctl & u32::from(regs::EXP_DEVCTL_READRQ)) >> 12),
        flr_capable: devcap & regs::EXP_DEVCAP_FLR != 0,
        extended_tag_supported: devcap & regs::EXP_DEVCAP_EXT_TAG != 0,
        extended_tag_enabled: devctl & u32::from(regs::EXP_DEVCTL_EXT_TAG) != 0,
        relaxed_ordering_enabled: devctl & u32::from(regs::EXP_DEVCTL_RELAX_EN) != 0,
        no_snoop_enabled: devctl & u32::from(regs::EXP_DEVCTL_NOSNOOP_EN) != 0,
        link: LinkFacts {
            port_number: bits8(lnkcap, regs::EXP_LNKCAP_PN, 24),
            max_speed: LinkSpeed::from_field(bits8(lnkcap, regs::EXP_LNKCAP_SLS, 0)),
            max_width: bits8(lnkcap, regs::EXP_LNKCAP_MLW, 4),
            speed: LinkSpeed::from_field(bits8(lnksta, u32::from(regs::EXP_LNKSTA_CLS), 0)),
            width: bits8(lnksta, u32::from(regs::EXP_LNKSTA_NLW), 4),
            dll_active_reporting: lnkcap & regs::EXP_LNKCAP_DLLLARC != 0,
            dll_active: lnksta & u32::from(regs::EXP_LNKSTA_DLLLA) != 0,
            surprise_down_reporting: lnkcap & regs::EXP_LNKCAP_SDERC != 0,
        },
        slot,
        ari_forwarding_supported: devcap2 & regs::EXP_DEVCAP2_ARI != 0,
        ari_forwarding_enabled: devctl2 & regs::EXP_DEVCTL2_ARI != 0,
        supported_speeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_cap_list(entries: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 256];
        bytes[0x06] = 0x10; // status: capability list
        bytes[0x34] = entries
            .first()
            .map_or(0, |e| u8::try_from(e.0).expect("small"));
        for (at, id, next) in entries {
            bytes[*at] = *id;
            bytes[*at + 1] = *next;
        }
        bytes
    }

    #[test]
    fn walk_self_loop_warns_and_stops() {
        let bytes = config_with_cap_list(&[(0x40, 0x09, 0x40)]);
        let cfg = ConfigSpace::new(&bytes).expect("256 bytes");
        let mut warnings = Vec::new();
        let caps = walk(&cfg, 0x34, &mut warnings);
        assert_eq!(
            (caps.len(), warnings),
            (1, vec![DecodeWarning::CapabilityLoop { at: 0x40 }])
        );
    }

    #[test]
    fn walk_pointer_into_header_warns() {
        let bytes = config_with_cap_list(&[(0x40, 0x09, 0x10)]);
        let cfg = ConfigSpace::new(&bytes).expect("256 bytes");
        let mut warnings = Vec::new();
        walk(&cfg, 0x34, &mut warnings);
        assert_eq!(
            warnings,
            vec![DecodeWarning::CapabilityPointerOutOfRange {
                from: 0x40,
                pointer: 0x10
            }]
        );
    }

    #[test]
    fn walk_id_ff_is_chain_broken() {
        let bytes = config_with_cap_list(&[(0x40, 0xff, 0x00)]);
        let cfg = ConfigSpace::new(&bytes).expect("256 bytes");
        let mut warnings = Vec::new();
        walk(&cfg, 0x34, &mut warnings);
        assert_eq!(
            warnings,
            vec![DecodeWarning::CapabilityChainBroken { at: 0x40 }]
        );
    }

    #[test]
    fn walk_pointer_past_64_byte_capture_warns() {
        let mut bytes = config_with_cap_list(&[(0x40, 0x01, 0x00)]);
        bytes.truncate(64);
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes");
        let mut warnings = Vec::new();
        walk(&cfg, 0x34, &mut warnings);
        assert_eq!(
            warnings,
            vec![DecodeWarning::CapabilityPointerOutOfRange {
                from: 0x34,
                pointer: 0x40
            }]
        );
    }

    #[test]
    fn link_speed_field_round_trips() {
        assert_eq!(LinkSpeed::from_field(4).field(), 4);
    }

    #[test]
    fn payload_reserved_encoding_is_clamped() {
        assert_eq!(payload_bytes(7), 4096);
    }
}
