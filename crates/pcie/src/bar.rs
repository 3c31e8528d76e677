//! Base address registers.
//!
//! ```text
//!  memory BAR                                   I/O BAR
//!  31                    4  3   2 1   0         31                 2  1   0
//! +-----------------------+----+-----+---+     +--------------------+---+---+
//! | base address          |pref| type| 0 |     | base address       |rsv| 1 |
//! +-----------------------+----+-----+---+     +--------------------+---+---+
//!  type: 00 = 32-bit, 01 = below 1 MiB, 10 = 64-bit (next BAR holds bits 63:32)
//! ```

use serde::Serialize;

use crate::config::ConfigSpace;
use crate::error::DecodeWarning;
use crate::header::HeaderType;
use crate::regs;

/// What address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BarKind {
    /// I/O port space.
    Io,
    /// 32-bit memory.
    Memory32,
    /// 64-bit memory (occupies this slot and the next).
    Memory64,
    /// Legacy memory below 1 MiB.
    MemoryBelow1M,
}

/// One decoded BAR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bar {
    /// BAR slot index (0..=5); a 64-bit BAR uses `index` and `index + 1`.
    pub index: u8,
    /// Address space.
    pub kind: BarKind,
    /// Prefetchable (memory BARs only).
    pub prefetchable: bool,
    /// Assigned base address (0 = unassigned).
    pub address: u64,
    /// Size in bytes, when known from outside the config space (sysfs `resource`, the simulator).
    pub size: Option<u64>,
}

/// The expansion ROM BAR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpansionRom {
    /// Assigned base address.
    pub address: u64,
    /// Whether ROM decoding is enabled.
    pub enabled: bool,
    /// Size in bytes, when known.
    pub size: Option<u64>,
}

/// Decodes the BARs a header layout has. Slots that read 0 (nothing assigned, no flags) or all ones are
/// skipped, as lspci does; `sizes` can still bring a zero slot back when the kernel knows its size.
pub(crate) fn decode_bars(
    cfg: &ConfigSpace<'_>,
    header_type: HeaderType,
    sizes: &[Option<u64>; 6],
    warnings: &mut Vec<DecodeWarning>,
) -> Vec<Bar> {
    decode_bar_array(cfg, regs::BAR_0, header_type.bar_count(), sizes, warnings)
}

/// Decodes `count` consecutive BAR registers starting at `base` (also used for SR-IOV VF BARs).
pub(crate) fn decode_bar_array(
    cfg: &ConfigSpace<'_>,
    base: usize,
    count: usize,
    sizes: &[Option<u64>; 6],
    warnings: &mut Vec<DecodeWarning>,
) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut i = 0usize;
    while i < count {
        let Some(raw) = cfg.u32(base + 4 * i) else {
            break;
        };
        let raw = if raw == u32::MAX { 0 } else { raw };
        let size = sizes.get(i).copied().flatten();
        let index = u8::try_from(i).unwrap_or(u8::MAX);
        if raw & regs::BAR_SPACE_IO != 0 {
            bars.push(Bar {
                index,
                kind: BarKind::Io,
                prefetchable: false,
                address: u64::from(raw & regs::BAR_IO_MASK),
                size,
            });
            i += 1;
            continue;
        }
        let prefetchable = raw & regs::BAR_MEM_PREFETCH != 0;
        let low = u64::from(raw & regs::BAR_MEM_MASK);
        match raw & regs::BAR_MEM_TYPE_MASK {
            regs::BAR_MEM_TYPE_64 => {
                if i + 1 >= count {
                    warnings.push(DecodeWarning::Bar64InLastSlot { index });
                    bars.push(Bar {
                        index,
                        kind: BarKind::Memory64,
                        prefetchable,
                        address: low,
                        size,
                    });
                    break;
                }
                let high = cfg.u32(base + 4 * (i + 1)).unwrap_or(0);
                bars.push(Bar {
                    index,
                    kind: BarKind::Memory64,
                    prefetchable,
                    address: low | (u64::from(high) << 32),
                    size,
                });
                i += 2;
            }
            kind_bits => {
                if raw != 0 || size.is_some_and(|s| s > 0) {
                    bars.push(Bar {
                        index,
                        kind: if kind_bits == regs::BAR_MEM_TYPE_1M {
                            BarKind::MemoryBelow1M
                        } else {
                            // Type 0b11 is reserved; the kernel treats it as 32-bit too.
                            BarKind::Memory32
                        },
                        prefetchable,
                        address: low,
                        size,
                    });
                }
                i += 1;
            }
        }
    }
    bars
}

/// Decodes the expansion ROM BAR, if the layout has one and it is not zero.
pub(crate) fn decode_rom(
    cfg: &ConfigSpace<'_>,
    header_type: HeaderType,
    size: Option<u64>,
) -> Option<ExpansionRom> {
    let offset = match header_type {
        HeaderType::Endpoint => regs::ROM_ADDRESS,
        HeaderType::Bridge => regs::BRIDGE_ROM_ADDRESS,
        HeaderType::CardBus | HeaderType::Unknown(_) => return None,
    };
    let raw = cfg.u32(offset)?;
    if (raw == 0 || raw == u32::MAX) && size.is_none() {
        return None;
    }
    let raw = if raw == u32::MAX { 0 } else { raw };
    Some(ExpansionRom {
        address: u64::from(raw & regs::ROM_ADDRESS_MASK),
        enabled: raw & regs::ROM_ENABLE != 0,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_with_bars(bars: [u32; 6]) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        for (i, bar) in bars.iter().enumerate() {
            bytes[0x10 + 4 * i..0x14 + 4 * i].copy_from_slice(&bar.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn bar_64bit_prefetchable_joins_upper_half() {
        let bytes = header_with_bars([0xe000_000c, 0x0000_0040, 0, 0, 0, 0]);
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes");
        let bars = decode_bars(&cfg, HeaderType::Endpoint, &[None; 6], &mut Vec::new());
        assert_eq!(
            bars,
            vec![Bar {
                index: 0,
                kind: BarKind::Memory64,
                prefetchable: true,
                address: 0x40_e000_0000,
                size: None
            }]
        );
    }

    #[test]
    fn bar_io_masks_flag_bits() {
        let bytes = header_with_bars([0, 0, 0, 0, 0xe001, 0]);
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes");
        let bars = decode_bars(&cfg, HeaderType::Endpoint, &[None; 6], &mut Vec::new());
        assert_eq!(bars[0].address, 0xe000);
    }

    #[test]
    fn bar_64bit_in_last_slot_warns() {
        let bytes = header_with_bars([0, 0, 0, 0, 0, 0x0000_0004]);
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes");
        let mut warnings = Vec::new();
        decode_bars(&cfg, HeaderType::Endpoint, &[None; 6], &mut warnings);
        assert_eq!(warnings, vec![DecodeWarning::Bar64InLastSlot { index: 5 }]);
    }

    #[test]
    fn bar_zero_slot_with_known_size_is_kept() {
        let bytes = header_with_bars([0; 6]);
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes");
        let sizes = [Some(0x4000), None, None, None, None, None];
        let bars = decode_bars(&cfg, HeaderType::Endpoint, &sizes, &mut Vec::new());
        assert_eq!(bars.len(), 1);
    }
}
