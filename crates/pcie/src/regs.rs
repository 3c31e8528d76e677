//! Register offsets and bit masks, named as in the PCI Express Base Specification and Linux's
//! `include/uapi/linux/pci_regs.h`, so a reader can check each against either.

// ---- Standard header (all header types) ----
/// Vendor ID (16 bits).
pub const VENDOR_ID: usize = 0x00;
/// Device ID (16 bits).
pub const DEVICE_ID: usize = 0x02;
/// Command register (16 bits).
pub const COMMAND: usize = 0x04;
/// Status register (16 bits).
pub const STATUS: usize = 0x06;
/// Revision ID (8 bits).
pub const REVISION_ID: usize = 0x08;
/// Class code: programming interface byte; sub-class at 0x0a, base class at 0x0b.
pub const CLASS_PROG_IF: usize = 0x09;
/// Cache line size (8 bits).
pub const CACHE_LINE_SIZE: usize = 0x0c;
/// Latency timer (8 bits).
pub const LATENCY_TIMER: usize = 0x0d;
/// Header type: bit 7 multi-function, bits 6:0 layout.
pub const HEADER_TYPE: usize = 0x0e;
/// First BAR.
pub const BAR_0: usize = 0x10;
/// Capabilities pointer in type 0 and type 1 headers.
pub const CAPABILITY_LIST: usize = 0x34;
/// Capabilities pointer in a type 2 (CardBus) header.
pub const CARDBUS_CAPABILITY_LIST: usize = 0x14;
/// Interrupt line (8 bits).
pub const INTERRUPT_LINE: usize = 0x3c;
/// Interrupt pin (8 bits): 0 none, 1..=4 INTA..INTD.
pub const INTERRUPT_PIN: usize = 0x3d;

// ---- Type 0 ----
/// Subsystem vendor ID (type 0).
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Subsystem ID (type 0).
pub const SUBSYSTEM_ID: usize = 0x2e;
/// Expansion ROM BAR (type 0).
pub const ROM_ADDRESS: usize = 0x30;

// ---- Type 1 (PCI-to-PCI bridge) ----
/// Primary bus number.
pub const PRIMARY_BUS: usize = 0x18;
/// Secondary bus number.
pub const SECONDARY_BUS: usize = 0x19;
/// Subordinate bus number.
pub const SUBORDINATE_BUS: usize = 0x1a;
/// I/O base (upper nibble = address bits 15:12, low nibble = 16/32-bit decode).
pub const IO_BASE: usize = 0x1c;
/// I/O limit.
pub const IO_LIMIT: usize = 0x1d;
/// Secondary status.
pub const SECONDARY_STATUS: usize = 0x1e;
/// Memory base (bits 15:4 = address bits 31:20).
pub const MEMORY_BASE: usize = 0x20;
/// Memory limit.
pub const MEMORY_LIMIT: usize = 0x22;
/// Prefetchable memory base (low nibble 1 = 64-bit).
pub const PREF_MEMORY_BASE: usize = 0x24;
/// Prefetchable memory limit.
pub const PREF_MEMORY_LIMIT: usize = 0x26;
/// Prefetchable base upper 32 bits.
pub const PREF_BASE_UPPER32: usize = 0x28;
/// Prefetchable limit upper 32 bits.
pub const PREF_LIMIT_UPPER32: usize = 0x2c;
/// I/O base upper 16 bits.
pub const IO_BASE_UPPER16: usize = 0x30;
/// I/O limit upper 16 bits.
pub const IO_LIMIT_UPPER16: usize = 0x32;
/// Expansion ROM BAR (type 1).
pub const BRIDGE_ROM_ADDRESS: usize = 0x38;
/// Bridge control (16 bits).
pub const BRIDGE_CONTROL: usize = 0x3e;

// ---- Command / status bits ----
/// Command: I/O space enable.
pub const COMMAND_IO: u16 = 0x0001;
/// Command: memory space enable.
pub const COMMAND_MEMORY: u16 = 0x0002;
/// Command: bus master enable.
pub const COMMAND_MASTER: u16 = 0x0004;
/// Command: SERR# enable.
pub const COMMAND_SERR: u16 = 0x0100;
/// Command: INTx emulation disable.
pub const COMMAND_INTX_DISABLE: u16 = 0x0400;
/// Status: capabilities list present.
pub const STATUS_CAP_LIST: u16 = 0x0010;
/// Status: INTx asserted.
pub const STATUS_INTERRUPT: u16 = 0x0008;

