//! The agent over a Linux host (a fake tree whose attribute files act like the kernel's): its steps
//! change the host only within its pool, its fencing epochs survive a restart, and its offer leaves out
//! what keeps the host running.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use pcipool_agent::Agent;
use pcipool_agent::linux::LinuxPool;
use pcipool_agent::runtime::Reporter;
use pcipool_backend::{Step, StepContext, StepErrorKind};
use pcipool_backend_linux::write::{AttributeFiles, Mode, Scope, Writer};
use pcipool_backend_linux::{HostPaths, LinuxControl};
use pcipool_fabric::{Epoch, LeaseId, NodeId};
use pcipool_pcie::{Bdf, presets};
use pcipool_testkit::kernel::FakeKernel;
use pcipool_testkit::sysfs::{FakeDevice, SysfsTreeBuilder};
use pcipool_wire::StepRequest;

const NODE: NodeId = NodeId(1);

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

#[derive(Debug)]
struct Kernel(Arc<FakeKernel>);

impl AttributeFiles for Kernel {
    fn write(&self, path: &Path, offset: Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write(path, offset, bytes)
    }
}

/// A spare NVMe drive (02:00.0), the root disk (01:00.0), the default-route NIC (00:03.0).
fn host(dir: &Path) -> HostPaths {
    let h = SysfsTreeBuilder::new(dir)
        .device(
            FakeDevice::new(bdf("01:00.0"), presets::nvme_ssd().build())
                .driver("nvme")
                .block("nvme0n1", "259:0"),
        )
        .device(
            FakeDevice::new(bdf("02:00.0"), presets::nvme_ssd().build())
                .driver("nvme")
                .iommu_group(4)
                .block("nvme1n1", "259:1")
                .reset_method("flr bus"),
        )
        .device(FakeDevice::new(bdf("04:00.0"), presets::gpu().build()).driver("nouveau"))
        .device(
            FakeDevice::new(bdf("00:03.0"), presets::sriov_nic().build())
                .driver("mlx5_core")
                .net("eth0"),
        )
        .mount("259:0", "/")
        .default_route("eth0")
        .build()
        .expect("fake tree");
    HostPaths {
        sys: h.sys,
        proc: h.proc,
    }
}

fn agent(
    paths: &HostPaths,
    kernel: &Arc<FakeKernel>,
    state: &Path,
) -> Result<Agent<LinuxControl>, String> {
    let writer = Writer::with_files(
        Arc::new(Kernel(kernel.clone())),
        Scope::new(&paths.sys, [bdf("02:00.0"), bdf("04:00.0")]),
        Mode::Live,
    );
    let control = LinuxControl::new(paths.clone(), writer).expect("control");
    Agent::new(NODE, "secret".into(), control).with_state_dir(state)
}

fn request(step: Step, epoch: u64) -> StepRequest {
    request_for("02:00.0", step, epoch)
}

fn request_for(function: &str, step: Step, epoch: u64) -> StepRequest {
    StepRequest {
        step,
        ctx: StepContext {
            lender: NODE,
            bdf: bdf(function),
            borrower: NodeId(3),
            attached: None,
            lease: LeaseId(9),
            epoch: Epoch(epoch),
            bars: vec![],
            dma_window: 0,
            driver: None,
            lender_driver: Some("nvme".into()),
            lender_vfs: 0,
            deadline_ms: 1000,
        },
    }
}

#[test]
fn a_restarted_agent_still_refuses_a_stale_epoch_and_its_steps_change_the_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = host(&dir.path().join("host"));
    let kernel = Arc::new(FakeKernel::new(&paths.sys).native(bdf("02:00.0"), "nvme"));
    let state = dir.path().join("state");
    let first = agent(&paths, &kernel, &state).expect("agent");
    let unbound = first.execute(&request(Step::LenderUnbind, 5)).map(|_| ());
    let driver = paths.pci_devices().join("0000:02:00.0/driver").exists();
    drop(first);
    let again = agent(&paths, &kernel, &state).expect("restarted agent");
    let stale = again.execute(&request(Step::LenderRestore, 4));
    let current = again.execute(&request(Step::LenderRestore, 5)).map(|_| ());
    assert_eq!(
        (
            unbound,
            driver,
            stale.map_err(|e| e.kind),
            current,
            paths.pci_devices().join("0000:02:00.0/driver").exists()
        ),
        (Ok(()), false, Err(StepErrorKind::StaleEpoch), Ok(()), true)
    );
}

