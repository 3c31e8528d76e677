use pcipool_backend::{Inventory, ResetMethodSource};
use pcipool_backend_linux::{HostPaths, LinuxHost, SysfsError};
use pcipool_pcie::{Bdf, ResetMethod, presets};
use pcipool_testkit::sysfs::{FakeDevice, SysfsTreeBuilder};

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

/// Root port 00:01.0 -> switch upstream 01:00.0 -> downstream 02:00.0 -> NVMe 03:00.0 (root fs),
/// plus a NIC on the root bus carrying the default route and a GPU alone under root port 00:02.0.
fn lab_host(dir: &std::path::Path) -> HostPaths {
    SysfsTreeBuilder::new(dir)
        .device(
            FakeDevice::new(bdf("00:01.0"), presets::root_port().build())
                .driver("pcieport")
                .iommu_group(1),
        )
        .device(
            FakeDevice::new(bdf("00:02.0"), presets::root_port().build())
                .driver("pcieport")
                .iommu_group(2),
        )
        .device(
            FakeDevice::new(bdf("01:00.0"), presets::switch_upstream_port().build())
                .under(bdf("00:01.0"))
                .driver("pcieport")
                .iommu_group(3),
        )
        .device(
            FakeDevice::new(bdf("02:00.0"), presets::switch_downstream_port().build())
                .under(bdf("01:00.0"))
                .driver("pcieport")
                .iommu_group(4),
        )
        .device(
            FakeDevice::new(bdf("03:00.0"), presets::nvme_ssd().build())
                .under(bdf("02:00.0"))
                .driver("nvme")
                .iommu_group(5)
                .block("nvme0n1", "259:0")
                .reset_method("flr bus"),
        )
        .device(
            FakeDevice::new(bdf("04:00.0"), presets::gpu().build())
                .under(bdf("00:02.0"))
                .iommu_group(6),
        )
        .device(
            FakeDevice::new(bdf("04:00.1"), presets::fpga().build())
                .under(bdf("00:02.0"))
                .iommu_group(6),
        )
        .device(
            FakeDevice::new(bdf("00:03.0"), presets::sriov_nic().build())
                .driver("mlx5_core")
                .iommu_group(7)
                .net("eth0"),
        )
        .mount("259:0", "/")
        .default_route("eth0")
        .kernel_release("5.10.0-old")
        .build()
        .map(|h| HostPaths {
            sys: h.sys,
            proc: h.proc,
        })
        .expect("fake tree")
}

fn inventory(dir: &tempfile::TempDir) -> pcipool_backend::HostInventory {
    LinuxHost::new(lab_host(dir.path()))
        .inventory()
        .expect("inventory of fake tree")
}

fn device<'a>(
    inv: &'a pcipool_backend::HostInventory,
    s: &str,
) -> &'a pcipool_backend::DeviceRecord {
    inv.devices
        .iter()
        .find(|d| d.bdf == bdf(s))
        .expect("device in inventory")
}

#[test]
fn inventory_lists_every_device_in_address_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let got: Vec<String> = inv.devices.iter().map(|d| d.bdf.to_string()).collect();
    assert_eq!(
        got,
        vec![
            "0000:00:01.0",
            "0000:00:02.0",
            "0000:00:03.0",
            "0000:01:00.0",
            "0000:02:00.0",
            "0000:03:00.0",
            "0000:04:00.0",
            "0000:04:00.1"
        ]
    );
}

#[test]
fn nvme_behind_switch_has_parent_chain_to_root_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let chain: Vec<String> = device(&inv, "03:00.0")
        .parent_chain
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(chain, vec!["0000:00:01.0", "0000:01:00.0", "0000:02:00.0"]);
}

#[test]
fn nvme_holding_root_mount_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let nvme = device(&inv, "03:00.0");
    assert_eq!(
        (
            nvme.backs_root_fs,
            nvme.block_devices[0].mount_points.clone()
        ),
        (true, vec!["/".to_owned()])
    );
}

#[test]
fn nic_with_default_route_is_flagged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let nic = device(&inv, "00:03.0");
    assert_eq!(
        (nic.backs_default_route, nic.net_interfaces.clone()),
        (true, vec!["eth0".to_owned()])
    );
}

