//! The facts qualification reasons over. Backends gather them (sysfs on Linux, the model in the
//! simulator); the rules never do I/O.

use pcipool_pcie::{Bdf, DeviceFacts, ResetMethod};
use serde::Serialize;

/// How the platform's IOMMU translates DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IommuMode {
    /// No IOMMU, or disabled (no groups).
    Off,
    /// Present but in pass-through (identity) mode: no isolation between devices.
    Passthrough,
    /// Translating: per-group DMA isolation.
    Translated,
    /// Groups exist but the mode could not be determined.
    Unknown,
}

/// Host-wide facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformFacts {
    /// Kernel release.
    pub kernel_release: Option<String>,
    /// IOMMU mode.
    pub iommu: IommuMode,
    /// Why the IOMMU mode was concluded (files and values read).
    pub iommu_evidence: String,
    /// `driver_override` files exist (Linux 3.16+): native binding can be steered per device.
    pub driver_override: bool,
    /// `/sys/bus/pci/drivers_probe` exists.
    pub drivers_probe: bool,
    /// Some function exposes `sriov_totalvfs`: the kernel was built with SR-IOV support.
    pub sriov_support: bool,
    /// Vendor and device id of the host bridge at 00:00.0, for the root-complex P2P rule.
    pub host_bridge: Option<(u16, u16)>,
    /// CPU vendor string and family from `/proc/cpuinfo` (Linux trusts AMD family 17h+ for P2P).
    pub cpu: Option<(String, u32)>,
}

/// Whether a native driver for the device exists on the borrower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "driver", rename_all = "snake_case")]
pub enum NativeDriver {
    /// A module or built-in driver matches the device's modalias.
    Found(String),
    /// The borrower's module lists were read and nothing matches.
    NotFound,
    /// No borrower module list was given.
    Unknown,
}

/// Another function whose state matters (IOMMU group peer, bus sibling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    /// Address.
    pub bdf: Bdf,
    /// Bound driver.
    pub driver: Option<String>,
    /// Whether it is a bridge (bridges in a group are harmless for VFIO-style isolation).
    pub is_bridge: bool,
    /// It is visibly in use: a driver other than a stub is bound, or it backs storage or networking.
    pub in_use: bool,
}

/// One bridge on the path from the device up to the root port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathHop {
    /// Address.
    pub bdf: Bdf,
    /// ACS control request redirect: P2P requests are sent up towards the root complex.
    pub acs_request_redirect: Option<bool>,
    /// The bridge is a switch port (upstream or downstream), not a root port.
    pub switch_port: bool,
}

/// Everything the rules need about one device on its lender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceContext {
    /// Address on the lender.
    pub bdf: Bdf,
    /// Decoded config space, BAR sizes included where known.
    pub facts: DeviceFacts,
    /// Bound driver on the lender.
    pub driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Other members of the IOMMU group.
    pub group_peers: Vec<Neighbour>,
    /// Reset methods.
    pub reset_methods: Vec<ResetMethod>,
    /// The methods came from the kernel (`reset_method`) rather than derivation.
    pub reset_methods_from_kernel: bool,
    /// Other functions under the same parent bridge (a bus reset resets them too).
    pub bus_siblings: Vec<Neighbour>,
    /// Bridges from the device's parent up to the root port.
    pub upstream_path: Vec<PathHop>,
    /// Bridges from the lender's NTB adapter up to its root port (empty when unknown).
    pub ntb_path: Vec<Bdf>,
    /// Mount points on block devices the function backs.
    pub mount_points: Vec<String>,
    /// Backs the root filesystem.
    pub backs_root_fs: bool,
    /// Carries the default route.
    pub backs_default_route: bool,
    /// The device is the lender's own NTB adapter, or a bridge above it.
    pub is_fabric_path: bool,
    /// This function is an SR-IOV virtual function.
    pub is_virtual_function: bool,
    /// Native driver on the borrower.
    pub native_driver: NativeDriver,
}
