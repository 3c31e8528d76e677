//! The hypervisor as the fabric: each host of the pool is a QEMU guest, and moving a device between
//! hosts is what a composable-infrastructure switch does to its hosts, a hot-unplug from one and a
//! hot-plug into a free PCIe slot of the other. [`QemuFabric`] implements `FabricControl` over each
//! guest's QMP socket ([`qmp::Qmp`]).
//!
//! Moving an NVMe drive: on the guest that has it, `device_del`, then wait for QEMU's
//! `DEVICE_DELETED` (the guest's kernel has let go of it), then `blockdev-del` of its backing image;
//! on the other guest, `blockdev-add` of the same image and `device_add` on a free hot-plug root port.
//! So at any time exactly one QEMU process holds the image. Where a drive is, is read from the guests
//! themselves (which one has its block node), not remembered, so a restarted fabric manager finds every
//! drive where it is.
#![deny(missing_docs)]

pub mod fabric;
pub mod qmp;

pub use fabric::{Drive, Guest, QemuFabric};
pub use qmp::{Qmp, QmpError};
