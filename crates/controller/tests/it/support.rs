//! What the controller's tests share: the 4-host lab, its device records, a controller on a SQLite
//! file in a test directory.

use std::collections::BTreeMap;

use pcipool_backend::Inventory;
use pcipool_controller::Controller;
use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{DeviceClass, DeviceInfo, Request, Selector};
use pcipool_qualify::AccessModel;
use pcipool_sim::{FabricDesc, HostView, Sim};
use pcipool_store::{SqliteStore, Store};

pub const LAB: &str = include_str!("../../../../fabrics/lab-4.toml");
pub const BORROWER: NodeId = NodeId(3);

pub fn sim() -> Sim {
    Sim::new(&FabricDesc::parse(LAB).expect("lab parses"), 1).expect("lab builds")
}

pub fn infos(sim: &Sim) -> Vec<DeviceInfo> {
    let mut out = Vec::new();
    for host in sim.hosts() {
        let inv = HostView {
            sim,
            node: host.node,
        }
        .inventory()
        .expect("inventory");
        for d in inv.devices {
            let driver = pcipool_sim::presets::DRIVERS
                .iter()
                .find(|(_, p, ..)| {
                    d.modalias
                        .as_deref()
                        .is_some_and(|m| pcipool_qualify::modalias::glob_match(p, m))
                })
                .map(|(n, ..)| (*n).to_owned());
            out.push(DeviceInfo {
                fdid: Fdid {
                    node: host.node,
                    bdf: d.bdf,
                    vf: None,
                },
                class: d.facts.class.as_u24(),
                vendor_id: d.facts.vendor_id,
                device_id: d.facts.device_id,
                name: d.device_name.clone().unwrap_or_default(),
                labels: BTreeMap::new(),
                link_width: 8,
                link_gts_x10: 80,
                largest_bar: d
                    .facts
                    .bars
                    .iter()
                    .filter_map(|b| b.size)
                    .max()
                    .unwrap_or(0),
                models: vec![AccessModel::Lend, AccessModel::Shared],
                bars: d
                    .facts
                    .bars
                    .iter()
                    .filter(|b| b.kind != pcipool_pcie::BarKind::Io)
                    .filter_map(|b| Some((b.index, b.size?)))
                    .collect(),
                local_driver: d.driver.clone(),
                driver,
                function: None,
                local_vfs: 0,
            });
        }
    }
    out
}

pub fn setup(dir: &std::path::Path) -> (Controller<SqliteStore>, Sim) {
    let sim = sim();
    let store = SqliteStore::open(&dir.join("pool.db")).expect("store");
    let ctl = Controller::new(store, Policy::default(), sim.fabric.topology().clone());
    for info in infos(&sim) {
        ctl.register(info, vec![], 0).expect("register");
    }
    (ctl, sim)
}

pub fn nvme(count: u32) -> Request {
    Request {
        selector: Selector {
            class: Some(DeviceClass::Nvme),
            ..Selector::default()
        },
        count,
        model: AccessModel::Lend,
        borrower: BORROWER,
        max_sharers: None,
        request_id: None,
    }
}

pub fn state(ctl: &Controller<SqliteStore>, fdid: Fdid) -> &'static str {
    ctl.store()
        .device(fdid)
        .expect("read")
        .map_or("missing", |d| d.value.state.name())
}
