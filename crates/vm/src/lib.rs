//! Real Linux kernels for pcipool's tests: a guest under QEMU (software emulation: KVM does not work on
//! the machines this project runs on) on a q35 machine with an Intel IOMMU, PCIe root ports that take
//! hot-plugged devices, and emulated NVMe drives (one with SR-IOV), whose guest kernel drives them with
//! its own drivers. Everything that writes to sysfs in a test runs inside such a guest.
//!
//! The pieces, in the order a test uses them:
//! - [`tools::ensure`]: `qemu-system-x86`, `cpio`, `busybox-static`, `kmod` present, installed with
//!   apt when missing; otherwise the reason a test prints as SKIPPED.
//! - [`kernel::Kernel::fetch`]: the Debian kernel package `linux-image-amd64` depends on, downloaded
//!   once with `apt-get download` (one exact package) and unpacked with `dpkg -x` into the cache
//!   ([`cache_dir`]: `$PCIPOOL_VM_CACHE`, else `$XDG_CACHE_HOME/pcipool/vm`, else `~/.cache/pcipool/vm`),
//!   with `depmod -b` writing its modules.dep.
//! - [`initramfs::build`]: busybox, the modules asked for with their dependencies, the pcipool binary
//!   with the shared libraries `ldd` names, and an `/init` that loads the modules and then runs the
//!   commands the console sends it.
//! - [`vm::Vm::boot`]: QEMU with the serial console on its stdin/stdout and QMP on a Unix socket in the
//!   VM's directory; [`vm::Vm::run`] runs one shell command in the guest and returns its output and
//!   exit code.
#![deny(missing_docs)]

pub mod initramfs;
pub mod kernel;
pub mod tools;
pub mod vm;

use std::path::PathBuf;

/// Why a guest could not be had.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A tool is missing and could not be installed: the test prints SKIPPED with this.
    #[error("{0}")]
    Unavailable(String),
    /// A command on the machine failed.
    #[error("{what}: {detail}")]
    Command {
        /// What was run.
        what: String,
        /// Its error or output.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The guest did not answer in time or its console said something unexpected.
    #[error("guest: {0}")]
    Guest(String),
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Where downloads are kept between runs, outside the source tree.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PCIPOOL_VM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("pcipool/vm");
    }
    std::env::var_os("HOME").map_or_else(
        || std::env::temp_dir().join("pcipool-vm-cache"),
        |h| PathBuf::from(h).join(".cache/pcipool/vm"),
    )
}

/// Runs a command on the machine and returns its stdout.
pub(crate) fn run(cmd: &mut std::process::Command) -> Result<String, VmError> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| VmError::Command {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(VmError::Command {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
