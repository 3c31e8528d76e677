//! PCI Express extended capabilities, a linked list from offset 0x100.
//!
//! ```text
//!  extended capability header
//!  31            20 19   16 15                0
//! +----------------+-------+-------------------+
//! | next offset    | vers  | capability id     |   next: bits 1:0 reserved, 0 ends the list
//! +----------------+-------+-------------------+
//! ```

use serde::Serialize;

use crate::bar::{Bar, decode_bar_array};
use crate::config::{CONVENTIONAL_SIZE, ConfigSpace, EXTENDED_SIZE};
use crate::error::DecodeWarning;
use crate::regs;

/// Every header is a dword; the list cannot hold more entries than there are dwords above 0x100.
pub const MAX_EXTENDED_CAPABILITIES: usize = (EXTENDED_SIZE - CONVENTIONAL_SIZE) / 4;

/// One extended capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtCapability {
    /// Capability id.
    pub id: u16,
    /// Capability version.
    pub version: u8,
    /// Offset in config space.
    pub offset: u16,
    /// Human name.
    pub name: &'static str,
    /// Decoded registers (flattened into the entry in JSON, with a `kind` tag).
    #[serde(flatten)]
    pub detail: ExtCapabilityDetail,
}

/// Decoded registers of an extended capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExtCapabilityDetail {
    /// Advanced error reporting.
    Aer(Aer),
    /// Virtual channel.
    VirtualChannel {
        /// Extended VC count.
        extended_vc_count: u8,
    },
    /// Device serial number.
    SerialNumber {
        /// The 64-bit serial.
        serial: u64,
    },
    /// Access control services.
    Acs(Acs),
    /// Alternative routing-id interpretation.
    Ari(Ari),
    /// Address translation services.
    Ats(Ats),
    /// Single root I/O virtualisation.
    SrIov(SrIov),
    /// Resizable BAR.
    ResizableBar(ResizableBar),
    /// Downstream port containment.
    Dpc(Dpc),
    /// Latency tolerance reporting.
    Ltr(Ltr),
    /// L1 PM substates.
    L1Substates(L1Substates),
    /// Secondary PCI Express.
    SecondaryPcie {
        /// Lane error status bits.
        lane_error_status: u32,
    },
    /// Process address space id.
    Pasid(Pasid),
    /// Page request interface.
    Pri(Pri),
    /// Precision time measurement.
    Ptm(Ptm),
    /// Designated vendor-specific.
    Dvsec(VendorSection),
    /// Vendor-specific.
    VendorSpecific(VendorSection),
    /// Data object exchange.
    Doe {
        /// DOE interrupt supported.
        interrupt_support: bool,
    },
    /// Physical layer 16 or 32 GT/s: status registers only.
    PhysicalLayer {
        /// Capability register.
        capabilities: u32,
        /// Status register.
        status: u32,
    },
    /// Registers beyond the bytes supplied.
    Truncated,
    /// Known or unknown capability pcipool does not decode further.
    Other,
}

/// AER registers that matter for a pool: outstanding errors and ECRC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aer {
    /// Uncorrectable error status.
    pub uncorrectable_status: u32,
    /// Uncorrectable error mask.
    pub uncorrectable_mask: u32,
    /// Correctable error status.
    pub correctable_status: u32,
    /// ECRC generation capable.
    pub ecrc_generation_capable: bool,
    /// ECRC check capable.
    pub ecrc_check_capable: bool,
}

/// The seven ACS controls; the same layout serves capability and control registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AcsBits {
    /// Source validation.
    pub source_validation: bool,
    /// Translation blocking.
    pub translation_blocking: bool,
    /// P2P request redirect: peer-to-peer requests go up to the root complex first.
    pub request_redirect: bool,
    /// P2P completion redirect.
    pub completion_redirect: bool,
    /// Upstream forwarding.
    pub upstream_forwarding: bool,
    /// P2P egress control.
    pub egress_control: bool,
    /// Direct translated P2P.
    pub direct_translated: bool,
}

