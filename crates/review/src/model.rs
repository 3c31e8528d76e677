//! What a review is made from: the system as one of the sources saw it (a simulated fabric, or a live
//! pool through its API). Everything here is a fact read, not a conclusion; [`crate::report`] concludes.

use pcipool_fabric::{Link, NodeId};
use pcipool_pool::schedule::DeviceInfo;
use serde::Serialize;

/// The whole PCIe system of a pool.
#[derive(Debug, Clone, Serialize)]
pub struct System {
    /// Where it was read from (`fabrics/rack-64.toml (simulated)`, `http://...`).
    pub source: String,
    /// Fabric switches.
    pub switches: Vec<String>,
    /// Fabric links: adapter to switch, adapter to adapter, switch to switch.
    pub links: Vec<Link>,
    /// Hosts, in node order.
    pub hosts: Vec<HostPart>,
}

/// One host.
#[derive(Debug, Clone, Serialize)]
pub struct HostPart {
    /// Node id.
    pub node: NodeId,
    /// Name.
    pub name: String,
    /// Its NTB adapters' profiles, by adapter index.
    pub adapters: Vec<String>,
    /// Its platform, when known.
    pub platform: Option<Platform>,
    /// Its agent: `in process (simulated)`, `up`, `lost`, `none`.
    pub agent: String,
    /// The devices it lends.
    pub devices: Vec<DevicePart>,
}

/// A host's platform: what its root complex, CPU, OS and kernel are, and what they support.
#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    /// The root complex (the host bridge at 00:00.0), named from `pci.ids` when it can be.
    pub root_complex: String,
    /// CPU vendor and family.
    pub cpu: String,
    /// Operating system.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// The agent's version.
    pub agent_version: String,
    /// IOMMU mode and why it was concluded.
    pub iommu: String,
    /// What the kernel offers the pool (driver_override, drivers_probe, SR-IOV), each with a yes or no.
    pub supports: Vec<(String, bool)>,
}

/// One device a host lends.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePart {
    /// What the scheduler knows about it (ids, class, link, BARs, models it qualified for, driver).
    pub info: DeviceInfo,
    /// Its pool state (`available`, `lent`, ... ; `simulated` for a fabric file).
    pub state: String,
    /// Reset methods, best first, when known.
    pub reset_methods: Vec<String>,
    /// Why it failed qualification for the models it did not get (`lend: P2P_UNTRUSTED`).
    pub reasons: Vec<String>,
    /// Qualification findings with their remedies, when the source ran the rules itself.
    pub findings: Vec<FindingLine>,
}

/// One qualification finding that is not a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingLine {
    /// The access model judged.
    pub model: String,
    /// Stable code.
    pub code: String,
    /// `warn` or `fail`.
    pub severity: String,
    /// What was found.
    pub message: String,
    /// What to do about it.
    pub remedy: String,
}
