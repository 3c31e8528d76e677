//! Fixtures shared by pcipool's tests (never shipped).
//!
//! - [`sysfs::SysfsTreeBuilder`] lays out a fake `/sys` and `/proc` in a temporary directory, with the
//!   symlinks the kernel makes, from builder-made config spaces. Everything that would mutate a host is
//!   tested against such a tree, never against the real `/sys`.
//! - [`corpus`] finds the real devices' lspci dumps that live beside the project in
//!   `shared/corpus/` (GPL-licensed, so read from there and never copied into this repository).
//!
//! # Layout
//! - [`sysfs`]: the fake tree builder.
//! - [`corpus`]: locating the shared dump corpus.

pub mod corpus;
pub mod sysfs;
