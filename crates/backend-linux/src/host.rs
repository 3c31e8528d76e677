//! Operations an operator runs on one host (`pcipool host ...`), with the same device control the
//! agent uses: take a function from its driver and hold it for the pool, give it back, reset it,
//! set its SR-IOV VFs, hand it to `vfio-pci`. Each names its function explicitly, is refused on a
//! function that backs the root filesystem or carries the default route (no override), and reports the
//! exact writes it made (or, in a dry run, would make).

use std::fmt::Write as _;
use std::time::Duration;

use pcipool_backend::{DeviceControl, DeviceError, DeviceRecord, Inventory};
use pcipool_pcie::{Bdf, ResetMethod};
use serde::Serialize;

use crate::LinuxHost;
use crate::control::LinuxControl;
use crate::sysfs::{HostPaths, SysfsError};
use crate::write::{Mode, Scope, Write, Writer};

/// One operation (also the `pcipool host` subcommands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, clap::Subcommand)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostOp {
    /// Quiesce check, unbind, and hold for the pool (driver_override, so nothing rebinds it).
    Detach {
        /// The function (e.g. 0000:03:00.0).
        bdf: Bdf,
        /// Go ahead although something holds it (the holders are reported and logged).
        #[arg(long)]
        force: bool,
    },
    /// Give it back to its native driver, or to --driver.
    Attach {
        /// The function.
        bdf: Bdf,
        /// The driver to bind instead of the native one.
        #[arg(long)]
        driver: Option<String>,
    },
    /// Reset it (refused while a driver is bound; a bus reset while a sibling is in use).
    Reset {
        /// The function.
        bdf: Bdf,
        /// flr, pm, bus, ... (default: the kernel's first).
        #[arg(long)]
        method: Option<ResetMethod>,
    },
    /// Enable COUNT SR-IOV virtual functions (0 disables them).
    Vfs {
        /// The physical function.
        bdf: Bdf,
        /// How many.
        count: u16,
    },
    /// Bind vfio-pci for guest pass-through (the override stays until `attach`).
    Vfio {
        /// The function.
        bdf: Bdf,
    },
    /// Quiesce check, hold, and take the function off the bus (sysfs `remove`).
    Remove {
        /// The function.
        bdf: Bdf,
    },
    /// Rescan below a bridge (a root port), so that removed or hot-plugged functions appear.
    Rescan {
        /// The bridge.
        bdf: Bdf,
    },
}

impl HostOp {
    /// The operation's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Detach { .. } => "detach",
            Self::Attach { .. } => "attach",
            Self::Reset { .. } => "reset",
            Self::Vfs { .. } => "vfs",
            Self::Vfio { .. } => "vfio",
            Self::Remove { .. } => "remove",
            Self::Rescan { .. } => "rescan",
        }
    }

    /// The function it acts on.
    pub fn bdf(&self) -> Bdf {
        match self {
            Self::Detach { bdf, .. }
            | Self::Attach { bdf, .. }
            | Self::Reset { bdf, .. }
            | Self::Vfs { bdf, .. }
            | Self::Vfio { bdf }
            | Self::Remove { bdf }
            | Self::Rescan { bdf } => *bdf,
        }
    }
}

/// What an operation did.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// The operation, with its function.
    pub operation: HostOp,
    /// Nothing was written.
    pub dry_run: bool,
    /// Driver before.
    pub driver_before: Option<String>,
    /// Driver after (in a dry run: as before).
    pub driver_after: Option<String>,
    /// Holders a forced detach went past.
    pub forced_past: Vec<String>,
    /// The writes, in order.
    pub writes: Vec<Write>,
}

