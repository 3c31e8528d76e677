//! What a host looks like to pcipool, whichever backend reports it.
//!
//! The controller and agents build against these types and traits alone; the Linux backend
//! (`pcipool-backend-linux`, over a sysfs root) and the simulator fill them in. This first cut holds
//! the read-only side: the inventory of one host. Device control (bind, unbind, reset, hot-plug) and
//! NTB control join the [`Inventory`] trait's siblings as the lending workflow arrives.
//!
//! # Layout
//! - [`DeviceRecord`], [`HostInventory`]: one host's devices and the facts around them.
//! - [`Inventory`]: the trait a backend implements to produce them.
#![deny(missing_docs)]

use pcipool_pcie::{Bdf, DeviceFacts, ResetMethod};
use serde::Serialize;

/// Where a device's reset methods came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetMethodSource {
    /// The kernel's own list (sysfs `reset_method`).
    Kernel,
    /// Derived from config space and bus position, as the kernel would.
    Derived,
}

/// SR-IOV state as the kernel exposes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SriovState {
    /// `sriov_totalvfs`.
    pub total_vfs: u16,
    /// `sriov_numvfs`.
    pub num_vfs: u16,
    /// `sriov_drivers_autoprobe`.
    pub drivers_autoprobe: Option<bool>,
}

/// Link state as the kernel reports it (`current_link_speed` etc.), verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct KernelLink {
    /// e.g. "8.0 GT/s PCIe".
    pub current_speed: Option<String>,
    /// Lanes.
    pub current_width: Option<u8>,
    /// e.g. "16.0 GT/s PCIe".
    pub max_speed: Option<String>,
    /// Lanes.
    pub max_width: Option<u8>,
}

/// A block device a PCI function backs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// Kernel name, e.g. `nvme0n1` or `vda1`.
    pub name: String,
    /// `major:minor`.
    pub dev: Option<String>,
    /// Where filesystems on it are mounted.
    pub mount_points: Vec<String>,
}

/// One PCI function of a host, with everything the pool needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    /// Address.
    pub bdf: Bdf,
    /// Decoded config space (ids, class, BARs with sizes, capabilities).
    #[serde(flatten)]
    pub facts: DeviceFacts,
    /// Why the config space could not be decoded, when ids came from sysfs files instead.
    pub config_error: Option<String>,
    /// Vendor name from pci.ids.
    pub vendor_name: Option<String>,
    /// Device name from pci.ids.
    pub device_name: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// `modalias`, which native-driver matching uses.
    pub modalias: Option<String>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// Other functions in the same IOMMU group.
    pub iommu_group_peers: Vec<Bdf>,
    /// NUMA node (None for -1).
    pub numa_node: Option<u32>,
    /// Reset methods, in the kernel's order.
    pub reset_methods: Vec<ResetMethod>,
    /// Where `reset_methods` came from.
    pub reset_methods_source: ResetMethodSource,
    /// SR-IOV state.
    pub sriov: Option<SriovState>,
    /// The physical function, when this is a VF.
    pub physfn: Option<Bdf>,
    /// Link state from sysfs.
    pub link: KernelLink,
    /// Bridges from the root port down to the device's parent.
    pub parent_chain: Vec<Bdf>,
    /// Block devices this function backs.
    pub block_devices: Vec<BlockDevice>,
    /// Network interfaces this function backs.
    pub net_interfaces: Vec<String>,
    /// The root filesystem lives on this function (directly or under device-mapper/md).
    pub backs_root_fs: bool,
    /// An interface carrying the default route sits on this function.
    pub backs_default_route: bool,
    /// Non-fatal problems reading this device's sysfs files (config-space problems are in `warnings`).
    pub sysfs_warnings: Vec<String>,
}

/// One host's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostInventory {
    /// Host name.
    pub hostname: Option<String>,
    /// Kernel release.
    pub kernel_release: Option<String>,
    /// Devices in address order.
    pub devices: Vec<DeviceRecord>,
}

/// Health of one function as its host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The device cannot do what was asked.
    #[error("{bdf}: unsupported: {what}")]
    Unsupported {
        /// Device.
        bdf: Bdf,
        /// What.
        what: String,
    },
}

