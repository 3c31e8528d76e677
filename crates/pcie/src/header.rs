//! The standard header: identity, class, header layout and bridge windows.

use serde::Serialize;

use crate::config::ConfigSpace;
use crate::regs;

/// The 24-bit class code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClassCode {
    /// Base class (byte 0x0b).
    pub base: u8,
    /// Sub-class (byte 0x0a).
    pub sub: u8,
    /// Programming interface (byte 0x09).
    pub prog_if: u8,
}

impl ClassCode {
    /// Class code from its 24-bit value (`0xBBSSPP`).
    pub fn from_u24(value: u32) -> Self {
        let [prog_if, sub, base, _] = value.to_le_bytes();
        Self { base, sub, prog_if }
    }

    /// The 24-bit value `0xBBSSPP`.
    pub fn as_u24(self) -> u32 {
        u32::from_le_bytes([self.prog_if, self.sub, self.base, 0])
    }

    /// Base and sub-class as the 16-bit value lspci prints in `[0108]`.
    pub fn as_u16(self) -> u16 {
        u16::from_le_bytes([self.sub, self.base])
    }

    /// Built-in name of the (base, sub) pair, falling back to the base-class name. `None` for unknown classes.
    /// A full `pci.ids` lookup (crate `pcipool-describe`) may give finer names; these are enough without it.
    pub fn name(self) -> Option<&'static str> {
        CLASS_NAMES
            .iter()
            .find(|(b, s, _)| *b == self.base && *s == Some(self.sub))
            .or_else(|| {
                CLASS_NAMES
                    .iter()
                    .find(|(b, s, _)| *b == self.base && s.is_none())
            })
            .map(|(_, _, n)| *n)
    }

    /// True for base class 0x06 sub-class 0x04 (PCI-to-PCI bridge) and 0x09 (semi-transparent).
    pub fn is_pci_bridge(self) -> bool {
        self.base == 0x06 && matches!(self.sub, 0x04 | 0x09)
    }
}

/// Names as in the class section of the PCI ID repository.
const CLASS_NAMES: &[(u8, Option<u8>, &str)] = &[
    (0x00, None, "Unclassified device"),
    (0x00, Some(0x01), "VGA compatible unclassified device"),
    (0x01, None, "Mass storage controller"),
    (0x01, Some(0x00), "SCSI storage controller"),
    (0x01, Some(0x01), "IDE interface"),
    (0x01, Some(0x04), "RAID bus controller"),
    (0x01, Some(0x06), "SATA controller"),
    (0x01, Some(0x07), "Serial Attached SCSI controller"),
    (0x01, Some(0x08), "Non-Volatile memory controller"),
    (0x01, Some(0x80), "Mass storage controller"),
    (0x02, None, "Network controller"),
    (0x02, Some(0x00), "Ethernet controller"),
    (0x02, Some(0x07), "Infiniband controller"),
    (0x02, Some(0x08), "Fabric controller"),
    (0x02, Some(0x80), "Network controller"),
    (0x03, None, "Display controller"),
    (0x03, Some(0x00), "VGA compatible controller"),
    (0x03, Some(0x01), "XGA compatible controller"),
    (0x03, Some(0x02), "3D controller"),
    (0x03, Some(0x80), "Display controller"),
    (0x04, None, "Multimedia controller"),
    (0x04, Some(0x01), "Multimedia audio controller"),
    (0x04, Some(0x03), "Audio device"),
    (0x05, None, "Memory controller"),
    (0x05, Some(0x02), "CXL"),
    (0x06, None, "Bridge"),
    (0x06, Some(0x00), "Host bridge"),
    (0x06, Some(0x01), "ISA bridge"),
    (0x06, Some(0x04), "PCI bridge"),
    (0x06, Some(0x07), "CardBus bridge"),
    (0x06, Some(0x09), "Semi-transparent PCI-to-PCI bridge"),
    (0x06, Some(0x80), "Bridge"),
    (0x07, None, "Communication controller"),
    (0x07, Some(0x00), "Serial controller"),
    (0x08, None, "Generic system peripheral"),
    (0x08, Some(0x05), "SD Host controller"),
    (0x08, Some(0x06), "IOMMU"),
    (0x08, Some(0x07), "Root Complex Event Collector"),
    (0x09, None, "Input device controller"),
    (0x0a, None, "Docking station"),
    (0x0b, None, "Processor"),
    (0x0b, Some(0x40), "Co-processor"),
    (0x0c, None, "Serial bus controller"),
    (0x0c, Some(0x03), "USB controller"),
    (0x0c, Some(0x05), "SMBus"),
    (0x0c, Some(0x06), "InfiniBand"),
    (0x0d, None, "Wireless controller"),
    (0x0e, None, "Intelligent controller"),
    (0x0f, None, "Satellite communications controller"),
    (0x10, None, "Encryption controller"),
    (0x11, None, "Signal processing controller"),
    (0x12, None, "Processing accelerators"),
    (0x13, None, "Non-Essential Instrumentation"),
    (0x40, None, "Coprocessor"),
    (0xff, None, "Unassigned class"),
];

/// Header layout (bits 6:0 of the header type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "layout")]
pub enum HeaderType {
    /// Type 0: an endpoint function.
    Endpoint,
    /// Type 1: a PCI-to-PCI bridge (root ports and switch ports too).
    Bridge,
    /// Type 2: a CardBus bridge.
    CardBus,
    /// Any other layout, kept as read.
    Unknown(u8),
}

impl HeaderType {
    /// From the header type byte.
    pub fn from_byte(byte: u8) -> Self {
        match byte & 0x7f {
            0 => Self::Endpoint,
            1 => Self::Bridge,
            2 => Self::CardBus,
            other => Self::Unknown(other),
        }
    }

