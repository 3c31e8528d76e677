//! The primitives a backend implements: what one host's kernel can do to its PCI functions
//! ([`DeviceControl`]) and what the fabric can do between hosts ([`FabricControl`]). They carry no
//! workflow knowledge: idempotence, the reset fallback and verify rules are the step runner's
//! (`pcipool-agent`), written once over these traits.

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pcie::{Bdf, ResetMethod};
use serde::{Deserialize, Serialize};

/// Health of one function as its host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceHealth {
    /// Answers config reads with its ids.
    Ok,
    /// Reads return all ones: removed, link down, or powered off.
    Gone,
    /// Present but not responding to commands (a hung device).
    Hung,
}

/// Why a device-control step failed. Shared by every backend so the workflow above reacts the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum DeviceError {
    /// No such function on this host.
    #[error("no device {0}")]
    NoDevice(Bdf),
    /// The host is down (crashed, rebooting, unreachable).
    #[error("host is down")]
    HostDown,
    /// The driver refuses to let go while the device is in use (open handles, mounts).
    #[error("{bdf}: driver {driver} is busy ({users} users)")]
    Busy {
        /// Device.
        bdf: Bdf,
        /// Driver.
        driver: String,
        /// Open users.
        users: u32,
    },
    /// Something on the host holds the device (a mount, an open file, a process mapping its BARs, an
    /// interface carrying traffic); each holder says what, and which process where one does.
    #[error("{bdf} is in use: {}", holders.join("; "))]
    Held {
        /// Device.
        bdf: Bdf,
        /// What holds it, one line each (`/dev/nvme0n1 mounted on /mnt`, `pid 812 (dd) has /dev/nvme0n1 open`).
        holders: Vec<String>,
    },
    /// The kernel refused a write to one of its attribute files (EINVAL, EBUSY, ENODEV, ...).
    #[error("{bdf}: the kernel refused '{value}' in {attribute}: {reason}")]
    Refused {
        /// Device.
        bdf: Bdf,
        /// The attribute file.
        attribute: String,
        /// What was written.
        value: String,
        /// The kernel's answer.
        reason: String,
    },
    /// This agent may not act on the device (not in its pool, it backs the root filesystem or the
    /// default route, or it did not qualify).
    #[error("{bdf}: not allowed: {why}")]
    NotAllowed {
        /// Device.
        bdf: Bdf,
        /// Why.
        why: String,
    },
    /// The step did not finish within its deadline (an unbind or reset that hangs).
    #[error("{bdf}: {step} timed out after {after_ms} ms")]
    Timeout {
        /// Device.
        bdf: Bdf,
        /// Which step.
        step: String,
        /// How long it waited.
        after_ms: u64,
    },
    /// The device does not support the requested reset method.
    #[error("{bdf}: reset method {method} not supported")]
    ResetUnsupported {
        /// Device.
        bdf: Bdf,
        /// Method.
        method: ResetMethod,
    },
    /// A reset ran but the device did not come back.
    #[error("{bdf}: device did not come back after {method} reset")]
    ResetFailed {
        /// Device.
        bdf: Bdf,
        /// Method.
        method: ResetMethod,
    },
    /// No driver of that name matches the device.
    #[error("{bdf}: driver {driver} does not match the device")]
    NoMatchingDriver {
        /// Device.
        bdf: Bdf,
        /// Driver.
        driver: String,
    },
    /// A config access outside the function's config space.
    #[error("{bdf}: config access at {offset:#x}+{len} out of range")]
    ConfigRange {
        /// Device.
        bdf: Bdf,
        /// Offset.
        offset: u16,
        /// Length.
        len: usize,
    },
    /// The device is gone (reads all ones).
    #[error("{0}: device is gone")]
    Gone(Bdf),
    /// This process controls no host (it is the fabric manager, or a test's stand-in).
    #[error("no host is controlled here")]
    NotHere,
    /// The host's kernel is in another process that could not be reached.
    #[error("host unreachable: {0}")]
    Unreachable(String),
    /// The host's process answered something that does not fit the question.
    #[error("bad answer from the host: {0}")]
    BadReply(String),
    /// The device cannot do what was asked.
    #[error("{bdf}: unsupported: {what}")]
    Unsupported {
        /// Device.
        bdf: Bdf,
        /// What.
        what: String,
    },
}