// ---- BAR bits ----
/// BAR bit 0: 1 = I/O space.
pub const BAR_SPACE_IO: u32 = 0x0000_0001;
/// I/O BAR address mask.
pub const BAR_IO_MASK: u32 = 0xffff_fffc;
/// Memory BAR type field (bits 2:1).
pub const BAR_MEM_TYPE_MASK: u32 = 0x0000_0006;
/// Memory BAR type: 32-bit.
pub const BAR_MEM_TYPE_32: u32 = 0x0000_0000;
/// Memory BAR type: below 1 MiB (legacy).
pub const BAR_MEM_TYPE_1M: u32 = 0x0000_0002;
/// Memory BAR type: 64-bit.
pub const BAR_MEM_TYPE_64: u32 = 0x0000_0004;
/// Memory BAR prefetchable bit.
pub const BAR_MEM_PREFETCH: u32 = 0x0000_0008;
/// Memory BAR address mask.
pub const BAR_MEM_MASK: u32 = 0xffff_fff0;
/// ROM BAR enable bit.
pub const ROM_ENABLE: u32 = 0x0000_0001;
/// ROM BAR address mask.
pub const ROM_ADDRESS_MASK: u32 = 0xffff_f800;

// ---- Capability ids (PCI Code and ID Assignment Specification) ----
/// Power Management.
pub const CAP_ID_PM: u8 = 0x01;
/// AGP.
pub const CAP_ID_AGP: u8 = 0x02;
/// Vital Product Data.
pub const CAP_ID_VPD: u8 = 0x03;
/// Slot identification.
pub const CAP_ID_SLOTID: u8 = 0x04;
/// MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// CompactPCI hot swap.
pub const CAP_ID_CHSWP: u8 = 0x06;
/// PCI-X.
pub const CAP_ID_PCIX: u8 = 0x07;
/// HyperTransport.
pub const CAP_ID_HT: u8 = 0x08;
/// Vendor specific.
pub const CAP_ID_VNDR: u8 = 0x09;
/// Debug port.
pub const CAP_ID_DBG: u8 = 0x0a;
/// CompactPCI central resource control.
pub const CAP_ID_CCRC: u8 = 0x0b;
/// PCI standard hot-plug controller.
pub const CAP_ID_SHPC: u8 = 0x0c;
/// Bridge subsystem vendor/device id.
pub const CAP_ID_SSVID: u8 = 0x0d;
/// AGP 8x.
pub const CAP_ID_AGP3: u8 = 0x0e;
/// Secure device.
pub const CAP_ID_SECDEV: u8 = 0x0f;
/// PCI Express.
pub const CAP_ID_EXP: u8 = 0x10;
/// MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// SATA data/index configuration.
pub const CAP_ID_SATA: u8 = 0x12;
/// Advanced Features.
pub const CAP_ID_AF: u8 = 0x13;
/// Enhanced Allocation.
pub const CAP_ID_EA: u8 = 0x14;
/// Flattening Portal Bridge.
pub const CAP_ID_FPB: u8 = 0x15;