impl AcsBits {
    /// From the 16-bit register.
    pub fn from_bits(v: u16) -> Self {
        Self {
            source_validation: v & 0x01 != 0,
            translation_blocking: v & 0x02 != 0,
            request_redirect: v & 0x04 != 0,
            completion_redirect: v & 0x08 != 0,
            upstream_forwarding: v & 0x10 != 0,
            egress_control: v & 0x20 != 0,
            direct_translated: v & 0x40 != 0,
        }
    }

    /// Back to the register layout.
    pub fn bits(self) -> u16 {
        u16::from(self.source_validation)
            | u16::from(self.translation_blocking) << 1
            | u16::from(self.request_redirect) << 2
            | u16::from(self.completion_redirect) << 3
            | u16::from(self.upstream_forwarding) << 4
            | u16::from(self.egress_control) << 5
            | u16::from(self.direct_translated) << 6
    }
}

/// ACS capability and control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acs {
    /// What the port can do.
    pub capability: AcsBits,
    /// What is switched on.
    pub control: AcsBits,
}

/// ARI capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ari {
    /// Next function number in the ARI chain.
    pub next_function: u8,
    /// MFVC function groups capable.
    pub mfvc_groups: bool,
    /// ACS function groups capable.
    pub acs_groups: bool,
    /// Function group assigned.
    pub function_group: u8,
}

/// ATS capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ats {
    /// Invalidate queue depth (0 encodes 32).
    pub invalidate_queue_depth: u8,
    /// Page aligned request.
    pub page_aligned_request: bool,
    /// ATS enabled: the device may cache translations, which IOMMU isolation must account for.
    pub enabled: bool,
    /// Smallest translation unit.
    pub smallest_translation_unit: u8,
}

/// SR-IOV capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrIov {
    /// VF migration capable.
    pub vf_migration_capable: bool,
    /// VFs enabled.
    pub vf_enabled: bool,
    /// VF memory space enabled.
    pub vf_memory_enabled: bool,
    /// ARI capable hierarchy.
    pub ari_hierarchy: bool,
    /// InitialVFs.
    pub initial_vfs: u16,
    /// TotalVFs: the most VFs this PF can expose.
    pub total_vfs: u16,
    /// NumVFs currently set.
    pub num_vfs: u16,
    /// Function dependency link.
    pub function_dependency_link: u8,
    /// Routing-id offset of the first VF from the PF.
    pub first_vf_offset: u16,
    /// Routing-id stride between VFs.
    pub vf_stride: u16,
    /// Device id every VF reports.
    pub vf_device_id: u16,
    /// Supported page sizes bitmap (bit n = 4 KiB << n).
    pub supported_page_sizes: u32,
    /// System page size in use.
    pub system_page_size: u32,
    /// VF BARs (per-VF sizes are not in config space).
    pub vf_bars: Vec<Bar>,
}

/// One resizable BAR entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResizableBarEntry {
    /// BAR index the entry controls.
    pub bar: u8,
    /// Current size in bytes.
    pub current_size: u64,
    /// Every size the BAR supports, smallest first, in bytes.
    pub supported_sizes: Vec<u64>,
}

/// Resizable BAR capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResizableBar {
    /// Entries, one per resizable BAR.
    pub entries: Vec<ResizableBarEntry>,
}

/// DPC capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dpc {
    /// Root port extensions present.
    pub root_port_extensions: bool,
    /// Software triggering supported.
    pub software_trigger: bool,
    /// Trigger enable field (0 = disabled).
    pub trigger_enable: u8,
}

/// LTR capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ltr {
    /// Max snoop latency in ns.
    pub max_snoop_latency_ns: u64,
    /// Max no-snoop latency in ns.
    pub max_no_snoop_latency_ns: u64,
}

/// L1 PM substates capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L1Substates {
    /// PCI-PM L1.2.
    pub pci_pm_l1_2: bool,
    /// PCI-PM L1.1.
    pub pci_pm_l1_1: bool,
    /// ASPM L1.2.
    pub aspm_l1_2: bool,
    /// ASPM L1.1.
    pub aspm_l1_1: bool,
}