#[test]
fn gpu_backs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let gpu = device(&inv, "04:00.0");
    assert_eq!((gpu.backs_root_fs, gpu.backs_default_route), (false, false));
}

#[test]
fn driver_and_iommu_group_come_from_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let nvme = device(&inv, "03:00.0");
    assert_eq!(
        (nvme.driver.as_deref(), nvme.iommu_group),
        (Some("nvme"), Some(5))
    );
}

#[test]
fn iommu_group_peers_list_the_other_function() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    assert_eq!(
        device(&inv, "04:00.0").iommu_group_peers,
        vec![bdf("04:00.1")]
    );
}

#[test]
fn bar_sizes_come_from_resource_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let sizes: Vec<Option<u64>> = device(&inv, "04:00.0")
        .facts
        .bars
        .iter()
        .map(|b| b.size)
        .collect();
    assert_eq!(
        sizes,
        vec![Some(16 << 20), Some(256 << 20), Some(32 << 20), Some(128)]
    );
}

#[test]
fn kernel_reset_method_file_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let nvme = device(&inv, "03:00.0");
    assert_eq!(
        (nvme.reset_methods.clone(), nvme.reset_methods_source),
        (
            vec![ResetMethod::Flr, ResetMethod::Bus],
            ResetMethodSource::Kernel
        )
    );
}

#[test]
fn derived_reset_for_gpu_with_sibling_has_no_bus_reset() {
    // The GPU (no FLR, PM NoSoftRst+) shares bus 04 with the FPGA: the kernel refuses a bus reset.
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let gpu = device(&inv, "04:00.0");
    assert_eq!(
        (gpu.reset_methods.clone(), gpu.reset_methods_source),
        (vec![], ResetMethodSource::Derived)
    );
}

#[test]
fn missing_reset_method_on_new_kernel_means_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = SysfsTreeBuilder::new(dir.path())
        .device(FakeDevice::new(bdf("05:00.0"), presets::nvme_ssd().build()))
        .kernel_release("6.1.0-18-amd64")
        .build()
        .expect("fake tree");
    let inv = LinuxHost::new(HostPaths {
        sys: host.sys,
        proc: host.proc,
    })
    .inventory()
    .expect("inventory");
    let d = &inv.devices[0];
    assert_eq!(
        (d.reset_methods.clone(), d.reset_methods_source),
        (vec![], ResetMethodSource::Kernel)
    );
}

#[test]
fn link_state_comes_from_sysfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = inventory(&dir);
    let link = &device(&inv, "03:00.0").link;
    assert_eq!(
        (link.current_speed.as_deref(), link.current_width),
        (Some("8.0 GT/s PCIe"), Some(4))
    );
}

#[test]
fn truncated_config_file_keeps_ids_and_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nvme = FakeDevice::new(bdf("05:00.0"), presets::nvme_ssd().build());
    nvme.config_len = 16;
    let host = SysfsTreeBuilder::new(dir.path())
        .device(nvme)
        .build()
        .expect("fake tree");
    let inv = LinuxHost::new(HostPaths {
        sys: host.sys,
        proc: host.proc,
    })
    .inventory()
    .expect("inventory");
    let d = &inv.devices[0];
    assert_eq!(
        (d.facts.vendor_id, d.config_error.is_some()),
        (0x144d, true)
    );
}

#[test]
fn missing_pci_bus_is_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = LinuxHost::new(HostPaths::under(dir.path())).inventory();
    assert!(matches!(err, Err(SysfsError::NoPciBus { .. })));
}

#[test]
fn garbage_resource_file_becomes_sysfs_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = SysfsTreeBuilder::new(dir.path())
        .device(FakeDevice::new(bdf("05:00.0"), presets::nvme_ssd().build()))
        .build()
        .expect("fake tree");
    let resource = host.sys.join("bus/pci/devices/0000:05:00.0/resource");
    std::fs::write(&resource, "not hex at all\n").expect("write fake file");
    let inv = LinuxHost::new(HostPaths {
        sys: host.sys,
        proc: host.proc,
    })
    .inventory()
    .expect("inventory");
    assert_eq!(inv.devices[0].sysfs_warnings.len(), 1);
}
