//! `pcipool host` in a guest.

use pcipool_vm::vm::Spec;

use crate::guest::{boot, image};

#[test]
fn explore() {
    let Some(mut g) = boot("explore", |dir| {
        Spec::new(4)
            .nvme("drive-a", &image(dir, "a.img", 64, "marker-a"), 1)
            .nvme_sriov("drive-b", &image(dir, "b.img", 64, "marker-b"), 2, 2)
            .nic(3)
    }) else {
        return;
    };
    for c in [
        "ls -l /sys/bus/pci/devices/",
        "ls /dev",
        "cat /sys/bus/pci/devices/*/reset_method",
        "ls /sys/kernel/iommu_groups/",
        "pcipool inventory",
    ] {
        let r = g.sh(c);
        eprintln!("$ {c}\n{}(status {})", r.output, r.status);
    }
}