/// PASID capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pasid {
    /// Max PASID width in bits.
    pub max_width: u8,
    /// Execute permission supported.
    pub execute: bool,
    /// Privileged mode supported.
    pub privileged: bool,
    /// Enabled.
    pub enabled: bool,
}

/// PRI capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pri {
    /// Enabled.
    pub enabled: bool,
    /// Outstanding page request capacity.
    pub capacity: u32,
    /// Outstanding page request allocation.
    pub allocation: u32,
}

/// PTM capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ptm {
    /// Requester capable.
    pub requester: bool,
    /// Responder capable.
    pub responder: bool,
    /// Root capable.
    pub root: bool,
    /// Local clock granularity in ns (0 = not implemented).
    pub granularity_ns: u8,
    /// Enabled.
    pub enabled: bool,
}

/// Header of a (designated) vendor-specific extended capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VendorSection {
    /// DVSEC vendor id (for VSEC: 0).
    pub vendor_id: u16,
    /// Section id.
    pub section_id: u16,
    /// Section revision.
    pub revision: u8,
    /// Length in bytes.
    pub length: u16,
}

/// Name of an extended capability id, as lspci words it.
pub fn ext_capability_name(id: u16) -> &'static str {
    match id {
        regs::ECAP_ID_AER => "Advanced Error Reporting",
        regs::ECAP_ID_VC | regs::ECAP_ID_VC9 => "Virtual Channel",
        regs::ECAP_ID_DSN => "Device Serial Number",
        regs::ECAP_ID_PWR => "Power Budgeting",
        regs::ECAP_ID_RCLD => "Root Complex Link",
        regs::ECAP_ID_RCILC => "Root Complex Internal Link Control",
        regs::ECAP_ID_RCEC => "Root Complex Event Collector Endpoint Association",
        regs::ECAP_ID_MFVC => "Multi-Function Virtual Channel",
        regs::ECAP_ID_RCRB => "Root Complex Register Block",
        regs::ECAP_ID_VNDR => "Vendor Specific Information",
        regs::ECAP_ID_CAC => "Config Access Correlation",
        regs::ECAP_ID_ACS => "Access Control Services",
        regs::ECAP_ID_ARI => "Alternative Routing-ID Interpretation (ARI)",
        regs::ECAP_ID_ATS => "Address Translation Service (ATS)",
        regs::ECAP_ID_SRIOV => "Single Root I/O Virtualization (SR-IOV)",
        regs::ECAP_ID_MRIOV => "Multi-Root I/O Virtualization (MR-IOV)",
        regs::ECAP_ID_MCAST => "Multicast",
        regs::ECAP_ID_PRI => "Page Request Interface (PRI)",
        regs::ECAP_ID_REBAR => "Physical Resizable BAR",
        regs::ECAP_ID_DPA => "Dynamic Power Allocation",
        regs::ECAP_ID_TPH => "Transaction Processing Hints",
        regs::ECAP_ID_LTR => "Latency Tolerance Reporting",
        regs::ECAP_ID_SECPCI => "Secondary PCI Express",
        regs::ECAP_ID_PMUX => "Protocol Multiplexing",
        regs::ECAP_ID_PASID => "Process Address Space ID (PASID)",
        regs::ECAP_ID_LNR => "LN Requester",
        regs::ECAP_ID_DPC => "Downstream Port Containment",
        regs::ECAP_ID_L1SS => "L1 PM Substates",
        regs::ECAP_ID_PTM => "Precision Time Measurement",
        regs::ECAP_ID_MPCIE => "M-PCIe",
        regs::ECAP_ID_FRS => "FRS Queueing",
        regs::ECAP_ID_RTR => "Readiness Time Reporting",
        regs::ECAP_ID_DVSEC => "Designated Vendor-Specific",
        regs::ECAP_ID_VF_REBAR => "VF Resizable BAR",
        regs::ECAP_ID_DLF => "Data Link Feature",
        regs::ECAP_ID_PL_16GT => "Physical Layer 16.0 GT/s",
        regs::ECAP_ID_LMR => "Lane Margining at the Receiver",
        regs::ECAP_ID_HIER_ID => "Hierarchy ID",
        regs::ECAP_ID_NPEM => "Native PCIe Enclosure Management",
        regs::ECAP_ID_PL_32GT => "Physical Layer 32.0 GT/s",
        regs::ECAP_ID_AP => "Alternate Protocol",
        regs::ECAP_ID_SFI => "System Firmware Intermediary",
        regs::ECAP_ID_SF => "Shadow Functions",
        regs::ECAP_ID_DOE => "Data Object Exchange",
        regs::ECAP_ID_DEV3 => "Device 3",
        regs::ECAP_ID_IDE => "Integrity & Data Encryption",
        regs::ECAP_ID_PL_64GT => "Physical Layer 64.0 GT/s",
        _ => "Unknown",
    }
}

