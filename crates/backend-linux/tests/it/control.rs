//! The write path against fake trees whose attribute files act like the kernel's ([`FakeKernel`]):
//! the exact writes of each primitive, refusals with what holds a device, the kernel's errors, the
//! scope, and a write that never finishes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcipool_backend::{DeviceControl, DeviceError};
use pcipool_backend_linux::control::HELD_OVERRIDE;
use pcipool_backend_linux::write::{AttributeFiles, Mode, Scope, Writer};
use pcipool_backend_linux::{HostPaths, LinuxControl};
use pcipool_pcie::{Bdf, ResetMethod, presets};
use pcipool_testkit::kernel::{FakeKernel, stall};
use pcipool_testkit::sysfs::{FakeDevice, FakeProcess, SysfsTreeBuilder};

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

const NVME: &str = "0000:03:00.0";
const NIC: &str = "0000:00:03.0";

#[derive(Debug)]
struct Kernel(Arc<FakeKernel>);

impl AttributeFiles for Kernel {
    fn write(&self, path: &Path, offset: Option<u64>, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write(path, offset, bytes)
    }
}

/// An NVMe drive bound to `nvme` under a root port, a sibling function on its bus, an SR-IOV NIC
/// carrying the default route; `vfio-pci` loaded. `tweak` adds mounts or processes.
fn host(
    dir: &Path,
    tweak: impl FnOnce(SysfsTreeBuilder) -> SysfsTreeBuilder,
) -> (HostPaths, Arc<FakeKernel>) {
    let tree = SysfsTreeBuilder::new(dir)
        .device(FakeDevice::new(bdf("00:01.0"), presets::root_port().build()).driver("pcieport"))
        .device(
            FakeDevice::new(bdf(NVME), presets::nvme_ssd().build())
                .under(bdf("00:01.0"))
                .driver("nvme")
                .iommu_group(5)
                .block("nvme0n1", "259:0")
                .reset_method("flr bus"),
        )
        .device(
            FakeDevice::new(bdf("03:00.1"), presets::fpga().build())
                .under(bdf("00:01.0"))
                .reset_method("bus"),
        )
        .device(
            FakeDevice::new(bdf(NIC), presets::sriov_nic().build())
                .driver("mlx5_core")
                .iommu_group(7)
                .net("eth0")
                .sriov(8, 0),
        )
        .loaded_driver("vfio-pci")
        .default_route("eth0");
    let h = tweak(tree).build().expect("fake tree");
    let kernel = Arc::new(
        FakeKernel::new(&h.sys)
            .native(bdf(NVME), "nvme")
            .native(bdf(NIC), "mlx5_core"),
    );
    (
        HostPaths {
            sys: h.sys,
            proc: h.proc,
        },
        kernel,
    )
}

fn control(paths: &HostPaths, kernel: &Arc<FakeKernel>, mode: Mode, pool: &[&str]) -> LinuxControl {
    let scope = Scope::new(&paths.sys, pool.iter().map(|b| bdf(b)));
    let writer = Writer::with_files(Arc::new(Kernel(kernel.clone())), scope, mode)
        .with_deadline(Duration::from_millis(500));
    LinuxControl::new(paths.clone(), writer).expect("control")
}

fn written(c: &LinuxControl, sys: &Path) -> Vec<String> {
    c.writer()
        .take_log()
        .iter()
        .map(|w| {
            let rel = w
                .path
                .strip_prefix(sys)
                .unwrap_or(&w.path)
                .display()
                .to_string();
            format!("{rel}={}", w.value.trim())
        })
        .collect()
}

#[test]
fn hold_then_give_back_moves_the_driver_link_and_clears_the_override() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME]);
    c.hold(bdf(NVME), false).expect("hold");
    let after_hold = (
        c.driver(bdf(NVME)).expect("driver"),
        c.driver_override(bdf(NVME)).expect("override"),
    );
    let hold_writes = written(&c, &paths.sys);
    let back = c.give(bdf(NVME), None, false).expect("give back");
    let after_give = (
        c.driver(bdf(NVME)).expect("driver"),
        c.driver_override(bdf(NVME)).expect("override"),
    );
    assert_eq!(
        (
            after_hold,
            hold_writes,
            back,
            after_give,
            written(&c, &paths.sys)
        ),
        (
            (None, Some(HELD_OVERRIDE.to_owned())),
            vec![
                format!("bus/pci/devices/{NVME}/driver_override={HELD_OVERRIDE}"),
                format!("bus/pci/devices/{NVME}/driver/unbind={NVME}"),
            ],
            Some("nvme".to_owned()),
            (Some("nvme".to_owned()), None),
            vec![
                format!("bus/pci/devices/{NVME}/driver_override="),
                format!("bus/pci/drivers_probe={NVME}"),
            ],
        )
    );
}

