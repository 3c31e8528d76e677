//! PCI configuration space, the way pcipool sees it: bytes in, typed facts out.
//!
//! Every decision pcipool makes about a device (may it be lent, how is it reset, do its BARs fit
//! through an NTB window) starts from its config space. This crate turns the 64, 256 or 4096 bytes
//! read from sysfs, from an `lspci -x` dump or from the simulator into [`DeviceFacts`]: header,
//! BARs, standard and extended capabilities, and the reset methods Linux would use.
//!
//! It does no I/O and never panics on input: hostile or broken config spaces (capability loops,
//! pointers out of range, truncated captures, a device that reads all ones) give a
//! [`ConfigSpaceError`] or [`DecodeWarning`]s next to the facts that could be read.
//!
//! [`ConfigBuilder`] goes the other way and makes realistic config spaces (see [`presets`]).
//!
//! # Layout
//! - [`bdf`]: PCI addresses.
//! - [`config`]: bounds-checked little-endian reads.
//! - [`regs`]: register offsets and masks.
//! - [`header`], [`bar`], [`caps`], [`ecaps`]: the decoders per structure.
//! - [`decode`]: the top-level decode.
//! - [`reset`]: reset-method derivation.
//! - [`builder`], [`presets`]: making config spaces.
//! - [`dump`]: the lspci hex-dump format.
#![deny(missing_docs)]

pub mod bar;
pub mod bdf;
pub mod builder;
pub mod caps;
pub mod config;
pub mod decode;
pub mod dump;
pub mod ecaps;
pub mod error;
pub mod header;
pub mod presets;
pub mod regs;
pub mod reset;

pub use bar::{Bar, BarKind, ExpansionRom};
pub use bdf::{Bdf, BdfError};
pub use builder::{BuiltConfig, ConfigBuilder, PcieOptions, SriovOptions};
pub use caps::{Capability, CapabilityDetail, LinkSpeed, PciExpress, PortType};
pub use decode::{DeviceFacts, KnownSizes, decode, decode_with_sizes};
pub use ecaps::{ExtCapability, ExtCapabilityDetail};
pub use error::{ConfigSpaceError, DecodeWarning};
pub use header::{ClassCode, HeaderType};
pub use reset::{BusPosition, ResetMethod, derive_reset_methods};
