//! What each simulated host's agent reports: its devices, qualified per access model and described for
//! the scheduler. `pcipool dev`, `pcipool sim serve` and the validation suites share it, so every way of
//! running the simulated lab pools the same devices.
//!
//! A physical function that qualifies for the `vf` model brings its enabled virtual functions, each
//! reported as `PF/vfN` with the VF's own address to act on; the VFs are never lent as whole devices.
#![deny(missing_docs)]

use pcipool_backend::Inventory as _;
use pcipool_fabric::NodeId;
use pcipool_pool::offer::{HostFacts, offer};
use pcipool_pool::schedule::DeviceInfo;
use pcipool_qualify::AdapterProfile;
use pcipool_sim::{HostView, Sim};

pub use pcipool_pool::offer::describe;

/// Qualifies the simulated devices of one host (every host when `only` is None) and describes them for
/// the scheduler: what an agent reports. A physical function that qualifies for the `vf` model brings
/// its enabled virtual functions, each reported as `PF/vfN` with the VF's own address to act on; the VFs
/// are never lent as whole devices.
pub fn qualified_devices(sim: &Sim, only: Option<NodeId>) -> Vec<(DeviceInfo, Vec<String>)> {
    let profile = AdapterProfile::named("dolphin-pxh830-32g").unwrap_or_else(|| AdapterProfile {
        name: "unknown".into(),
        description: String::new(),
        direct: None,
        lut: None,
        aperture: None,
        requester_slots: None,
        sources: vec![],
    });
    let aliases = pcipool_sim::presets::driver_aliases();
    let mut out = Vec::new();
    for host in sim.hosts().filter(|h| only.is_none_or(|n| n == h.node)) {
        let view = HostView {
            sim,
            node: host.node,
        };
        let (Ok(inv), Some(platform)) = (view.inventory(), view.platform_facts()) else {
            continue;
        };
        let facts = HostFacts {
            node: host.node,
            inventory: &inv,
            platform: &platform,
            profile: &profile,
            aliases: Some(&aliases),
        };
        // A device this host borrows is not its own to lend.
        out.extend(offer(&facts, |r| {
            host.devices.get(&r.bdf).is_none_or(|d| d.remote.is_none())
        }));
    }
    out
}