/// Walks the extended capability list from 0x100.
pub(crate) fn walk(cfg: &ConfigSpace<'_>, warnings: &mut Vec<DecodeWarning>) -> Vec<ExtCapability> {
    let mut caps = Vec::new();
    if cfg.len() <= CONVENTIONAL_SIZE {
        return caps;
    }
    let mut visited = vec![false; EXTENDED_SIZE / 4];
    let mut at = CONVENTIONAL_SIZE;
    while let Some(header) = cfg.u32(at) {
        // 0 = no extended capabilities; all ones = the function does not decode extended space.
        if header == 0 || header == u32::MAX {
            break;
        }
        let at16 = u16::try_from(at).unwrap_or(u16::MAX);
        if visited[at / 4] {
            warnings.push(DecodeWarning::ExtendedCapabilityLoop { at: at16 });
            break;
        }
        visited[at / 4] = true;
        if caps.len() >= MAX_EXTENDED_CAPABILITIES {
            warnings.push(DecodeWarning::TooManyCapabilities { count: caps.len() });
            break;
        }
        let id = u16::try_from(header & 0xffff).unwrap_or(0);
        let version = u8::try_from((header >> 16) & 0xf).unwrap_or(0);
        let detail = decode_detail(cfg, id, at);
        if detail == ExtCapabilityDetail::Truncated {
            warnings.push(DecodeWarning::CapabilityTruncated { id, at: at16 });
        }
        caps.push(ExtCapability {
            id,
            version,
            offset: at16,
            name: ext_capability_name(id),
            detail,
        });
        let next = usize::try_from(header >> 20).unwrap_or(0) & !3;
        if next == 0 {
            break;
        }
        if next < CONVENTIONAL_SIZE {
            warnings.push(DecodeWarning::ExtendedCapabilityPointerOutOfRange {
                from: at16,
                pointer: u16::try_from(next).unwrap_or(u16::MAX),
            });
            break;
        }
        at = next;
    }
    caps
}

fn bit(v: u32, n: u32) -> bool {
    v & (1 << n) != 0
}

fn field(v: u32, shift: u32, width: u32) -> u32 {
    (v >> shift) & ((1 << width) - 1)
}

fn field8(v: u32, shift: u32, width: u32) -> u8 {
    u8::try_from(field(v, shift, width)).unwrap_or(u8::MAX)
}

fn field16(v: u32, shift: u32, width: u32) -> u16 {
    u16::try_from(field(v, shift, width)).unwrap_or(u16::MAX)
}

