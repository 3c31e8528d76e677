//! The Linux backend: a host seen through its sysfs (and a little procfs).
//!
//! Every path is taken relative to a [`HostPaths`] root, so the same code reads the real `/sys` on a
//! lender and a fake tree in tests. This crate only *reads* so far: inventory and the facts
//! qualification needs. Writes (unbind, bind, reset, remove/rescan) will only ever go through the
//! same roots, and tests drive them against fake trees.
//!
//! # Layout
//! - [`sysfs`]: typed reads of sysfs attribute files and links, with [`SysfsError`].
//! - [`procfs`]: mount table and routing table parsing (pure functions plus readers).
//! - [`inventory`]: the [`LinuxHost`] inventory.
#![deny(missing_docs)]

pub mod inventory;
pub mod procfs;
pub mod qualify_facts;
pub mod sysfs;

pub use inventory::LinuxHost;
pub use sysfs::{HostPaths, SysfsError};