#[test]
fn a_dry_run_lists_exactly_the_writes_a_live_run_makes_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut dry = control(&paths, &kernel, Mode::DryRun, &[NVME]);
    dry.give(bdf(NVME), Some("vfio-pci"), true)
        .expect("dry vfio");
    let planned = written(&dry, &paths.sys);
    let unchanged = dry.driver(bdf(NVME)).expect("driver");
    let mut live = control(&paths, &kernel, Mode::Live, &[NVME]);
    live.give(bdf(NVME), Some("vfio-pci"), true).expect("vfio");
    let made: Vec<String> = kernel
        .writes()
        .iter()
        .map(|(p, v)| {
            format!(
                "{}={}",
                p.strip_prefix(&paths.sys).unwrap_or(p).display(),
                v.trim()
            )
        })
        .collect();
    assert_eq!(
        (
            unchanged.as_deref(),
            planned.len(),
            made,
            live.driver(bdf(NVME)).expect("driver").as_deref()
        ),
        (Some("nvme"), 3, planned, Some("vfio-pci"))
    );
}

#[test]
fn a_mounted_or_open_device_is_refused_with_its_holders_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| {
        t.mount("259:0", "/data").process(FakeProcess {
            pid: 812,
            comm: "dd".into(),
            open: vec!["/dev/nvme0n1".into()],
            maps: vec![],
        })
    });
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME]);
    let refused = c.hold(bdf(NVME), false);
    let Err(DeviceError::Held { holders, .. }) = refused else {
        panic!("expected Held, got {refused:?}");
    };
    assert_eq!(
        (
            holders,
            kernel.writes().len(),
            c.driver(bdf(NVME)).expect("driver").as_deref()
        ),
        (
            vec![
                "/dev/nvme0n1 is mounted on /data".to_owned(),
                "pid 812 (dd) has /dev/nvme0n1 open".to_owned()
            ],
            0,
            Some("nvme")
        )
    );
}

#[test]
fn a_process_mapping_a_bar_holds_the_device_and_force_overrides_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| {
        t.process(FakeProcess {
            pid: 77,
            comm: "spdk".into(),
            open: vec![],
            maps: vec![format!(
                "/sys/devices/pci0000:00/0000:00:01.0/{NVME}/resource0"
            )],
        })
    });
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME]);
    let users = c.users(bdf(NVME)).expect("users");
    let refused = matches!(c.hold(bdf(NVME), false), Err(DeviceError::Held { .. }));
    c.hold(bdf(NVME), true).expect("forced");
    assert_eq!(
        (users, refused, c.driver(bdf(NVME)).expect("driver")),
        (1, true, None)
    );
}

#[test]
fn an_interface_carrying_routes_holds_its_nic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let c = control(&paths, &kernel, Mode::Live, &[NIC]);
    assert_eq!(
        c.holders(bdf(NIC)).expect("holders"),
        vec!["interface eth0 is up and carries routes".to_owned()]
    );
}

#[test]
fn writes_outside_the_pool_are_refused_before_reaching_the_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &[NIC]);
    let outside = c.hold(bdf(NVME), false);
    let mut none = control(&paths, &kernel, Mode::Live, &[]);
    let empty_pool = none.enable_vfs(bdf(NIC), 2);
    assert_eq!(
        (
            matches!(outside, Err(DeviceError::NotAllowed { .. })),
            matches!(empty_pool, Err(DeviceError::NotAllowed { .. })),
            kernel.writes().len()
        ),
        (true, true, 0)
    );
}

#[test]
fn the_real_sys_with_no_pool_is_refused_without_a_write() {
    // A dry run over the machine's own /sys: even a wrong check could not write here.
    let scope = Scope::new(Path::new("/sys"), []);
    let writer = Writer::new(scope, Mode::DryRun);
    let err = writer.write(pcipool_backend_linux::write::Write::text(
        "/sys/bus/pci/rescan".into(),
        "1",
    ));
    assert_eq!(
        (err.map_err(|e| e.to_string()), writer.take_log().len()),
        (
            Err("refused to write /sys/bus/pci/rescan: this process was given no pool of devices (and has adopted no borrowed one), so it writes nothing".to_owned()),
            0
        )
    );
}

#[test]
fn sriov_goes_to_zero_before_a_new_count_and_refuses_more_than_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &[NIC]);
    c.enable_vfs(bdf(NIC), 2).expect("2 vfs");
    c.enable_vfs(bdf(NIC), 4).expect("4 vfs");
    let too_many = c.enable_vfs(bdf(NIC), 9);
    assert_eq!(
        (
            written(&c, &paths.sys),
            c.vf_count(bdf(NIC)).expect("count"),
            matches!(too_many, Err(DeviceError::Unsupported { .. }))
        ),
        (
            vec![
                format!("bus/pci/devices/{NIC}/sriov_numvfs=2"),
                format!("bus/pci/devices/{NIC}/sriov_numvfs=0"),
                format!("bus/pci/devices/{NIC}/sriov_numvfs=4"),
            ],
            4,
            true
        )
    );
}

