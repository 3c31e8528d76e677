//! Reads this machine's real `/sys` (read-only). The devices here are conventional PCI virtio
//! functions; the checks hold on any Linux host with a PCI bus.

use pcipool_backend::Inventory;
use pcipool_backend_linux::{HostPaths, LinuxHost};

#[test]
fn real_inventory_matches_sysfs_device_list() {
    let paths = HostPaths::real();
    if !paths.pci_devices().is_dir() {
        let why = "no /sys/bus/pci on this machine";
        pcipool_testkit::skip::skipped("real_inventory_matches_sysfs_device_list", why);
        return;
    }
    let inv = LinuxHost::new(paths.clone())
        .inventory()
        .expect("real inventory");
    let mut listed: Vec<String> = std::fs::read_dir(paths.pci_devices())
        .expect("readable")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let got: Vec<String> = inv.devices.iter().map(|d| d.bdf.to_string()).collect();
    assert_eq!(got, listed);
}

#[test]
fn real_inventory_vendor_ids_match_sysfs_files() {
    let paths = HostPaths::real();
    if !paths.pci_devices().is_dir() {
        let why = "no /sys/bus/pci on this machine";
        pcipool_testkit::skip::skipped("real_inventory_vendor_ids_match_sysfs_files", why);
        return;
    }
    let inv = LinuxHost::new(paths.clone())
        .inventory()
        .expect("real inventory");
    for d in &inv.devices {
        let text =
            std::fs::read_to_string(paths.pci_devices().join(d.bdf.to_string()).join("vendor"))
                .expect("vendor file");
        assert_eq!(
            format!("0x{:04x}", d.facts.vendor_id),
            text.trim(),
            "{}",
            d.bdf
        );
    }
}
