//! Errors and warnings of the decoder.
//!
//! A [`ConfigSpaceError`] means there is nothing to decode (wrong length, device gone). Everything else
//! that is wrong with the bytes becomes a [`DecodeWarning`] next to the facts that could be read, so an
//! operator still sees the vendor and class of a device whose capability list is broken.

use serde::Serialize;

/// Why a config space could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigSpaceError {
    /// Fewer than the 64 bytes of the standard header.
    #[error("config space of {len} bytes is shorter than the 64-byte header")]
    TooShort {
        /// Bytes supplied.
        len: usize,
    },
    /// More than the 4096 bytes of PCIe extended config space.
    #[error("config space of {len} bytes is longer than 4096 bytes")]
    TooLong {
        /// Bytes supplied.
        len: usize,
    },
    /// Vendor id reads as 0xffff: the function is absent or the link is down (reads complete as all ones).
    #[error("vendor id reads 0xffff: device absent or unreachable")]
    DeviceAbsent,
}

/// Something wrong in a config space that did not stop the decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum DecodeWarning {
    /// A capability pointer points at one already visited.
    CapabilityLoop {
        /// Offset visited twice.
        at: u16,
    },
    /// A capability pointer points into the header or past the bytes supplied.
    CapabilityPointerOutOfRange {
        /// Offset of the structure holding the bad pointer (0x34 for the list head).
        from: u16,
        /// The pointer value.
        pointer: u16,
    },
    /// A capability's id byte reads 0xff: the list is broken.
    CapabilityChainBroken {
        /// Offset of the broken entry.
        at: u16,
    },
    /// A capability's registers run past the bytes supplied; its details are missing.
    CapabilityTruncated {
        /// Capability id.
        id: u16,
        /// Offset of the capability.
        at: u16,
    },
    /// An extended capability pointer points at one already visited.
    ExtendedCapabilityLoop {
        /// Offset visited twice.
        at: u16,
    },
    /// An extended capability's next pointer is below 0x100 or not dword aligned.
    ExtendedCapabilityPointerOutOfRange {
        /// Offset of the capability holding the bad pointer.
        from: u16,
        /// The pointer value.
        pointer: u16,
    },
    /// The list walk stopped at its iteration bound.
    TooManyCapabilities {
        /// How many entries were read before stopping.
        count: usize,
    },
    /// A 64-bit BAR sits in the last BAR slot, so its upper half is missing.
    Bar64InLastSlot {
        /// BAR index.
        index: u8,
    },
    /// The header type is neither 0 (endpoint), 1 (bridge) nor 2 (CardBus bridge).
    UnknownHeaderType {
        /// Header layout field (bits 6:0).
        layout: u8,
    },
    /// A resizable-BAR capability declares an impossible number of entries.
    ResizableBarCountInvalid {
        /// Capability offset.
        at: u16,
        /// Declared count.
        count: u8,
    },
    /// Only the first 64 or 256 bytes were supplied; capabilities behind them are not known.
    PartialConfigSpace {
        /// Bytes supplied.
        len: usize,
    },
}