#[test]
fn reset_selects_the_method_restores_the_list_and_refuses_while_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME, "03:00.1"]);
    let bound = c.reset(bdf(NVME), ResetMethod::Flr);
    c.hold(bdf(NVME), false).expect("hold");
    let _ = written(&c, &paths.sys);
    c.reset(bdf(NVME), ResetMethod::Flr).expect("flr");
    let unsupported = c.reset(bdf(NVME), ResetMethod::Pm);
    assert_eq!(
        (
            matches!(bound, Err(DeviceError::Busy { .. })),
            written(&c, &paths.sys),
            matches!(unsupported, Err(DeviceError::ResetUnsupported { .. }))
        ),
        (
            true,
            vec![
                format!("bus/pci/devices/{NVME}/reset_method=flr"),
                format!("bus/pci/devices/{NVME}/reset=1"),
                format!("bus/pci/devices/{NVME}/reset_method=flr bus"),
            ],
            true
        )
    );
}

#[test]
fn a_kernel_without_reset_method_or_reset_files_makes_a_reset_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The root port 00:01.0 has neither `reset_method` (before Linux 5.15) nor `reset`.
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &["00:01.0"]);
    let err = c.reset(bdf("00:01.0"), ResetMethod::Flr);
    // The root port has a driver bound; a bare one shows the missing attributes.
    let bare = {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = SysfsTreeBuilder::new(dir.path())
            .device(FakeDevice::new(bdf("05:00.0"), presets::gpu().build()))
            .kernel_release("5.10.0-old")
            .build()
            .expect("tree");
        let paths = HostPaths {
            sys: h.sys,
            proc: h.proc,
        };
        let mut c = control(
            &paths,
            &Arc::new(FakeKernel::new(&paths.sys)),
            Mode::Live,
            &["05:00.0"],
        );
        (
            c.reset(bdf("05:00.0"), ResetMethod::Flr),
            c.reset_methods(bdf("05:00.0")),
        )
    };
    assert_eq!(
        (
            matches!(err, Err(DeviceError::Busy { .. })),
            matches!(bare.0, Err(DeviceError::ResetUnsupported { .. })),
            bare.1.ok().flatten()
        ),
        (true, true, None)
    );
}

#[test]
fn a_bus_reset_is_refused_while_a_sibling_is_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME, "03:00.1"]);
    let refused = c.reset(bdf("03:00.1"), ResetMethod::Bus);
    c.hold(bdf(NVME), false).expect("hold the sibling");
    let idle = c.reset(bdf("03:00.1"), ResetMethod::Bus);
    assert_eq!(
        (
            refused.map_err(|e| e.to_string()),
            idle.map_err(|e| e.to_string())
        ),
        (
            Err(format!(
                "0000:03:00.1 is in use: sibling {NVME} on the same bus is in use"
            )),
            Ok(())
        )
    );
}

#[test]
fn the_kernels_refusal_is_a_typed_error_naming_the_attribute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    kernel.refuse("sriov_numvfs", 16);
    let mut c = control(&paths, &kernel, Mode::Live, &[NIC]);
    let err = c.enable_vfs(bdf(NIC), 2);
    let Err(DeviceError::Refused {
        attribute,
        value,
        reason,
        ..
    }) = err
    else {
        panic!("expected Refused, got {err:?}");
    };
    assert_eq!(
        (attribute.as_str(), value.as_str(), reason.contains("busy")),
        ("sriov_numvfs", "2", true)
    );
}

#[test]
fn remove_takes_the_function_off_the_bus_and_again_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME]);
    c.hot_remove(bdf(NVME)).expect("remove");
    let again = c.hot_remove(bdf(NVME));
    assert_eq!(
        (
            paths.pci_devices().join(NVME).exists(),
            again.is_ok(),
            kernel.writes().len()
        ),
        (false, true, 1)
    );
}

#[test]
fn a_write_that_never_finishes_times_out_and_the_next_write_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, kernel) = host(dir.path(), |t| t);
    // The nvme driver's unbind: a driver stuck in its remove.
    stall(&paths.sys.join("bus/pci/drivers/nvme/unbind")).expect("fifo");
    let mut c = control(&paths, &kernel, Mode::Live, &[NVME, NIC]);
    let started = Instant::now();
    let stuck = c.hold(bdf(NVME), false);
    let waited = started.elapsed();
    let other = c.enable_vfs(bdf(NIC), 1);
    assert_eq!(
        (
            matches!(stuck, Err(DeviceError::Timeout { .. })),
            waited < Duration::from_secs(3),
            other.is_ok(),
            c.writer().abandoned()
        ),
        (true, true, true, 1)
    );
}