#[test]
fn a_step_whose_write_never_finishes_times_out_within_its_deadline_and_the_next_step_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = host(&dir.path().join("host"));
    let kernel = Arc::new(FakeKernel::new(&paths.sys));
    // The nvme driver's unbind blocks for good, as behind a driver stuck in its remove.
    pcipool_testkit::kernel::stall(&paths.sys.join("bus/pci/drivers/nvme/unbind")).expect("fifo");
    let agent = agent(&paths, &kernel, &dir.path().join("state")).expect("agent");
    let mut stuck = request(Step::LenderUnbind, 1);
    stuck.ctx.deadline_ms = 300;
    let started = std::time::Instant::now();
    let timed_out = agent.execute(&stuck).map(|_| ()).map_err(|e| e.kind);
    let waited = started.elapsed();
    let next = agent
        .execute(&request_for("04:00.0", Step::LenderUnbind, 1))
        .map(|_| ());
    assert_eq!(
        (
            timed_out,
            waited < std::time::Duration::from_secs(2),
            next,
            paths.pci_devices().join("0000:04:00.0/driver").exists()
        ),
        (Err(StepErrorKind::Timeout), true, Ok(()), false)
    );
}

#[test]
fn a_damaged_epochs_file_stops_the_agent_instead_of_forgetting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = host(&dir.path().join("host"));
    let kernel = Arc::new(FakeKernel::new(&paths.sys));
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("epochs.json"), "{not json").expect("damage");
    let err = agent(&paths, &kernel, &state).map(|_| ());
    assert!(
        err.as_ref()
            .is_err_and(|e| e.contains("not an epochs file")),
        "{err:?}"
    );
}

#[test]
fn the_offer_holds_only_pooled_devices_and_never_the_root_disk_or_the_route_nic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = host(&dir.path().join("host"));
    let served = |bdfs: &[&str], served: &[&str]| LinuxPool {
        node: NODE,
        paths: paths.clone(),
        pool: bdfs.iter().map(|b| bdf(b)).collect::<BTreeSet<_>>(),
        borrower_only: false,
        served_before: served.iter().map(|b| bdf(b)).collect(),
        profile: pcipool_qualify::AdapterProfile::named("dolphin-pxh830-32g").expect("profile"),
        modules: Some(dir.path().join("no-modules")),
    };
    let pool = |bdfs: &[&str]| served(bdfs, &[]);
    let offered: Vec<String> = pool(&["02:00.0"])
        .devices()
        .expect("offer")
        .iter()
        .map(|d| d.info.fdid.to_string())
        .collect();
    let unsafe_pools = [
        pool(&["01:00.0"]).check(),
        pool(&["00:03.0"]).check(),
        pool(&[]).check(),
        // Not here, never served: a mistake in the pool.
        pool(&["02:00.0", "09:00.0"]).check(),
    ];
    // Not here, served before: away on the fabric; the rest is checked as ever.
    let away = served(&["02:00.0", "09:00.0"], &["09:00.0"]).check();
    let away_root = served(&["01:00.0", "09:00.0"], &["09:00.0"]).check();
    assert_eq!(
        (
            offered,
            unsafe_pools.iter().map(Result::is_err).collect::<Vec<_>>(),
            away,
            away_root.is_err()
        ),
        (
            vec!["n1:0000:02:00.0".to_owned()],
            vec![true, true, true, true],
            Ok(BTreeSet::from([bdf("09:00.0")])),
            true
        )
    );
}