// ---- Extended capability ids ----
/// Advanced Error Reporting.
pub const ECAP_ID_AER: u16 = 0x0001;
/// Virtual Channel.
pub const ECAP_ID_VC: u16 = 0x0002;
/// Device Serial Number.
pub const ECAP_ID_DSN: u16 = 0x0003;
/// Power Budgeting.
pub const ECAP_ID_PWR: u16 = 0x0004;
/// Root Complex Link Declaration.
pub const ECAP_ID_RCLD: u16 = 0x0005;
/// Root Complex Internal Link Control.
pub const ECAP_ID_RCILC: u16 = 0x0006;
/// Root Complex Event Collector endpoint association.
pub const ECAP_ID_RCEC: u16 = 0x0007;
/// Multi-Function Virtual Channel.
pub const ECAP_ID_MFVC: u16 = 0x0008;
/// Virtual Channel (when MFVC present).
pub const ECAP_ID_VC9: u16 = 0x0009;
/// Root Complex Register Block.
pub const ECAP_ID_RCRB: u16 = 0x000a;
/// Vendor-specific extended capability.
pub const ECAP_ID_VNDR: u16 = 0x000b;
/// Config access correlation.
pub const ECAP_ID_CAC: u16 = 0x000c;
/// Access Control Services.
pub const ECAP_ID_ACS: u16 = 0x000d;
/// Alternative Routing-ID Interpretation.
pub const ECAP_ID_ARI: u16 = 0x000e;
/// Address Translation Services.
pub const ECAP_ID_ATS: u16 = 0x000f;
/// Single Root I/O Virtualization.
pub const ECAP_ID_SRIOV: u16 = 0x0010;
/// Multi-Root I/O Virtualization.
pub const ECAP_ID_MRIOV: u16 = 0x0011;
/// Multicast.
pub const ECAP_ID_MCAST: u16 = 0x0012;
/// Page Request Interface.
pub const ECAP_ID_PRI: u16 = 0x0013;
/// Resizable BAR.
pub const ECAP_ID_REBAR: u16 = 0x0015;
/// Dynamic Power Allocation.
pub const ECAP_ID_DPA: u16 = 0x0016;
/// TPH requester.
pub const ECAP_ID_TPH: u16 = 0x0017;
/// Latency Tolerance Reporting.
pub const ECAP_ID_LTR: u16 = 0x0018;
/// Secondary PCI Express.
pub const ECAP_ID_SECPCI: u16 = 0x0019;
/// Protocol multiplexing.
pub const ECAP_ID_PMUX: u16 = 0x001a;
/// Process Address Space ID.
pub const ECAP_ID_PASID: u16 = 0x001b;
/// LN requester.
pub const ECAP_ID_LNR: u16 = 0x001c;
/// Downstream Port Containment.
pub const ECAP_ID_DPC: u16 = 0x001d;
/// L1 PM Substates.
pub const ECAP_ID_L1SS: u16 = 0x001e;
/// Precision Time Measurement.
pub const ECAP_ID_PTM: u16 = 0x001f;
/// M-PCIe.
pub const ECAP_ID_MPCIE: u16 = 0x0020;
/// FRS queueing.
pub const ECAP_ID_FRS: u16 = 0x0021;
/// Readiness time reporting.
pub const ECAP_ID_RTR: u16 = 0x0022;
/// Designated vendor-specific.
pub const ECAP_ID_DVSEC: u16 = 0x0023;
/// VF resizable BAR.
pub const ECAP_ID_VF_REBAR: u16 = 0x0024;
/// Data Link Feature.
pub const ECAP_ID_DLF: u16 = 0x0025;
/// Physical Layer 16.0 GT/s.
pub const ECAP_ID_PL_16GT: u16 = 0x0026;
/// Lane margining at the receiver.
pub const ECAP_ID_LMR: u16 = 0x0027;
/// Hierarchy ID.
pub const ECAP_ID_HIER_ID: u16 = 0x0028;
/// Native PCIe enclosure management.
pub const ECAP_ID_NPEM: u16 = 0x0029;
/// Physical Layer 32.0 GT/s.
pub const ECAP_ID_PL_32GT: u16 = 0x002a;
/// Alternate protocol.
pub const ECAP_ID_AP: u16 = 0x002b;
/// System firmware intermediary.
pub const ECAP_ID_SFI: u16 = 0x002c;
/// Shadow functions.
pub const ECAP_ID_SF: u16 = 0x002d;
/// Data Object Exchange.
pub const ECAP_ID_DOE: u16 = 0x002e;
/// Device 3.
pub const ECAP_ID_DEV3: u16 = 0x002f;
/// Integrity and Data Encryption.
pub const ECAP_ID_IDE: u16 = 0x0030;
/// Physical Layer 64.0 GT/s.
pub const ECAP_ID_PL_64GT: u16 = 0x0031;

// ---- Power management capability ----
/// PMC register (16 bits) offset within the capability.
pub const PM_PMC: usize = 0x02;
/// PMCSR register (16 bits) offset within the capability.
pub const PM_CTRL: usize = 0x04;
/// PMC: version field (bits 2:0).
pub const PM_CAP_VER_MASK: u16 = 0x0007;
/// PMC: D1 supported.
pub const PM_CAP_D1: u16 = 0x0200;
/// PMC: D2 supported.
pub const PM_CAP_D2: u16 = 0x0400;
/// PMCSR: power state (bits 1:0).
pub const PM_CTRL_STATE_MASK: u16 = 0x0003;
/// PMCSR: No_Soft_Reset. When set, D3hot->D0 does not reset the function, so the kernel refuses PM reset.
pub const PM_CTRL_NO_SOFT_RESET: u16 = 0x0008;

// ---- MSI ----
/// MSI message control offset.
pub const MSI_FLAGS: usize = 0x02;
/// MSI enable.
pub const MSI_FLAGS_ENABLE: u16 = 0x0001;
/// MSI multiple message capable (bits 3:1, log2).
pub const MSI_FLAGS_QMASK: u16 = 0x000e;
/// MSI multiple message enable (bits 6:4, log2).
pub const MSI_FLAGS_QSIZE: u16 = 0x0070;
/// MSI 64-bit address capable.
pub const MSI_FLAGS_64BIT: u16 = 0x0080;
/// MSI per-vector masking capable.
pub const MSI_FLAGS_MASKBIT: u16 = 0x0100;