fn decode_detail(cfg: &ConfigSpace<'_>, id: u16, at: usize) -> ExtCapabilityDetail {
    let d = |o: usize| cfg.u32(at + o);
    let w = |o: usize| cfg.u16(at + o).map(u32::from);
    let detail = match id {
        regs::ECAP_ID_AER => (|| {
            let cap_ctl = d(0x18)?;
            Some(ExtCapabilityDetail::Aer(Aer {
                uncorrectable_status: d(0x04)?,
                uncorrectable_mask: d(0x08)?,
                correctable_status: d(0x10)?,
                ecrc_generation_capable: bit(cap_ctl, 5),
                ecrc_check_capable: bit(cap_ctl, 7),
            }))
        })(),
        regs::ECAP_ID_VC | regs::ECAP_ID_VC9 => {
            d(0x04).map(|c| ExtCapabilityDetail::VirtualChannel {
                extended_vc_count: field8(c, 0, 3),
            })
        }
        regs::ECAP_ID_DSN => cfg
            .u64(at + 4)
            .map(|serial| ExtCapabilityDetail::SerialNumber { serial }),
        regs::ECAP_ID_ACS => (|| {
            let cap = cfg.u16(at + regs::ACS_CAP)?;
            let ctl = cfg.u16(at + regs::ACS_CTRL)?;
            Some(ExtCapabilityDetail::Acs(Acs {
                capability: AcsBits::from_bits(cap),
                control: AcsBits::from_bits(ctl),
            }))
        })(),
        regs::ECAP_ID_ARI => (|| {
            let cap = w(0x04)?;
            let ctl = w(0x06)?;
            Some(ExtCapabilityDetail::Ari(Ari {
                next_function: field8(cap, 8, 8),
                mfvc_groups: bit(cap, 0),
                acs_groups: bit(cap, 1),
                function_group: field8(ctl, 4, 3),
            }))
        })(),
        regs::ECAP_ID_ATS => (|| {
            let cap = w(0x04)?;
            let ctl = w(0x06)?;
            Some(ExtCapabilityDetail::Ats(Ats {
                invalidate_queue_depth: field8(cap, 0, 5),
                page_aligned_request: bit(cap, 5),
                enabled: bit(ctl, 15),
                smallest_translation_unit: field8(ctl, 0, 5),
            }))
        })(),
        regs::ECAP_ID_SRIOV => sriov(cfg, at).map(ExtCapabilityDetail::SrIov),
        regs::ECAP_ID_REBAR => Some(
            resizable_bar(cfg, at)
                .map(ExtCapabilityDetail::ResizableBar)
                .unwrap_or(ExtCapabilityDetail::Truncated),
        ),
        regs::ECAP_ID_DPC => (|| {
            let cap = w(0x04)?;
            let ctl = w(0x06)?;
            Some(ExtCapabilityDetail::Dpc(Dpc {
                root_port_extensions: bit(cap, 5),
                software_trigger: bit(cap, 7),
                trigger_enable: field8(ctl, 0, 2),
            }))
        })(),
        regs::ECAP_ID_LTR => (|| {
            let snoop = w(0x04)?;
            let no_snoop = w(0x06)?;
            let ns = |v: u32| u64::from(field(v, 0, 10)) << (5 * field(v, 10, 3).min(5));
            Some(ExtCapabilityDetail::Ltr(Ltr {
                max_snoop_latency_ns: ns(snoop),
                max_no_snoop_latency_ns: ns(no_snoop),
            }))
        })(),
        regs::ECAP_ID_L1SS => d(0x04).map(|c| {
            ExtCapabilityDetail::L1Substates(L1Substates {
                pci_pm_l1_2: bit(c, 0),
                pci_pm_l1_1: bit(c, 1),
                aspm_l1_2: bit(c, 2),
                aspm_l1_1: bit(c, 3),
            })
        }),
        regs::ECAP_ID_SECPCI => d(0x08)
            .map(|lane_error_status| ExtCapabilityDetail::SecondaryPcie { lane_error_status }),
        regs::ECAP_ID_PASID => (|| {
            let cap = w(0x04)?;
            let ctl = w(0x06)?;
            Some(ExtCapabilityDetail::Pasid(Pasid {
                max_width: field8(cap, 8, 5),
                execute: bit(cap, 1),
                privileged: bit(cap, 2),
                enabled: bit(ctl, 0),
            }))
        })(),
        regs::ECAP_ID_PRI => (|| {
            Some(ExtCapabilityDetail::Pri(Pri {
                enabled: bit(w(0x04)?, 0),
                capacity: d(0x08)?,
                allocation: d(0x0c)?,
            }))
        })(),
        regs::ECAP_ID_PTM => (|| {
            let cap = d(0x04)?;
            let ctl = d(0x08)?;
            Some(ExtCapabilityDetail::Ptm(Ptm {
                requester: bit(cap, 0),
                responder: bit(cap, 1),
                root: bit(cap, 2),
                granularity_ns: field8(cap, 8, 8),
                enabled: bit(ctl, 0),
            }))
        })(),
        regs::ECAP_ID_DVSEC => (|| {
            let h1 = d(0x04)?;
            let h2 = w(0x08)?;
            Some(ExtCapabilityDetail::Dvsec(VendorSection {
                vendor_id: field16(h1, 0, 16),
                revision: field8(h1, 16, 4),
                length: field16(h1, 20, 12),
                section_id: field16(h2, 0, 16),
            }))
        })(),
        regs::ECAP_ID_VNDR => d(0x04).map(|h| {
            ExtCapabilityDetail::VendorSpecific(VendorSection {
                vendor_id: 0,
                section_id: field16(h, 0, 16),
                revision: field8(h, 16, 4),
                length: field16(h, 20, 12),
            })
        }),
        regs::ECAP_ID_DOE => d(0x04).map(|c| ExtCapabilityDetail::Doe {
            interrupt_support: bit(c, 0),
        }),
        regs::ECAP_ID_PL_16GT => (|| {
            Some(ExtCapabilityDetail::PhysicalLayer {
                capabilities: d(0x04)?,
                status: d(0x0c)?,
            })
        })(),
        regs::ECAP_ID_PL_32GT => (|| {
            Some(ExtCapabilityDetail::PhysicalLayer {
                capabilities: d(0x04)?,
                status: d(0x0c)?,
            })
        })(),
        _ => Some(ExtCapabilityDetail::Other),
    };
    detail.unwrap_or(ExtCapabilityDetail::Truncated)
}

