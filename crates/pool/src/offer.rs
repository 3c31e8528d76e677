//! What a host offers the pool: its own devices, qualified per access model and described for the
//! scheduler. The simulated hosts and a Linux host's agent both offer through here, so the same rules
//! pool the same devices everywhere.
//!
//! A physical function that qualifies for the `vf` model brings its enabled virtual functions, each
//! offered as `PF/vfN` with the VF's own address to act on; the VFs are never lent as whole devices.

use std::collections::BTreeMap;

use pcipool_backend::{DeviceRecord, HostInventory};
use pcipool_fabric::{Fdid, NodeId};
use pcipool_qualify::modalias::Alias;
use pcipool_qualify::{AccessModel, AdapterProfile, Input, PlatformFacts, Severity, Verdict};

use crate::schedule::DeviceInfo;

/// The DMA window qualification assumes a borrower maps towards a device.
pub const DMA_WINDOW: u64 = 256 << 20;

/// One host's facts, as qualification needs them.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// The host.
    pub node: NodeId,
    /// Its PCI functions.
    pub inventory: &'a HostInventory,
    /// Its platform (IOMMU, CPU).
    pub platform: &'a PlatformFacts,
    /// The fabric adapter's profile.
    pub profile: &'a AdapterProfile,
    /// The module aliases that tell which native driver a borrower would bind (None: unknown).
    pub aliases: Option<&'a [Alias]>,
}

/// What the scheduler needs to know about one function, from its inventory record.
pub fn describe(
    record: &DeviceRecord,
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

/// Qualifies the functions `own` picks and describes each with the models it passed (possibly none) and
/// the reasons for the models it did not get. A function that backs the root filesystem or carries the
/// default route fails qualification for every model, so no model is offered for it.
pub fn offer(
    host: &HostFacts<'_>,
    own: impl Fn(&DeviceRecord) -> bool,
) -> Vec<(DeviceInfo, Vec<String>)> {
    let inv = host.inventory;
    let native = |ctx: &pcipool_qualify::DeviceContext| match &ctx.native_driver {
        pcipool_qualify::NativeDriver::Found(d) => Some(d.clone()),
        _ => None,
    };
    let context =
        |r: &DeviceRecord| pcipool_qualify::gather::device_context(inv, r, None, host.aliases);
    let mut out = Vec::new();
    for record in inv.devices.iter().filter(|r| r.physfn.is_none() && own(r)) {
        let ctx = context(record);
        let input = Input {
            device: &ctx,
            platform: host.platform,
            profile: host.profile,
            dma_window: DMA_WINDOW,
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
                            .filter(|f| f.severity == Severity::Fail)
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
        let vfs: Vec<&DeviceRecord> = inv
            .devices
            .iter()
            .filter(|r| r.physfn == Some(record.bdf))
            .collect();
        if models.contains(&AccessModel::Vf) {
            for (index, vf) in vfs.iter().enumerate() {
                let fdid = Fdid {
                    vf: Some(u16::try_from(index).unwrap_or(u16::MAX)),
                    ..pf
                };
                let driver = native(&context(vf));
                out.push((
                    describe(vf, fdid, vec![AccessModel::Vf], driver, Some(vf.bdf)),
                    Vec::new(),
                ));
            }
        }
        models.retain(|m| *m != AccessModel::Vf);
        let mut info = describe(record, pf, models, native(&ctx), None);
        info.local_vfs = u16::try_from(vfs.len()).unwrap_or(u16::MAX);
        out.push((info, reasons));
    }
    out
}
