//! The inventory of one host: its PCI functions and the facts around them, as any backend reports them.

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