/// The host-side device operations a lend or return workflow is made of. Every step is idempotent:
/// unbinding an unbound device, or removing a removed one, succeeds.
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

    /// Removes the function from the host's PCI tree (sysfs `remove`).
    ///
    /// # Errors
    /// [`DeviceError`].
    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError>;

    /// Re-discovers a removed function (rescan, or the NTB hot-add on a borrower).
    ///
    /// # Errors
    /// [`DeviceError`].
    fn hot_add(&mut self, bdf: Bdf) -> Result<(), DeviceError>;

    /// Health.
    ///
    /// # Errors
    /// [`DeviceError::HostDown`] and the like.
    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError>;
}

/// A backend that can list a host's PCI functions.
pub trait Inventory {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads every PCI function of the host.
    ///
    /// # Errors
    /// When the host's PCI bus cannot be listed at all; per-device problems go into
    /// [`DeviceRecord::sysfs_warnings`] instead.
    fn inventory(&self) -> Result<HostInventory, Self::Error>;
}

/// One step of a lend or return workflow, as the executor on the hosts and the fabric carries it out.
/// Every step is idempotent: running it again after a crash does no harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Lender: refuse if local users still hold the device (the operator must quiesce first).
    LenderQuiesceCheck,
    /// Borrower: refuse a voluntary release while programs on the borrower still use the device (an
    /// unreachable borrower passes: nothing there can use it any more).
    BorrowerQuiesceCheck,
    /// Lender: unbind the local driver.
    LenderUnbind,
    /// Lender: reset with the best qualified method (escalated: the sibling-affecting fallback).
    LenderReset,
    /// Lender: reset with the escalated method after a failed first reset.
    LenderResetEscalated,
    /// Fabric: map the device's BARs into the borrower.
    MapBars,
    /// Fabric: map the borrower's DMA window towards the device.
    MapDma,
    /// Borrower: hot-add the shadow device.
    BorrowerHotAdd,
    /// Borrower: bind the native driver.
    BorrowerBind,
    /// Borrower: verify the device answers with the right ids.
    BorrowerVerify,
    /// Borrower: unbind the driver.
    BorrowerUnbind,
    /// Borrower: hot-remove the shadow device.
    BorrowerHotRemove,
    /// Fabric: remove every mapping of the lease (after this a stale borrower cannot reach the device).
    Unmap,
    /// Lender: verify config space is back to its post-reset baseline.
    LenderVerify,
    /// Lender: bind the driver that was bound before the lend, so the device is back as it was for local
    /// use (no-op when none was bound).
    LenderRestore,
}

/// Which host carries out a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host the device sits in.
    Lender,
    /// The host that borrows it.
    Borrower,
}

impl Step {
    /// Which host runs the step. Fabric mappings are programmed from the lender's adapter: it owns the
    /// device's windows, so it can cut off a borrower that stopped answering without the borrower's help.
    pub fn side(self) -> Side {
        match self {
            Self::LenderQuiesceCheck
            | Self::LenderUnbind
            | Self::LenderReset
            | Self::LenderResetEscalated
            | Self::MapBars
            | Self::MapDma
            | Self::Unmap
            | Self::LenderVerify
            | Self::LenderRestore => Side::Lender,
            Self::BorrowerQuiesceCheck
            | Self::BorrowerHotAdd
            | Self::BorrowerBind
            | Self::BorrowerVerify
            | Self::BorrowerUnbind
            | Self::BorrowerHotRemove => Side::Borrower,
        }
    }
}

/// What a step needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StepContext {
    /// Lender node id.
    pub lender: u32,
    /// Device address on the lender.
    pub bdf: Bdf,
    /// Borrower node id.
    pub borrower: u32,
    /// Address of the shadow device on the borrower.
    pub shadow: Bdf,
    /// Lease number (mappings are tagged with it).
    pub lease: u64,
    /// Fencing epoch the lease carries.
    pub epoch: u64,
    /// Memory BARs: (index, size).
    pub bars: Vec<(u8, u64)>,
    /// DMA window size.
    pub dma_window: u64,
    /// Native driver to bind on the borrower.
    pub driver: Option<String>,
    /// Driver bound on the lender before the lend (rebound by the return).
    #[serde(default)]
    pub lender_driver: Option<String>,
    /// SR-IOV virtual functions the lender had enabled (a reset of the physical function disables them;
    /// the return enables them again).
    #[serde(default)]
    pub lender_vfs: u16,
}

/// Carries out workflow steps (the agents and the fabric manager, or the simulator in one process).
pub trait Executor {
    /// Runs one step.
    ///
    /// # Errors
    /// A message saying what failed (the journal records it).
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<(), String>;
}
