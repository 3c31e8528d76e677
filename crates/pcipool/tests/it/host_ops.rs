//! `pcipool host` against fake trees: a dry run prints the exact writes and changes nothing, the disk
//! behind `/` and the NIC of the default route are refused (exit 3), a held device is refused with its
//! holders (exit 5). Real kernels run these operations in the VM tests (`tests/vm`).

use pcipool_pcie::{Bdf, presets};
use pcipool_testkit::sysfs::{FakeDevice, FakeProcess, SysfsTreeBuilder};

use crate::support::{pcipool, stderr, stdout};

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

/// A root-fs NVMe (01:00.0), a spare NVMe (02:00.0) that `fio` may have open, the default-route NIC.
fn host(dir: &std::path::Path, fio: bool) -> String {
    let tree = SysfsTreeBuilder::new(dir)
        .device(
            FakeDevice::new(bdf("01:00.0"), presets::nvme_ssd().build())
                .driver("nvme")
                .block("nvme0n1", "259:0"),
        )
        .device(
            FakeDevice::new(bdf("02:00.0"), presets::nvme_ssd().build())
                .driver("nvme")
                .block("nvme1n1", "259:1")
                .reset_method("flr bus"),
        )
        .device(
            FakeDevice::new(bdf("00:03.0"), presets::sriov_nic().build())
                .driver("mlx5_core")
                .net("eth0"),
        )
        .mount("259:0", "/")
        .default_route("eth0")
        .loaded_driver("vfio-pci");
    let tree = match fio {
        true => tree.process(FakeProcess {
            pid: 4242,
            comm: "fio".into(),
            open: vec!["/dev/nvme1n1".into()],
            maps: vec![],
        }),
        false => tree,
    };
    tree.build()
        .expect("fake tree")
        .sys
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_dry_run_prints_the_writes_in_order_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = host(dir.path(), false);
    let before = std::fs::read_to_string(format!(
        "{sys}/bus/pci/devices/0000:02:00.0/driver_override"
    ))
    .expect("override");
    let out = pcipool(&[
        "host",
        "vfio",
        "02:00.0",
        "--dry-run",
        "--sysfs-root",
        &sys,
        "-o",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    let writes: Vec<String> = json["writes"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| {
                    let path = w["path"].as_str().unwrap_or("");
                    format!(
                        "{}={}",
                        path.strip_prefix(&sys).unwrap_or(path),
                        w["value"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let after = std::fs::read_to_string(format!(
        "{sys}/bus/pci/devices/0000:02:00.0/driver_override"
    ))
    .expect("override");
    assert_eq!(
        (
            out.status.code(),
            writes,
            json["dry_run"].as_bool(),
            after == before
        ),
        (
            Some(0),
            vec![
                "/bus/pci/devices/0000:02:00.0/driver_override=vfio-pci".to_owned(),
                "/bus/pci/devices/0000:02:00.0/driver/unbind=0000:02:00.0".to_owned(),
                "/bus/pci/drivers_probe=0000:02:00.0".to_owned(),
            ],
            Some(true),
            true
        )
    );
}

#[test]
fn the_root_disk_and_the_default_route_nic_are_refused_with_exit_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = host(dir.path(), false);
    let disk = pcipool(&[
        "host",
        "detach",
        "01:00.0",
        "--dry-run",
        "--force",
        "--sysfs-root",
        &sys,
    ]);
    let nic = pcipool(&[
        "host",
        "vfs",
        "00:03.0",
        "2",
        "--dry-run",
        "--sysfs-root",
        &sys,
    ]);
    assert_eq!(
        (
            disk.status.code(),
            stderr(&disk).trim().to_owned(),
            nic.status.code(),
            stderr(&nic).trim().to_owned()
        ),
        (
            Some(3),
            "pcipool: 0000:01:00.0 backs the root filesystem: pcipool never touches it".to_owned(),
            Some(3),
            "pcipool: 0000:00:03.0 carries the default route: pcipool never touches it".to_owned()
        )
    );
}

#[test]
fn an_open_device_is_refused_with_its_holder_and_exit_5_and_force_goes_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = host(dir.path(), true);
    let refused = pcipool(&["host", "detach", "02:00.0", "--sysfs-root", &sys]);
    let forced = pcipool(&[
        "host",
        "detach",
        "02:00.0",
        "--force",
        "--dry-run",
        "--sysfs-root",
        &sys,
    ]);
    assert_eq!(
        (
            refused.status.code(),
            stderr(&refused).trim().to_owned(),
            forced.status.code(),
            stdout(&forced).lines().nth(1).map(str::to_owned)
        ),
        (
            Some(5),
            "pcipool: 0000:02:00.0 is in use: pid 4242 (fio) has /dev/nvme1n1 open".to_owned(),
            Some(0),
            Some("  forced past: pid 4242 (fio) has /dev/nvme1n1 open".to_owned())
        )
    );
}

#[test]
fn an_unknown_function_is_an_error_and_a_bad_address_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = host(dir.path(), false);
    let missing = pcipool(&["host", "reset", "07:00.0", "--sysfs-root", &sys]);
    let bad = pcipool(&["host", "reset", "zz:00.0", "--sysfs-root", &sys]);
    assert_eq!(
        (
            missing.status.code(),
            stderr(&missing).trim().to_owned(),
            bad.status.code()
        ),
        (
            Some(4),
            "pcipool: no PCI function 0000:07:00.0 on this host".to_owned(),
            Some(2)
        )
    );
}

#[test]
fn a_linux_agent_needs_a_pool_and_refuses_the_root_disk_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = host(dir.path(), false);
    let no_pool = pcipool(&[
        "agent",
        "--node",
        "n1",
        "--backend",
        "linux",
        "--sysfs-root",
        &sys,
    ]);
    let root_disk = pcipool(&[
        "agent",
        "--node",
        "n1",
        "--backend",
        "linux",
        "--pool",
        "01:00.0",
        "--sysfs-root",
        &sys,
    ]);
    assert_eq!(
        (
            no_pool.status.code(),
            stderr(&no_pool).contains("needs --pool"),
            root_disk.status.code(),
            stderr(&root_disk).trim().to_owned()
        ),
        (
            Some(3),
            true,
            Some(3),
            "pcipool: 0000:01:00.0 backs the root filesystem: pcipool never touches it".to_owned()
        )
    );
}