/// What one host's kernel can do to its PCI functions. Each primitive is a single kernel operation and
/// tolerates being repeated where the kernel does (unbinding an unbound device succeeds).
pub trait DeviceControl {
    /// Reads config space.
    ///
    /// # Errors
    /// [`DeviceError`].
    fn read_config(&self, bdf: Bdf, offset: u16, buf: &mut [u8]) -> Result<(), DeviceError>;

    /// Writes config space.
    ///
    /// # Errors
    /// [`DeviceError`].
    fn write_config(&mut self, bdf: Bdf, offset: u16, data: &[u8]) -> Result<(), DeviceError>;

    /// The driver bound to the function, if any.
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`], [`DeviceError::HostDown`].
    fn driver(&self, bdf: Bdf) -> Result<Option<String>, DeviceError>;

    /// How many programs use the function (open handles, mounts, interfaces up).
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`], [`DeviceError::HostDown`].
    fn users(&self, bdf: Bdf) -> Result<u32, DeviceError>;

    /// Unbinds the current driver (no-op when none is bound).
    ///
    /// # Errors
    /// [`DeviceError::Busy`] while in use, [`DeviceError::Timeout`] when the driver hangs.
    fn unbind(&mut self, bdf: Bdf) -> Result<(), DeviceError>;

    /// Binds `driver` (no-op when it is already bound).
    ///
    /// # Errors
    /// [`DeviceError::NoMatchingDriver`] and the like.
    fn bind(&mut self, bdf: Bdf, driver: &str) -> Result<(), DeviceError>;

    /// Resets the function with `method`.
    ///
    /// # Errors
    /// Unsupported method, timeout, or a device that does not come back.
    fn reset(&mut self, bdf: Bdf, method: ResetMethod) -> Result<(), DeviceError>;

    /// Other functions a secondary bus reset of `bdf` would hit that are in use now: local users, or
    /// lent out through the fabric.
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`], [`DeviceError::HostDown`].
    fn busy_bus_siblings(&self, bdf: Bdf) -> Result<Vec<Bdf>, DeviceError>;

    /// Whether the function's config space is at its post-reset baseline (nothing a borrower left:
    /// decode and bus mastering off, BARs as after reset).
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`], [`DeviceError::HostDown`].
    fn at_reset_baseline(&self, bdf: Bdf) -> Result<bool, DeviceError>;

    /// SR-IOV virtual functions enabled on a physical function (0 when none or no SR-IOV).
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`], [`DeviceError::HostDown`].
    fn vf_count(&self, pf: Bdf) -> Result<u16, DeviceError>;

    /// Enables `count` virtual functions on a physical function, as writing `sriov_numvfs` does.
    ///
    /// # Errors
    /// [`DeviceError::Unsupported`] without SR-IOV or above TotalVFs.
    fn enable_vfs(&mut self, pf: Bdf, count: u16) -> Result<(), DeviceError>;

    /// Functions of other hosts present here (borrowed through the fabric): where each appears and
    /// whose it is.
    ///
    /// # Errors
    /// [`DeviceError::HostDown`].
    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError>;

    /// Makes a function of another host appear here and returns the address this host's kernel gave
    /// it: the NTB driver injects its shadow, or, on a fabric that already attached the device, a
    /// rescan finds it. Adding one that is already here returns where it is.
    ///
    /// # Errors
    /// [`DeviceError`]: the host is down, or the device cannot be reached.
    fn hot_add(&mut self, remote: Fdid) -> Result<Bdf, DeviceError>;

    /// Removes the function from this host's PCI tree (sysfs `remove`); removing one that is gone
    /// succeeds.
    ///
    /// # Errors
    /// [`DeviceError::HostDown`].
    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError>;

    /// Health, as seen from this host (through the fabric for a borrowed function).
    ///
    /// # Errors
    /// [`DeviceError::HostDown`] and the like.
    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError>;

    /// The time by which the current step must be done: primitives that can block (a write the kernel
    /// does not finish) give up then with [`DeviceError::Timeout`]. A backend whose primitives cannot
    /// block ignores it.
    fn set_deadline(&mut self, until: std::time::Instant) {
        let _ = until;
    }

    /// Time spent waiting on the machine since this backend was made: writes the kernel took to
    /// finish, and waits for the kernel to enumerate, bind or release a device (at the poll interval's
    /// granularity). What `pcipool bench lab` subtracts to find pcipool's own share of a step. A
    /// backend that does not measure it says zero.
    fn waited(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// How a fabric connects a borrower to a lender's device. The workflow plan follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// An NTB: the device's BARs are mapped into the borrower through windows, the borrower's DMA
    /// window towards the device, and the borrower's kernel is given a shadow of the device.
    #[default]
    Windows,
    /// A hypervisor or a switch that attaches the whole device to the borrower in one operation
    /// (hot-plug into the borrower's PCI tree); there are no windows to map.
    WholeDevice,
}

impl std::str::FromStr for Attachment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "windows" => Ok(Self::Windows),
            "whole-device" => Ok(Self::WholeDevice),
            other => Err(format!(
                "unknown attachment '{other}' (windows, whole-device)"
            )),
        }
    }
}

/// What a fabric can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// How it connects a borrower to a device.
    pub attachment: Attachment,
}

/// What one fabric mapping gives a borrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapped {
    /// A BAR of the device, through a window into the borrower.
    Bar(u8),
    /// The borrower's DMA window, towards the device.
    Dma,
    /// The whole device, attached to the borrower.
    Device,
}

/// One mapping the fabric carries for a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricMapping {
    /// The lease it belongs to.
    pub lease: LeaseId,
    /// The device.
    pub fdid: Fdid,
    /// Who reaches it.
    pub borrower: NodeId,
    /// What it maps.
    pub mapped: Mapped,
}

/// Why the fabric refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum FabricError {
    /// A host on the path is down or unreachable.
    #[error("host {0} is down")]
    HostDown(NodeId),
    /// Out of windows, look-up-table entries or aperture.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// This fabric cannot do that (an NTB attaches no whole device; a hypervisor maps no window).
    #[error("the fabric cannot {0}")]
    Unsupported(String),
    /// The fabric manager could not be reached.
    #[error("fabric manager unreachable: {0}")]
    Unreachable(String),
    /// Anything else the fabric reports.
    #[error("{0}")]
    Failed(String),
}

/// What programs the fabric between hosts: NTB windows and look-up tables, a hypervisor's hot-plug, a
/// switch manager's bindings. Every operation is tagged with the lease it serves, so a return removes
/// exactly what its lease set up.
pub trait FabricControl {
    /// What this fabric can do.
    fn capabilities(&self) -> Capabilities;

    /// Every mapping the fabric carries now.
    ///
    /// # Errors
    /// [`FabricError`].
    fn mappings(&self) -> Result<Vec<FabricMapping>, FabricError>;

    /// Maps BAR `bar` (`size` bytes) of `fdid` into `borrower` for `lease`.
    ///
    /// # Errors
    /// [`FabricError`], e.g. no free window.
    fn map_bar(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        bar: u8,
        size: u64,
        borrower: NodeId,
    ) -> Result<(), FabricError>;

    /// Maps a DMA window of `size` bytes of `borrower`'s memory towards `fdid` for `lease`.
    ///
    /// # Errors
    /// [`FabricError`].
    fn map_dma(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        borrower: NodeId,
        size: u64,
    ) -> Result<(), FabricError>;

    /// Removes every mapping of `lease` (none left is success).
    ///
    /// # Errors
    /// [`FabricError`].
    fn unmap_lease(&mut self, lease: LeaseId) -> Result<(), FabricError>;

    /// Attaches the whole device `fdid` to `borrower` for `lease`.
    ///
    /// # Errors
    /// [`FabricError::Unsupported`] on a fabric of windows.
    fn attach(&mut self, lease: LeaseId, fdid: Fdid, borrower: NodeId) -> Result<(), FabricError>;

    /// Detaches what `lease` attached (nothing attached is success).
    ///
    /// # Errors
    /// [`FabricError::Unsupported`] on a fabric of windows.
    fn detach(&mut self, lease: LeaseId) -> Result<(), FabricError>;

    /// Time spent waiting on the fabric itself (a switch's manager, the hypervisor) since this backend
    /// was made; zero for one that does not measure it.
    fn waited(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// A borrowed control is a control: a runtime keeps its host behind a lock and lends it to each step.
impl<T: DeviceControl + ?Sized> DeviceControl for &mut T {
    fn read_config(&self, bdf: Bdf, offset: u16, buf: &mut [u8]) -> Result<(), DeviceError> {
        (**self).read_config(bdf, offset, buf)
    }
    fn write_config(&mut self, bdf: Bdf, offset: u16, data: &[u8]) -> Result<(), DeviceError> {
        (**self).write_config(bdf, offset, data)
    }
    fn driver(&self, bdf: Bdf) -> Result<Option<String>, DeviceError> {
        (**self).driver(bdf)
    }
    fn users(&self, bdf: Bdf) -> Result<u32, DeviceError> {
        (**self).users(bdf)
    }
    fn unbind(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        (**self).unbind(bdf)
    }
    fn bind(&mut self, bdf: Bdf, driver: &str) -> Result<(), DeviceError> {
        (**self).bind(bdf, driver)
    }
    fn reset(&mut self, bdf: Bdf, method: ResetMethod) -> Result<(), DeviceError> {
        (**self).reset(bdf, method)
    }
    fn busy_bus_siblings(&self, bdf: Bdf) -> Result<Vec<Bdf>, DeviceError> {
        (**self).busy_bus_siblings(bdf)
    }
    fn at_reset_baseline(&self, bdf: Bdf) -> Result<bool, DeviceError> {
        (**self).at_reset_baseline(bdf)
    }
    fn vf_count(&self, pf: Bdf) -> Result<u16, DeviceError> {
        (**self).vf_count(pf)
    }
    fn enable_vfs(&mut self, pf: Bdf, count: u16) -> Result<(), DeviceError> {
        (**self).enable_vfs(pf, count)
    }
    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError> {
        (**self).borrowed()
    }
    fn hot_add(&mut self, remote: Fdid) -> Result<Bdf, DeviceError> {
        (**self).hot_add(remote)
    }
    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        (**self).hot_remove(bdf)
    }
    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        (**self).health(bdf)
    }
    fn set_deadline(&mut self, until: std::time::Instant) {
        (**self).set_deadline(until);
    }
}

/// A borrowed fabric control is a fabric control.
impl<T: FabricControl + ?Sized> FabricControl for &mut T {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn mappings(&self) -> Result<Vec<FabricMapping>, FabricError> {
        (**self).mappings()
    }
    fn map_bar(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        bar: u8,
        size: u64,
        borrower: NodeId,
    ) -> Result<(), FabricError> {
        (**self).map_bar(lease, fdid, bar, size, borrower)
    }
    fn map_dma(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        borrower: NodeId,
        size: u64,
    ) -> Result<(), FabricError> {
        (**self).map_dma(lease, fdid, borrower, size)
    }
    fn unmap_lease(&mut self, lease: LeaseId) -> Result<(), FabricError> {
        (**self).unmap_lease(lease)
    }
    fn attach(&mut self, lease: LeaseId, fdid: Fdid, borrower: NodeId) -> Result<(), FabricError> {
        (**self).attach(lease, fdid, borrower)
    }
    fn detach(&mut self, lease: LeaseId) -> Result<(), FabricError> {
        (**self).detach(lease)
    }
}

/// The side a process does not control: a host's agent programs no fabric, the fabric manager owns no
/// host. Every primitive says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct Absent;

fn absent_host() -> DeviceError {
    DeviceError::NotHere
}

impl DeviceControl for Absent {
    fn read_config(&self, _: Bdf, _: u16, _: &mut [u8]) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn write_config(&mut self, _: Bdf, _: u16, _: &[u8]) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn driver(&self, _: Bdf) -> Result<Option<String>, DeviceError> {
        Err(absent_host())
    }
    fn users(&self, _: Bdf) -> Result<u32, DeviceError> {
        Err(absent_host())
    }
    fn unbind(&mut self, _: Bdf) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn bind(&mut self, _: Bdf, _: &str) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn reset(&mut self, _: Bdf, _: ResetMethod) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn busy_bus_siblings(&self, _: Bdf) -> Result<Vec<Bdf>, DeviceError> {
        Err(absent_host())
    }
    fn at_reset_baseline(&self, _: Bdf) -> Result<bool, DeviceError> {
        Err(absent_host())
    }
    fn vf_count(&self, _: Bdf) -> Result<u16, DeviceError> {
        Err(absent_host())
    }
    fn enable_vfs(&mut self, _: Bdf, _: u16) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError> {
        Err(absent_host())
    }
    fn hot_add(&mut self, _: Fdid) -> Result<Bdf, DeviceError> {
        Err(absent_host())
    }
    fn hot_remove(&mut self, _: Bdf) -> Result<(), DeviceError> {
        Err(absent_host())
    }
    fn health(&self, _: Bdf) -> Result<DeviceHealth, DeviceError> {
        Err(absent_host())
    }
}

fn absent_fabric(what: &str) -> FabricError {
    FabricError::Unsupported(format!("{what}: this process does not control the fabric"))
}

impl FabricControl for Absent {
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn mappings(&self) -> Result<Vec<FabricMapping>, FabricError> {
        Err(absent_fabric("list mappings"))
    }
    fn map_bar(
        &mut self,
        _: LeaseId,
        _: Fdid,
        _: u8,
        _: u64,
        _: NodeId,
    ) -> Result<(), FabricError> {
        Err(absent_fabric("map a BAR"))
    }
    fn map_dma(&mut self, _: LeaseId, _: Fdid, _: NodeId, _: u64) -> Result<(), FabricError> {
        Err(absent_fabric("map a DMA window"))
    }
    fn unmap_lease(&mut self, _: LeaseId) -> Result<(), FabricError> {
        Err(absent_fabric("unmap a lease"))
    }
    fn attach(&mut self, _: LeaseId, _: Fdid, _: NodeId) -> Result<(), FabricError> {
        Err(absent_fabric("attach a device"))
    }
    fn detach(&mut self, _: LeaseId) -> Result<(), FabricError> {
        Err(absent_fabric("detach a device"))
    }
}

/// Every host and the fabric within reach of one process: the simulator, or a test's backend. Steps
/// run in process pick the host a step names, or the fabric.
pub trait Site {
    /// One host's device control.
    type Host<'a>: DeviceControl
    where
        Self: 'a;
    /// The fabric's control.
    type Fabric<'a>: FabricControl
    where
        Self: 'a;

    /// The host `node` (a host that does not exist answers [`DeviceError::HostDown`]).
    fn host_control(&mut self, node: NodeId) -> Self::Host<'_>;

    /// The fabric.
    fn fabric_control(&mut self) -> Self::Fabric<'_>;
}
