//! Bounds-checked little-endian access to a captured config space.

use crate::error::ConfigSpaceError;

/// Size of the conventional PCI config space.
pub const CONVENTIONAL_SIZE: usize = 256;
/// Size of the PCIe extended config space.
pub const EXTENDED_SIZE: usize = 4096;
/// Size of the standard header every function has.
pub const HEADER_SIZE: usize = 64;

/// A borrowed config space of 64 to 4096 bytes. Reads past the end return `None`, never panic.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace<'a> {
    bytes: &'a [u8],
}

impl<'a> ConfigSpace<'a> {
    /// Wraps captured bytes.
    ///
    /// # Errors
    /// [`ConfigSpaceError::TooShort`] below 64 bytes, [`ConfigSpaceError::TooLong`] above 4096.
    pub fn new(bytes: &'a [u8]) -> Result<Self, ConfigSpaceError> {
        if bytes.len() < HEADER_SIZE {
            return Err(ConfigSpaceError::TooShort { len: bytes.len() });
        }
        if bytes.len() > EXTENDED_SIZE {
            return Err(ConfigSpaceError::TooLong { len: bytes.len() });
        }
        Ok(Self { bytes })
    }

    /// Number of bytes captured.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a config space holds at least the header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// True when `len` bytes starting at `offset` were captured.
    pub fn has(&self, offset: usize, len: usize) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.bytes.len())
    }

    /// Byte at `offset`.
    pub fn u8(&self, offset: usize) -> Option<u8> {
        self.bytes.get(offset).copied()
    }

    /// Little-endian word at `offset`.
    pub fn u16(&self, offset: usize) -> Option<u16> {
        let end = offset.checked_add(2)?;
        let b = self.bytes.get(offset..end)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Little-endian dword at `offset`.
    pub fn u32(&self, offset: usize) -> Option<u32> {
        let end = offset.checked_add(4)?;
        let b = self.bytes.get(offset..end)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Little-endian qword at `offset`.
    pub fn u64(&self, offset: usize) -> Option<u64> {
        let lo = self.u32(offset)?;
        let hi = self.u32(offset.checked_add(4)?)?;
        Some(u64::from(lo) | (u64::from(hi) << 32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_below_header_size_is_too_short() {
        assert_eq!(
            ConfigSpace::new(&[0; 63]).map(|c| c.len()),
            Err(ConfigSpaceError::TooShort { len: 63 })
        );
    }

    #[test]
    fn new_above_4096_is_too_long() {
        assert_eq!(
            ConfigSpace::new(&[0; 4097]).map(|c| c.len()),
            Err(ConfigSpaceError::TooLong { len: 4097 })
        );
    }

    #[test]
    fn u32_straddling_end_is_none() {
        let bytes = [0u8; 64];
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes is valid");
        assert_eq!(cfg.u32(62), None);
    }

    #[test]
    fn u16_reads_little_endian() {
        let mut bytes = [0u8; 64];
        bytes[0] = 0x86;
        bytes[1] = 0x80;
        let cfg = ConfigSpace::new(&bytes).expect("64 bytes is valid");
        assert_eq!(cfg.u16(0), Some(0x8086));
    }
}
