//! The Linux backend: a host seen through its sysfs (and a little procfs).
//!
//! Every path is taken relative to a [`HostPaths`] root, so the same code reads the real `/sys` on a
//! lender and a fake tree in tests. Reads give the inventory and the facts qualification needs;
//! writes (unbind, bind, reset, remove/rescan, SR-IOV) go only through [`write::Writer`], which keeps
//! them inside the agent's pool, gives each a deadline and records them (a dry run only records).
//!
//! # Layout
//! - [`sysfs`]: typed reads of sysfs attribute files and links, with [`SysfsError`].
//! - [`write`]: the write path: [`write::Scope`], [`write::Writer`], deadlines, the record of writes.
//! - [`quiesce`]: what holds a function (mounts, open files, mappings, routed interfaces).
//! - [`control`]: [`LinuxControl`], the device-control primitives over the two above.
//! - [`host`]: the operator's one-host operations (`pcipool host ...`) with their safety checks.
//! - [`procfs`]: mount table and routing table parsing (pure functions plus readers).
//! - [`inventory`]: the [`LinuxHost`] inventory.
#![deny(missing_docs)]

pub mod control;
pub mod host;
pub mod inventory;
pub mod procfs;
pub mod qualify_facts;
pub mod quiesce;
pub mod sysfs;
pub mod write;

pub use control::LinuxControl;
pub use inventory::LinuxHost;
pub use sysfs::{HostPaths, SysfsError};
