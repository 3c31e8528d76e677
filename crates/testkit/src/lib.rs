//! Fixtures shared by pcipool's tests (never shipped).
//!
//! - [`sysfs::SysfsTreeBuilder`] lays out a fake `/sys` and `/proc` in a temporary directory, with the
//!   symlinks the kernel makes, from builder-made config spaces. Everything that would mutate a host is
//!   tested against such a tree, never against the real `/sys`.
//! - [`kernel::FakeKernel`] makes a fake tree's attribute files writable the way the kernel's are
//!   (unbind, probe, remove, SR-IOV), refuses chosen writes with an errno, and [`kernel::stall`] turns
//!   an attribute into a FIFO whose write never finishes.
//! - [`corpus`] finds the real devices' lspci dumps where an operator put them (`PCIPOOL_CORPUS`;
//!   GPL-licensed, so never copied into this repository; tests skip, saying so, without them).
//! - [`etcd::Cluster`] runs real etcd members; [`netns::Net`] makes network namespaces joined by a
//!   bridge, so processes are hosts with addresses and links a test can cut.
//! - [`history`] records what concurrent clients asked and heard, and checks it (no overlapping leases,
//!   no lost acknowledged lease).
//! - [`skip::skipped`] prints the visible SKIPPED line of a test that cannot run on this machine.
//!
//! # Layout
//! - [`sysfs`]: the fake tree builder (devices, mounts, routes, processes).
//! - [`kernel`]: what writes to the fake tree do.
//! - [`corpus`]: locating the optional dump corpus.
//! - [`skip`]: reporting a skipped test.
//! - [`etcd`], [`netns`], [`history`]: the multi-controller fault tests' parts.

pub mod corpus;
pub mod etcd;
pub mod history;
pub mod kernel;
pub mod netns;
pub mod skip;
pub mod sysfs;
