//! A simulated PCI function: a `[u32; 1024]` register file with a parallel writable mask, BAR size
//! probing, and a reset that really changes config space.

use pcipool_pcie::{BuiltConfig, KnownSizes, decode_with_sizes, regs};
use serde::{Deserialize, Serialize};

/// A config access outside the 4096-byte space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("config access at {offset:#x}+{len} is outside the 4096-byte config space")]
pub struct ConfigRange {
    /// Offset.
    pub offset: u16,
    /// Length.
    pub len: usize,
}

/// How a device behaves when reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResetBehaviour {
    /// FLR works and takes 100 ms (the spec's completion time).
    #[default]
    Flr,
    /// FLR works but takes 1 s.
    FlrSlow,
    /// FLR is advertised but the device never comes back.
    FlrHangs,
    /// No function-level reset; only a secondary bus reset works.
    BusOnly,
    /// Nothing resets it.
    None,
}

/// Register file and state of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    regs: Box<[u32; 1024]>,
    writable: Box<[u32; 1024]>,
    /// The register file right after a reset (command cleared, BARs unassigned, MSI/MSI-X off).
    power_on: Box<[u32; 1024]>,
    sizes: KnownSizes,
    /// Reset behaviour.
    pub reset: ResetBehaviour,
    /// The device stopped answering (hung by a fault or a failed reset).
    pub hung: bool,
}

