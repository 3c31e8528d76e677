//! The VM lab (`pcipool lab`): Linux guests under QEMU are the pool's hosts and the hypervisor is the
//! fabric. `pcipool lab up` boots the guests of a [`description::Description`], starts the controller
//! (`pcipool server` with its SQLite store, as a process of its own), the QEMU fabric manager (the
//! `qemu` backend behind the fabric's HTTP port) and one Linux agent inside each guest, which reaches
//! the controller through QEMU's restricted user network (a forward to `pcipool relay`).
//!
//! Files under the lab's directory (`--dir`, default `$TMPDIR/pcipool-lab`):
//! - `lab.sock`: the running lab's control socket (`lab status`, `lab exec`, `lab down`);
//! - `lab.toml` and `fabric.toml`: the description it runs and the controller's fabric made from it;
//! - `controller/`: the store (`pool.db`), `admin.token`, `agent.token`, `tenant.token` (all three in
//!   `tokens.toml`, the controller's `--tokens`), `server.log`, `server.pid`;
//! - `hosts/NODE/`: `qmp.sock`, `serial.log` (the guest's console), `qemu.pid`;
//! - `images/SERIAL.img`: each drive's raw image, kept across `down` and `up`;
//! - `initramfs.cpio`: busybox, the guest modules, this `pcipool` and the machine's `pci.ids`.
#![deny(missing_docs)]

pub mod command;
mod control;
mod controller;
pub mod description;
mod lab;
mod options;

use std::path::{Path, PathBuf};

pub use control::{Answer, DriveStatus, DriveView, FabricView, HostStatus, LabClient, LabStatus};
pub use lab::{GUEST_MODULES, Lab};
pub use options::{Options, Progress};

/// Why the lab could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// QEMU or another tool cannot be had on this machine (a test prints SKIPPED with this).
    #[error("{0}")]
    Unavailable(String),
    /// The lab description is wrong.
    #[error("lab description: {0}")]
    Description(String),
    /// A guest could not be booted or did not answer.
    #[error(transparent)]
    Vm(pcipool_vm::VmError),
    /// The controller process did not start or stopped.
    #[error("controller: {0}")]
    Controller(String),
    /// The agents did not register, or a guest command failed while setting the lab up.
    #[error("{0}")]
    Setup(String),
    /// No lab runs in the directory.
    #[error("no lab runs in {0} (start one with `pcipool lab up`)")]
    NotRunning(PathBuf),
    /// A lab already runs in the directory.
    #[error("a lab already runs in {0}")]
    AlreadyRunning(PathBuf),
    /// The lab has no such host.
    #[error("the lab has no host {0}")]
    NoSuchHost(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The control socket's peer said something unexpected.
    #[error("lab control: {0}")]
    Control(String),
}

impl From<pcipool_vm::VmError> for LabError {
    fn from(e: pcipool_vm::VmError) -> Self {
        match e {
            pcipool_vm::VmError::Unavailable(why) => Self::Unavailable(why),
            other => Self::Vm(other),
        }
    }
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// The lab's directory when `--dir` is not given.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("pcipool-lab")
}

/// The control socket of the lab in `dir`.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("lab.sock")
}
