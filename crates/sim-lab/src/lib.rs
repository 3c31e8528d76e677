//! What each simulated host's agent reports: its devices, qualified per access model and described for
//! the scheduler. `pcipool dev`, `pcipool sim serve` and the validation suites share it, so every way of
//! running the simulated lab pools the same devices.
//!
//! A physical function that qualifies for the `vf` model brings its enabled virtual functions, each
//! reported as `PF/vfN` with the VF's own address to act on; the VFs are never lent as whole devices.
#![deny(missing_docs)]

use std::collections::BTreeMap;

use pcipool_backend::Inventory as _;
use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::schedule::DeviceInfo;
use pcipool_qualify::{AccessModel, AdapterProfile, Input, Verdict};
use pcipool_sim::{HostView, Sim};

/// What the scheduler needs to know about one function, from its inventory record.
pub fn describe(
    record: &pcipool_backend::DeviceRecord,
    fdid: Fdid,
    models: Vec<AccessModel>,
    driver: Option<String>,
    function: Option<pcipool_pcie::Bdf>,
) -> DeviceInfo {
    let link = record
        .facts
        .pci_express()
        .map(|e| (e.link.width, e.link.speed.gts_x10()));
    DeviceInfo {
        fdid,
        class: record.facts.class.as_u24(),
        vendor_id: record.facts.vendor_id,
        device_id: record.facts.device_id,
        name: record.device_name.clone().unwrap_or_default(),
        labels: BTreeMap::new(),
        link_width: link.map_or(0, |l| l.0),
        link_gts_x10: link.map_or(0, |l| l.1),
        largest_bar: record
            .facts
            .bars
            .iter()
            .filter_map(|b| b.size)
            .max()
            .unwrap_or(0),
        models,
        bars: record
            .facts
            .bars
            .iter()
            .filter(|b| b.kind != pcipool_pcie::BarKind::Io)
            .filter_map(|b| Some((b.index, b.size?)))
            .collect(),
        driver,
        function,
        local_driver: record.driver.clone(),
        local_vfs: 0,
    }
}

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
    let native = |ctx: &pcipool_qualify::DeviceContext| match &ctx.native_driver {
        pcipool_qualify::NativeDriver::Found(d) => Some(d.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for host in sim.hosts().filter(|h| only.is_none_or(|n| n == h.node)) {
        let view = HostView {
            sim,
            node: host.node,
        };
        let (Ok(inv), Some(platform)) = (view.inventory(), view.platform_facts()) else {
            continue;
        };
        // A device this host borrows is not its own to lend; VFs come with their PF below.
        let own = |r: &&pcipool_backend::DeviceRecord| {
            r.physfn.is_none() && host.devices.get(&r.bdf).is_none_or(|d| d.remote.is_none())
        };
        for record in inv.devices.iter().filter(own) {
            let ctx = pcipool_qualify::gather::device_context(&inv, record, None, Some(&aliases));
            let input = Input {
                device: &ctx,
                platform: &platform,
                profile: &profile,
                dma_window: 256 << 20,
            };
            let mut models = Vec::new();
            let mut reasons = Vec::new();
            for model in AccessModel::ALL {
                let r = pcipool_qualify::qualify(&input, model, &[]);
                if r.verdict == Verdict::Fail {
                    // Devices without SR-IOV simply have no VF model; that is not worth a reason.
                    if model != AccessModel::Vf || record.facts.sriov().is_some() {
                        reasons.extend(
                            r.findings
                                .iter()
                                .filter(|f| f.severity == pcipool_qualify::Severity::Fail)
                                .map(|f| format!("{model}: {}", f.code)),
                        );
                    }
                } else {
                    models.push(model);
                }
            }
            let pf = Fdid {
                node: host.node,
                bdf: record.bdf,
                vf: None,
            };
            if models.contains(&AccessModel::Vf) {
                let vfs = inv.devices.iter().filter(|r| r.physfn == Some(record.bdf));
                for (index, vf) in vfs.enumerate() {
                    let vf_ctx =
                        pcipool_qualify::gather::device_context(&inv, vf, None, Some(&aliases));
                    let fdid = Fdid {
                        vf: Some(u16::try_from(index).unwrap_or(u16::MAX)),
                        ..pf
                    };
                    out.push((
                        describe(
                            vf,
                            fdid,
                            vec![AccessModel::Vf],
                            native(&vf_ctx),
                            Some(vf.bdf),
                        ),
                        Vec::new(),
                    ));
                }
            }
            models.retain(|m| *m != AccessModel::Vf);
            let mut info = describe(record, pf, models, native(&ctx), None);
            info.local_vfs = u16::try_from(
                inv.devices
                    .iter()
                    .filter(|r| r.physfn == Some(record.bdf))
                    .count(),
            )
            .unwrap_or(u16::MAX);
            out.push((info, reasons));
        }
    }
    out
}