fn sriov(cfg: &ConfigSpace<'_>, at: usize) -> Option<SrIov> {
    if !cfg.has(at, regs::SRIOV_LEN) {
        return None;
    }
    let w = |o: usize| cfg.u16(at + o).unwrap_or(0);
    let cap = cfg.u32(at + regs::SRIOV_CAP).unwrap_or(0);
    let ctrl = w(regs::SRIOV_CTRL);
    // VF BAR sizes are not in config space; the kernel reports them in sysfs.
    let mut ignored = Vec::new();
    let vf_bars = decode_bar_array(cfg, at + regs::SRIOV_BAR, 6, &[None; 6], &mut ignored);
    Some(SrIov {
        vf_migration_capable: bit(cap, 0),
        vf_enabled: ctrl & regs::SRIOV_CTRL_VFE != 0,
        vf_memory_enabled: ctrl & regs::SRIOV_CTRL_MSE != 0,
        ari_hierarchy: ctrl & regs::SRIOV_CTRL_ARI != 0,
        initial_vfs: w(regs::SRIOV_INITIAL_VF),
        total_vfs: w(regs::SRIOV_TOTAL_VF),
        num_vfs: w(regs::SRIOV_NUM_VF),
        function_dependency_link: cfg.u8(at + regs::SRIOV_FUNC_LINK).unwrap_or(0),
        first_vf_offset: w(regs::SRIOV_VF_OFFSET),
        vf_stride: w(regs::SRIOV_VF_STRIDE),
        vf_device_id: w(regs::SRIOV_VF_DID),
        supported_page_sizes: cfg.u32(at + regs::SRIOV_SUP_PGSIZE).unwrap_or(0),
        system_page_size: cfg.u32(at + regs::SRIOV_SYS_PGSIZE).unwrap_or(0),
        vf_bars,
    })
}

