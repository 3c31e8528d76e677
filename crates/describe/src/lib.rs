//! PCI functions in words: vendor, device and class names from the PCI ID Repository file (`pci.ids`)
//! that Debian ships, and the lspci-style text that `pcipool inventory`, `inspect` and `decode` print.
//!
//! # Layout
//! - [`names`]: the `pci.ids` database ([`PciIds`]), parsed once per process; names are a convenience,
//!   never a dependency: without the file, ids show as hex.
//! - [`text`]: the text of decoded config-space facts, device records and host inventories; sizes.
//! - [`dump`]: what `pcipool decode` prints for a file of dumps.
#![deny(missing_docs)]

pub mod dump;
pub mod names;
pub mod text;

pub use names::{DEFAULT_PATHS, PATH_ENV, PciIds, PciIdsError};