fn dword(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

impl SimDevice {
    /// A device from a builder config. The reset behaviour edits the advertised capabilities so the
    /// config space tells the truth (no FLR bit on a device that cannot FLR).
    pub fn new(built: &BuiltConfig, reset: ResetBehaviour) -> Self {
        let mut bytes = built.bytes.clone();
        bytes.resize(4096, 0);
        let facts = decode_with_sizes(&bytes, &built.sizes).ok();
        if let Some(f) = &facts
            && matches!(reset, ResetBehaviour::BusOnly | ResetBehaviour::None)
        {
            for cap in &f.capabilities {
                let at = usize::from(cap.offset);
                match cap.id {
                    regs::CAP_ID_EXP => bytes[at + regs::EXP_DEVCAP + 3] &= !0x10,
                    regs::CAP_ID_AF => bytes[at + regs::AF_CAP] &= !regs::AF_CAP_FLR,
                    regs::CAP_ID_PM => bytes[at + regs::PM_CTRL] |= 0x08,
                    _ => {}
                }
            }
        }
        let mut regs_file = Box::new([0u32; 1024]);
        for (i, r) in regs_file.iter_mut().enumerate() {
            *r = dword(&bytes, i);
        }
        let mut writable = Box::new([0u32; 1024]);
        writable[1] = 0x0000_0547; // command: I/O, memory, master, parity, SERR, INTx disable
        writable[15] = 0x0000_00ff; // interrupt line
        let bar_count = facts.as_ref().map_or(0, |f| f.header_type.bar_count());
        for bar in facts.iter().flat_map(|f| f.bars.iter()) {
            let i = 4 + usize::from(bar.index);
            if usize::from(bar.index) >= bar_count {
                continue;
            }
            let size = bar.size.unwrap_or(0);
            if size == 0 {
                continue;
            }
            let mask = !(size - 1);
            match bar.kind {
                pcipool_pcie::BarKind::Io => {
                    writable[i] = u32::try_from(mask & 0xffff_fffc).unwrap_or(0)
                }
                pcipool_pcie::BarKind::Memory64 => {
                    writable[i] = u32::try_from(mask & 0xffff_fff0).unwrap_or(0);
                    if let Some(hi) = writable.get_mut(i + 1) {
                        *hi = u32::try_from(mask >> 32).unwrap_or(0);
                    }
                }
                _ => writable[i] = u32::try_from(mask & 0xffff_fff0).unwrap_or(0),
            }
        }
        // MSI and MSI-X enable bits are writable.
        for cap in facts.iter().flat_map(|f| f.capabilities.iter()) {
            let i = usize::from(cap.offset) / 4;
            match cap.id {
                regs::CAP_ID_MSI => writable[i] |= u32::from(regs::MSI_FLAGS_ENABLE) << 16,
                regs::CAP_ID_MSIX => {
                    writable[i] |=
                        u32::from(regs::MSIX_FLAGS_ENABLE | regs::MSIX_FLAGS_MASKALL) << 16
                }
                _ => {}
            }
        }
        let mut power_on = regs_file.clone();
        power_on[1] &= 0xffff_0000;
        for (i, w) in writable.iter().enumerate().take(10).skip(4) {
            power_on[i] &= !w;
        }
        for cap in facts.iter().flat_map(|f| f.capabilities.iter()) {
            let i = usize::from(cap.offset) / 4;
            if matches!(cap.id, regs::CAP_ID_MSI | regs::CAP_ID_MSIX) {
                power_on[i] &= !writable[i];
            }
        }
        Self {
            regs: regs_file,
            writable,
            power_on,
            sizes: built.sizes,
            reset,
            hung: false,
        }
    }

    /// Reads `buf.len()` bytes at `offset`. A hung device reads all ones.
    ///
    /// # Errors
    /// Access past 4096 bytes.
    pub fn read(&self, offset: u16, buf: &mut [u8]) -> Result<(), ConfigRange> {
        let start = usize::from(offset);
        let range = ConfigRange {
            offset,
            len: buf.len(),
        };
        start
            .checked_add(buf.len())
            .filter(|e| *e <= 4096)
            .ok_or(range)?;
        for (k, b) in buf.iter_mut().enumerate() {
            let at = start + k;
            let word = if self.hung {
                u32::MAX
            } else {
                self.regs[at / 4]
            };
            *b = word.to_le_bytes()[at % 4];
        }
        Ok(())
    }

    /// Writes bytes; only bits in the writable mask change, as in hardware.
    ///
    /// # Errors
    /// Access past 4096 bytes.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> Result<(), ConfigRange> {
        let start = usize::from(offset);
        let range = ConfigRange {
            offset,
            len: data.len(),
        };
        start
            .checked_add(data.len())
            .filter(|e| *e <= 4096)
            .ok_or(range)?;
        if self.hung {
            return Ok(());
        }
        for (k, b) in data.iter().enumerate() {
            let at = start + k;
            let shift = 8 * (at % 4);
            let mask = self.writable[at / 4] & (0xff << shift);
            let value = u32::from(*b) << shift;
            self.regs[at / 4] = (self.regs[at / 4] & !mask) | (value & mask);
        }
        Ok(())
    }

    /// The whole config space.
    pub fn config_bytes(&self) -> Vec<u8> {
        let fill = if self.hung { Some(u32::MAX) } else { None };
        self.regs
            .iter()
            .flat_map(|r| fill.unwrap_or(*r).to_le_bytes())
            .collect()
    }

    /// BAR and ROM sizes (what sysfs `resource` would say).
    pub fn sizes(&self) -> KnownSizes {
        self.sizes
    }

    /// Puts the register file back to its power-on state.
    pub fn apply_reset(&mut self) {
        self.regs = self.power_on.clone();
        self.hung = false;
    }

    /// True when the registers equal the power-on state (what a return workflow verifies).
    pub fn is_reset_state(&self) -> bool {
        self.regs == self.power_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcipool_pcie::presets;

    #[test]
    fn bar_probe_all_ones_returns_size_mask() {
        let mut d = SimDevice::new(&presets::nvme_ssd().build(), ResetBehaviour::Flr);
        d.write(0x10, &[0xff; 4]).expect("in range");
        let mut b = [0u8; 4];
        d.read(0x10, &mut b).expect("in range");
        // 16 KiB 64-bit non-prefetchable: address bits below 14 read zero, type bits stay 0b100.
        assert_eq!(u32::from_le_bytes(b), 0xffff_c004);
    }

    #[test]
    fn reset_clears_command_and_bars() {
        let mut d = SimDevice::new(&presets::nvme_ssd().build(), ResetBehaviour::Flr);
        d.apply_reset();
        let facts = pcipool_pcie::decode(&d.config_bytes()).expect("decodes");
        assert_eq!((facts.command & 0x7, facts.bars[0].address), (0, 0));
    }

    #[test]
    fn bus_only_device_advertises_no_flr() {
        let d = SimDevice::new(&presets::nvme_ssd().build(), ResetBehaviour::BusOnly);
        let facts = pcipool_pcie::decode(&d.config_bytes()).expect("decodes");
        assert_eq!(pcipool_pcie::derive_reset_methods(&facts, None), vec![]);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut d = SimDevice::new(&presets::nvme_ssd().build(), ResetBehaviour::Flr);
        d.write(0x00, &[0, 0]).expect("in range");
        let mut b = [0u8; 2];
        d.read(0x00, &mut b).expect("in range");
        assert_eq!(u16::from_le_bytes(b), 0x144d);
    }

    #[test]
    fn hung_device_reads_all_ones() {
        let mut d = SimDevice::new(&presets::nvme_ssd().build(), ResetBehaviour::Flr);
        d.hung = true;
        let mut b = [0u8; 4];
        d.read(0, &mut b).expect("in range");
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn access_past_end_is_error() {
        let d = SimDevice::new(&presets::nvme_ssd().build(), ResetBehaviour::Flr);
        assert_eq!(
            d.read(4094, &mut [0u8; 4]),
            Err(ConfigRange {
                offset: 4094,
                len: 4
            })
        );
    }
}