/// Sizes a resizable BAR entry advertises: capability bits 31:4 are 1 MiB..128 TiB, control bits 31:16
/// extend to 256 TiB..8 EiB (PCIe 6.0).
fn rebar_sizes(cap: u32, ctrl: u32) -> Vec<u64> {
    let low = (4..32)
        .filter(|b| cap & (1 << b) != 0)
        .map(|b| 1u64 << (b - 4 + 20));
    let high = (16..32)
        .filter(|b| ctrl & (1 << b) != 0)
        .map(|b| 1u64 << (b - 16 + 48));
    low.chain(high).collect()
}

fn resizable_bar(cfg: &ConfigSpace<'_>, at: usize) -> Option<ResizableBar> {
    let first_ctrl = cfg.u32(at + regs::REBAR_CTRL)?;
    let count = usize::try_from((first_ctrl & regs::REBAR_CTRL_NBAR_MASK) >> 5).unwrap_or(0);
    // A function has at most six BARs; a count of 0 or above 6 is malformed, show the first entry only.
    let count = if (1..=6).contains(&count) { count } else { 1 };
    let mut entries = Vec::new();
    for i in 0..count {
        let Some(cap) = cfg.u32(at + regs::REBAR_CAP + 8 * i) else {
            break;
        };
        let Some(ctrl) = cfg.u32(at + regs::REBAR_CTRL + 8 * i) else {
            break;
        };
        let size_field = (ctrl & regs::REBAR_CTRL_BAR_SIZE) >> 8;
        entries.push(ResizableBarEntry {
            bar: u8::try_from(ctrl & regs::REBAR_CTRL_BAR_IDX).unwrap_or(0),
            current_size: 1u64 << (20 + size_field.min(43)),
            supported_sizes: rebar_sizes(cap, ctrl),
        });
    }
    Some(ResizableBar { entries })
}

/// Number of resizable-BAR entries declared, for the malformed-count warning.
pub(crate) fn rebar_declared_count(cfg: &ConfigSpace<'_>, at: u16) -> Option<u8> {
    let ctrl = cfg.u32(usize::from(at) + regs::REBAR_CTRL)?;
    u8::try_from((ctrl & regs::REBAR_CTRL_NBAR_MASK) >> 5).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_config(entries: &[(usize, u32)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 4096];
        for (at, value) in entries {
            bytes[*at..*at + 4].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn walk_loop_back_to_start_warns() {
        // AER at 0x100 whose next pointer is 0x100 again.
        let bytes = ext_config(&[(0x100, 0x1001_0001)]);
        let cfg = ConfigSpace::new(&bytes).expect("4096 bytes");
        let mut warnings = Vec::new();
        let caps = walk(&cfg, &mut warnings);
        assert_eq!(
            (caps.len(), warnings),
            (1, vec![DecodeWarning::ExtendedCapabilityLoop { at: 0x100 }])
        );
    }

    #[test]
    fn walk_next_below_0x100_warns() {
        let bytes = ext_config(&[(0x100, 0x0401_0001)]);
        let cfg = ConfigSpace::new(&bytes).expect("4096 bytes");
        let mut warnings = Vec::new();
        walk(&cfg, &mut warnings);
        assert_eq!(
            warnings,
            vec![DecodeWarning::ExtendedCapabilityPointerOutOfRange {
                from: 0x100,
                pointer: 0x40
            }]
        );
    }

    #[test]
    fn walk_all_ones_header_is_empty_list() {
        let bytes = ext_config(&[(0x100, u32::MAX)]);
        let cfg = ConfigSpace::new(&bytes).expect("4096 bytes");
        assert_eq!(walk(&cfg, &mut Vec::new()), Vec::new());
    }

    #[test]
    fn rebar_sizes_cover_capability_and_control_bits() {
        // 256 MiB (bit 12) and 256 TiB (control bit 16).
        assert_eq!(rebar_sizes(1 << 12, 1 << 16), vec![256 << 20, 1 << 48]);
    }

    #[test]
    fn acs_bits_round_trip() {
        assert_eq!(AcsBits::from_bits(0x5f).bits(), 0x5f);
    }
}