// ---- MSI-X ----
/// MSI-X message control offset.
pub const MSIX_FLAGS: usize = 0x02;
/// MSI-X table size minus one (bits 10:0).
pub const MSIX_FLAGS_QSIZE: u16 = 0x07ff;
/// MSI-X function mask.
pub const MSIX_FLAGS_MASKALL: u16 = 0x4000;
/// MSI-X enable.
pub const MSIX_FLAGS_ENABLE: u16 = 0x8000;
/// MSI-X table offset/BIR register.
pub const MSIX_TABLE: usize = 0x04;
/// MSI-X PBA offset/BIR register.
pub const MSIX_PBA: usize = 0x08;
/// BAR indicator (bits 2:0) of the table/PBA registers.
pub const MSIX_BIR_MASK: u32 = 0x0000_0007;

// ---- Advanced Features ----
/// AF capabilities byte offset.
pub const AF_CAP: usize = 0x03;
/// AF: transactions pending supported.
pub const AF_CAP_TP: u8 = 0x01;
/// AF: function level reset supported.
pub const AF_CAP_FLR: u8 = 0x02;

// ---- PCI Express capability ----
/// PCIe capabilities register (16 bits).
pub const EXP_FLAGS: usize = 0x02;
/// Capability version (bits 3:0).
pub const EXP_FLAGS_VERS: u16 = 0x000f;
/// Device/port type (bits 7:4).
pub const EXP_FLAGS_TYPE: u16 = 0x00f0;
/// Slot implemented.
pub const EXP_FLAGS_SLOT: u16 = 0x0100;
/// Interrupt message number (bits 13:9).
pub const EXP_FLAGS_IRQ: u16 = 0x3e00;
/// Device capabilities (32 bits).
pub const EXP_DEVCAP: usize = 0x04;
/// DevCap: max payload size supported (bits 2:0, 128 << n).
pub const EXP_DEVCAP_PAYLOAD: u32 = 0x0000_0007;
/// DevCap: extended tag field supported.
pub const EXP_DEVCAP_EXT_TAG: u32 = 0x0000_0020;
/// DevCap: function level reset capable.
pub const EXP_DEVCAP_FLR: u32 = 0x1000_0000;
/// Device control (16 bits).
pub const EXP_DEVCTL: usize = 0x08;
/// DevCtl: relaxed ordering enable.
pub const EXP_DEVCTL_RELAX_EN: u16 = 0x0010;
/// DevCtl: max payload size (bits 7:5).
pub const EXP_DEVCTL_PAYLOAD: u16 = 0x00e0;
/// DevCtl: extended tag field enable.
pub const EXP_DEVCTL_EXT_TAG: u16 = 0x0100;
/// DevCtl: no snoop enable.
pub const EXP_DEVCTL_NOSNOOP_EN: u16 = 0x0800;
/// DevCtl: max read request size (bits 14:12).
pub const EXP_DEVCTL_READRQ: u16 = 0x7000;
/// Device status (16 bits).
pub const EXP_DEVSTA: usize = 0x0a;
/// Link capabilities (32 bits).
pub const EXP_LNKCAP: usize = 0x0c;
/// LnkCap: max link speed (bits 3:0).
pub const EXP_LNKCAP_SLS: u32 = 0x0000_000f;
/// LnkCap: max link width (bits 9:4).
pub const EXP_LNKCAP_MLW: u32 = 0x0000_03f0;
/// LnkCap: surprise down error reporting capable.
pub const EXP_LNKCAP_SDERC: u32 = 0x0008_0000;
/// LnkCap: data link layer link active reporting capable.
pub const EXP_LNKCAP_DLLLARC: u32 = 0x0010_0000;
/// LnkCap: port number (bits 31:24).
pub const EXP_LNKCAP_PN: u32 = 0xff00_0000;
/// Link control (16 bits).
pub const EXP_LNKCTL: usize = 0x10;
/// Link status (16 bits).
pub const EXP_LNKSTA: usize = 0x12;
/// LnkSta: current link speed (bits 3:0).
pub const EXP_LNKSTA_CLS: u16 = 0x000f;
/// LnkSta: negotiated link width (bits 9:4).
pub const EXP_LNKSTA_NLW: u16 = 0x03f0;
/// LnkSta: data link layer link active.
pub const EXP_LNKSTA_DLLLA: u16 = 0x2000;
/// Slot capabilities (32 bits).
pub const EXP_SLTCAP: usize = 0x14;
/// SltCap: hot-plug surprise.
pub const EXP_SLTCAP_HPS: u32 = 0x0000_0020;
/// SltCap: hot-plug capable.
pub const EXP_SLTCAP_HPC: u32 = 0x0000_0040;
/// SltCap: physical slot number (bits 31:19).
pub const EXP_SLTCAP_PSN: u32 = 0xfff8_0000;
/// Slot status (16 bits).
pub const EXP_SLTSTA: usize = 0x1a;
/// SltSta: presence detect state.
pub const EXP_SLTSTA_PDS: u16 = 0x0040;
/// Device capabilities 2 (32 bits).
pub const EXP_DEVCAP2: usize = 0x24;
/// DevCap2: ARI forwarding supported.
pub const EXP_DEVCAP2_ARI: u32 = 0x0000_0020;
/// DevCap2: 10-bit tag completer supported.
pub const EXP_DEVCAP2_10BIT_TAG_COMP: u32 = 0x0001_0000;
/// Device control 2 (16 bits).
pub const EXP_DEVCTL2: usize = 0x28;
/// DevCtl2: ARI forwarding enable.
pub const EXP_DEVCTL2_ARI: u16 = 0x0020;
/// Link capabilities 2 (32 bits).
pub const EXP_LNKCAP2: usize = 0x2c;
/// LnkCap2: supported link speeds vector (bits 7:1).
pub const EXP_LNKCAP2_SLS: u32 = 0x0000_00fe;
/// Bytes a version-1 PCIe capability occupies that we read (through slot status).
pub const EXP_V1_LEN: usize = 0x1c;
/// Bytes a version-2 PCIe capability occupies that we read (through link capabilities 2).
pub const EXP_V2_LEN: usize = 0x30;