    /// Number of BARs this layout has.
    pub fn bar_count(self) -> usize {
        match self {
            Self::Endpoint => 6,
            Self::Bridge => 2,
            Self::CardBus => 1,
            Self::Unknown(_) => 0,
        }
    }
}

/// Legacy interrupt pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptPin {
    /// INTA#.
    A,
    /// INTB#.
    B,
    /// INTC#.
    C,
    /// INTD#.
    D,
    /// A value outside 1..=4.
    Invalid(u8),
}

impl InterruptPin {
    /// From the interrupt pin byte; 0 means no pin.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => None,
            1 => Some(Self::A),
            2 => Some(Self::B),
            3 => Some(Self::C),
            4 => Some(Self::D),
            other => Some(Self::Invalid(other)),
        }
    }
}

/// An address window a bridge forwards downstream. `None` fields mean the window is closed (base > limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BridgeWindow {
    /// First address forwarded.
    pub base: u64,
    /// Last address forwarded (inclusive).
    pub limit: u64,
}

/// What a type 1 header adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeInfo {
    /// Bus on the upstream side.
    pub primary_bus: u8,
    /// Bus directly below.
    pub secondary_bus: u8,
    /// Highest bus below.
    pub subordinate_bus: u8,
    /// I/O window, if open.
    pub io_window: Option<BridgeWindow>,
    /// Non-prefetchable memory window, if open.
    pub memory_window: Option<BridgeWindow>,
    /// Prefetchable memory window, if open.
    pub prefetchable_window: Option<BridgeWindow>,
    /// Whether the prefetchable window decodes 64-bit addresses.
    pub prefetchable_64bit: bool,
    /// Bridge control register.
    pub bridge_control: u16,
}

impl BridgeInfo {
    /// Reads a type 1 header. The header is always captured (>= 64 bytes), so reads cannot miss.
    pub(crate) fn decode(cfg: &ConfigSpace<'_>) -> Self {
        let b = |o| cfg.u8(o).unwrap_or(0);
        let w = |o| cfg.u16(o).unwrap_or(0);
        let d = |o| cfg.u32(o).unwrap_or(0);

        let io_base_lo = b(regs::IO_BASE);
        let io_limit_lo = b(regs::IO_LIMIT);
        let io_32 = io_base_lo & 0x0f == 0x01;
        let (io_hi_base, io_hi_limit) = if io_32 {
            (
                u64::from(w(regs::IO_BASE_UPPER16)),
                u64::from(w(regs::IO_LIMIT_UPPER16)),
            )
        } else {
            (0, 0)
        };
        let io_base = (io_hi_base << 16) | (u64::from(io_base_lo & 0xf0) << 8);
        let io_limit = (io_hi_limit << 16) | (u64::from(io_limit_lo & 0xf0) << 8) | 0xfff;

        let mem_base = u64::from(w(regs::MEMORY_BASE) & 0xfff0) << 16;
        let mem_limit = (u64::from(w(regs::MEMORY_LIMIT) & 0xfff0) << 16) | 0xf_ffff;

        let pref_base_lo = w(regs::PREF_MEMORY_BASE);
        let pref_limit_lo = w(regs::PREF_MEMORY_LIMIT);
        let pref_64 = pref_base_lo & 0x000f == 0x0001;
        let (pb_hi, pl_hi) = if pref_64 {
            (
                u64::from(d(regs::PREF_BASE_UPPER32)),
                u64::from(d(regs::PREF_LIMIT_UPPER32)),
            )
        } else {
            (0, 0)
        };
        let pref_base = (pb_hi << 32) | (u64::from(pref_base_lo & 0xfff0) << 16);
        let pref_limit = (pl_hi << 32) | (u64::from(pref_limit_lo & 0xfff0) << 16) | 0xf_ffff;

        let window =
            |base: u64, limit: u64| (base <= limit).then_some(BridgeWindow { base, limit });
        Self {
            primary_bus: b(regs::PRIMARY_BUS),
            secondary_bus: b(regs::SECONDARY_BUS),
            subordinate_bus: b(regs::SUBORDINATE_BUS),
            // An all-zero I/O base/limit pair means "no I/O window implemented".
            io_window: if io_base_lo == 0 && io_limit_lo == 0 {
                None
            } else {
                window(io_base, io_limit)
            },
            memory_window: window(mem_base, mem_limit),
            prefetchable_window: window(pref_base, pref_limit),
            prefetchable_64bit: pref_64,
            bridge_control: w(regs::BRIDGE_CONTROL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_name_nvme_is_found() {
        assert_eq!(
            ClassCode::from_u24(0x01_08_02).name(),
            Some("Non-Volatile memory controller")
        );
    }

    #[test]
    fn class_name_unknown_sub_falls_back_to_base() {
        assert_eq!(
            ClassCode::from_u24(0x02_42_00).name(),
            Some("Network controller")
        );
    }

    #[test]
    fn class_name_unknown_base_is_none() {
        assert_eq!(ClassCode::from_u24(0x77_00_00).name(), None);
    }

    #[test]
    fn class_u24_round_trips() {
        assert_eq!(ClassCode::from_u24(0x03_02_00).as_u24(), 0x03_02_00);
    }

    #[test]
    fn header_type_multifunction_bit_is_ignored() {
        assert_eq!(HeaderType::from_byte(0x81), HeaderType::Bridge);
    }

    #[test]
    fn header_type_unknown_keeps_value() {
        assert_eq!(HeaderType::from_byte(0x7f), HeaderType::Unknown(0x7f));
    }
}
