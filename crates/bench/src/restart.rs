//! A controller restart over a large store: leases and audit records bulk-loaded, then the store opened
//! the way a restarting controller opens it, until the API could serve.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use pcipool_controller::Controller;
use pcipool_fabric::{Fdid, LeaseId};
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::DeviceInfo;
use pcipool_qualify::AccessModel;
use pcipool_sim::{FabricDesc, LAB_4};
use pcipool_store::{SqliteStore, Store};

use crate::BenchError;

/// A store holding `leases` active leases and `audit` audit records is opened the
/// way a restarting controller opens it (migrations, device table, unfinished workflows, audit tail) and
/// the API is ready to serve; prints the time.
///
/// # Errors
/// Setup failures.
pub fn run(leases: u64, audit: u64) -> Result<String, BenchError> {
    let mut out = String::new();
    use pcipool_pool::{DeviceState, Epoch, Lease};
    use pcipool_store::DeviceRow;

    let dir = crate::scratch_dir("restart")?;
    let path = dir.join("pool.db");
    let setup = std::time::Instant::now();
    {
        let store = SqliteStore::open(&path).map_err(BenchError::context("store"))?;
        let mut rows = Vec::new();
        for i in 0..leases {
            let node = pcipool_fabric::NodeId(u32::try_from(1 + i / 256).unwrap_or(u32::MAX));
            let bus = u8::try_from(i % 256).unwrap_or(0);
            let fdid = Fdid {
                node,
                bdf: pcipool_pcie::Bdf::new(0, bus, 0, 0)
                    .map_err(BenchError::context("address"))?,
                vf: None,
            };
            let lease = Lease {
                id: LeaseId(i + 1),
                borrower: pcipool_fabric::NodeId(100_000),
                tenant: "bench".into(),
                model: AccessModel::Lend,
                epoch: Epoch(i + 1),
                expires_at: u64::MAX / 2,
                ttl: 86_400_000,
                request: None,
                attached: None,
            };
            let info = DeviceInfo {
                fdid,
                class: 0x01_08_02,
                vendor_id: 0x144d,
                device_id: 0xa808,
                name: "nvme".into(),
                labels: BTreeMap::new(),
                link_width: 4,
                link_gts_x10: 80,
                largest_bar: 0x4000,
                models: vec![AccessModel::Lend],
                bars: vec![(0, 0x4000)],
                driver: Some("nvme".into()),
                function: None,
                local_driver: None,
                local_vfs: 0,
            };
            rows.push((
                fdid,
                DeviceRow {
                    info,
                    state: DeviceState::Lent { lease },
                },
            ));
        }
        let entries: Vec<pcipool_pool::AuditEntry<'_>> = (0..audit)
            .map(|i| pcipool_pool::AuditEntry {
                at: i,
                actor: "bench",
                target: "n1:0000:00:00.0",
                action: "heartbeat",
                before: "",
                after: "",
                result: "ok",
            })
            .collect();
        store
            .bulk_load(&rows, &entries)
            .map_err(BenchError::context("bulk load"))?;
    }
    let setup = setup.elapsed();
    // The restart: what a controller does before it serves again.
    let started = std::time::Instant::now();
    let store = SqliteStore::open(&path).map_err(BenchError::context("reopen"))?;
    let devices = store.devices().map_err(BenchError::context("devices"))?;
    let active: usize = devices.iter().map(|d| d.value.state.leases().len()).sum();
    let unfinished = store
        .unfinished_workflows()
        .map_err(BenchError::context("workflows"))?;
    let tail = store
        .last_audit()
        .map_err(BenchError::context("audit tail"))?;
    let lab_topology = FabricDesc::parse(LAB_4).map_err(BenchError::context("the built-in lab"))?;
    let controller = Controller::new(store, Policy::default(), lab_topology.topology);
    let ready = started.elapsed();
    drop(controller);
    writeln!(
        out,
        "restart benchmark: {leases} leases, {audit} audit records (built in {:.1} s)",
        setup.as_secs_f64()
    )?;
    writeln!(
        out,
        "  store reopened, {active} active leases loaded, {} unfinished workflows, audit tail at seq {}: ready in {:.3} s   (target < 2 s)",
        unfinished.len(),
        tail.map_or(0, |r| r.seq),
        ready.as_secs_f64()
    )?;
    std::fs::remove_dir_all(&dir).map_err(BenchError::context("removing the scratch directory"))?;
    Ok(out)
}