// ---- ACS ----
/// ACS capability register (16 bits).
pub const ACS_CAP: usize = 0x04;
/// ACS control register (16 bits).
pub const ACS_CTRL: usize = 0x06;

// ---- SR-IOV ----
/// SR-IOV capabilities (32 bits).
pub const SRIOV_CAP: usize = 0x04;
/// SR-IOV control (16 bits).
pub const SRIOV_CTRL: usize = 0x08;
/// SR-IOV control: VF enable.
pub const SRIOV_CTRL_VFE: u16 = 0x0001;
/// SR-IOV control: VF memory space enable.
pub const SRIOV_CTRL_MSE: u16 = 0x0008;
/// SR-IOV control: ARI capable hierarchy.
pub const SRIOV_CTRL_ARI: u16 = 0x0010;
/// InitialVFs (16 bits).
pub const SRIOV_INITIAL_VF: usize = 0x0c;
/// TotalVFs (16 bits).
pub const SRIOV_TOTAL_VF: usize = 0x0e;
/// NumVFs (16 bits).
pub const SRIOV_NUM_VF: usize = 0x10;
/// Function dependency link (8 bits).
pub const SRIOV_FUNC_LINK: usize = 0x12;
/// First VF offset (16 bits).
pub const SRIOV_VF_OFFSET: usize = 0x14;
/// VF stride (16 bits).
pub const SRIOV_VF_STRIDE: usize = 0x16;
/// VF device id (16 bits).
pub const SRIOV_VF_DID: usize = 0x1a;
/// Supported page sizes (32 bits).
pub const SRIOV_SUP_PGSIZE: usize = 0x1c;
/// System page size (32 bits).
pub const SRIOV_SYS_PGSIZE: usize = 0x20;
/// First VF BAR.
pub const SRIOV_BAR: usize = 0x24;
/// VF migration state array offset (32 bits).
pub const SRIOV_VFM: usize = 0x3c;
/// Length of the SR-IOV capability.
pub const SRIOV_LEN: usize = 0x40;

// ---- Resizable BAR ----
/// First entry's capability register.
pub const REBAR_CAP: usize = 0x04;
/// First entry's control register.
pub const REBAR_CTRL: usize = 0x08;
/// Control: BAR index (bits 2:0).
pub const REBAR_CTRL_BAR_IDX: u32 = 0x0000_0007;
/// Control: number of resizable BARs (bits 7:5, first entry only).
pub const REBAR_CTRL_NBAR_MASK: u32 = 0x0000_00e0;
/// Control: current BAR size (bits 13:8, 1 MiB << n).
pub const REBAR_CTRL_BAR_SIZE: u32 = 0x0000_3f00;