impl HostReport {
    /// The report as text: what changed, then the writes.
    pub fn text(&self) -> String {
        let name = |d: &Option<String>| d.clone().unwrap_or_else(|| "no driver".into());
        let mut out = format!(
            "{} {}: {} -> {}{}\n",
            self.operation.name(),
            self.operation.bdf(),
            name(&self.driver_before),
            name(&self.driver_after),
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        for holder in &self.forced_past {
            let _ = writeln!(out, "  forced past: {holder}");
        }
        if self.writes.is_empty() {
            out.push_str("  no writes needed\n");
        }
        for w in &self.writes {
            let _ = writeln!(out, "  {w}");
        }
        out
    }
}

/// Why an operation did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The host could not be read.
    #[error(transparent)]
    Read(#[from] SysfsError),
    /// No such function.
    #[error("no PCI function {0} on this host")]
    NoDevice(Bdf),
    /// The function keeps this host running.
    #[error("{bdf} {why}: pcipool never touches it")]
    Unsafe {
        /// The function.
        bdf: Bdf,
        /// What it does for the host.
        why: &'static str,
    },
    /// The device control's answer.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl HostError {
    /// The exit code `pcipool host` returns (docs/cli.md): 3 refused as unsafe or outside the pool,
    /// 4 no such function, 5 busy (the holders are named), 6 timed out, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unsafe { .. } | Self::Device(DeviceError::NotAllowed { .. }) => 3,
            Self::NoDevice(_) | Self::Device(DeviceError::NoDevice(_)) => 4,
            Self::Device(DeviceError::Held { .. } | DeviceError::Busy { .. }) => 5,
            Self::Device(DeviceError::Timeout { .. }) => 6,
            _ => 1,
        }
    }
}

/// Refuses the functions a host needs to stay up: the disk behind `/`, the NIC of the default route.
///
/// # Errors
/// [`HostError::Unsafe`], [`HostError::NoDevice`].
pub fn check_safe(record: Option<&DeviceRecord>, bdf: Bdf) -> Result<(), HostError> {
    let record = record.ok_or(HostError::NoDevice(bdf))?;
    if record.backs_root_fs {
        return Err(HostError::Unsafe {
            bdf,
            why: "backs the root filesystem",
        });
    }
    if record.backs_default_route {
        return Err(HostError::Unsafe {
            bdf,
            why: "carries the default route",
        });
    }
    Ok(())
}

/// Runs one operation under `paths`.
///
/// # Errors
/// [`HostError`].
pub fn run(
    paths: &HostPaths,
    op: &HostOp,
    mode: Mode,
    deadline: Duration,
) -> Result<HostReport, HostError> {
    let bdf = op.bdf();
    let inventory = LinuxHost::new(paths.clone()).inventory()?;
    check_safe(inventory.devices.iter().find(|d| d.bdf == bdf), bdf)?;
    let writer = Writer::new(Scope::new(&paths.sys, [bdf]), mode).with_deadline(deadline);
    let mut control = LinuxControl::new(paths.clone(), writer)?;
    let driver_before = control.driver(bdf)?;
    let mut forced_past = Vec::new();
    match op {
        HostOp::Detach { force, .. } => {
            if *force {
                forced_past = control.holders(bdf)?;
                if !forced_past.is_empty() {
                    tracing::warn!(%bdf, holders = ?forced_past, "detach forced past holders");
                }
            }
            control.hold(bdf, *force)?;
        }
        HostOp::Attach { driver, .. } => {
            control.give(bdf, driver.as_deref(), false)?;
        }
        HostOp::Reset { method, .. } => {
            let method = match method {
                Some(m) => *m,
                None => control
                    .reset_methods(bdf)?
                    .and_then(|list| list.first().and_then(|m| m.parse().ok()))
                    .ok_or(DeviceError::ResetUnsupported {
                        bdf,
                        method: ResetMethod::Flr,
                    })?,
            };
            control.reset(bdf, method)?;
        }
        HostOp::Vfs { count, .. } => control.enable_vfs(bdf, *count)?,
        HostOp::Vfio { .. } => {
            control.give(bdf, Some("vfio-pci"), true)?;
        }
        HostOp::Remove { .. } => {
            control.hold(bdf, false)?;
            control.hot_remove(bdf)?;
        }
        HostOp::Rescan { .. } => control.rescan(Some(bdf))?,
    }
    let dry_run = mode == Mode::DryRun;
    let driver_after = match op {
        _ if dry_run => driver_before.clone(),
        HostOp::Remove { .. } => None,
        _ => control.driver(bdf)?,
    };
    Ok(HostReport {
        operation: op.clone(),
        dry_run,
        driver_before,
        driver_after,
        forced_past,
        writes: control.writer().take_log(),
    })
}
