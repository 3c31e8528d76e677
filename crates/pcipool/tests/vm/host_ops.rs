//! `pcipool host` in a guest, checked through the guest kernel's own view.

use std::time::Instant;

use pcipool_vm::vm::Spec;

use crate::guest::{Guest, boot, image};

const A: &str = "0000:01:00.0";
const B: &str = "0000:02:00.0";
const NIC: &str = "0000:03:00.0";

/// Runs a pcipool command in the guest, printing how long it took (console round trip included).
fn timed(g: &mut Guest, command: &str) -> pcipool_vm::vm::Ran {
    let started = Instant::now();
    let ran = g.sh(command);
    eprintln!(
        "  {:>6.0} ms  {command} -> {}",
        started.elapsed().as_secs_f64() * 1e3,
        ran.status
    );
    ran
}

/// The driver bound to `bdf` as the kernel links it ("-" when none).
fn driver(g: &mut Guest, bdf: &str) -> String {
    g.ok(&format!(
        "l=$(readlink /sys/bus/pci/devices/{bdf}/driver) && basename $l || echo -"
    ))
}

/// The block device the kernel made for the NVMe controller at `bdf` (waiting for the driver's
/// asynchronous namespace scan), and its first 8 bytes.
fn block_and_marker(g: &mut Guest, bdf: &str) -> String {
    g.ok(&format!(
        "for i in $(seq 100); do b=$(ls /sys/bus/pci/devices/{bdf}/nvme/*/ 2>/dev/null | grep -m1 '^nvme[0-9]*n1$'); [ -n \"$b\" ] && [ -e /dev/$b ] && break; sleep 0.1; done; echo $b $(dd if=/dev/$b bs=8 count=1 2>/dev/null)"
    ))
}

fn writes(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v["writes"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| {
                    format!(
                        "{} <- {}",
                        w["path"].as_str().unwrap_or(""),
                        w["value"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn two_drives_and_a_nic(dir: &std::path::Path) -> Spec {
    Spec::new(4)
        .nvme("drive-a", &image(dir, "a.img", 64, "marker-a"), 1)
        .nvme_sriov("drive-b", &image(dir, "b.img", 64, "marker-b"), 2, 2)
        .nic(3)
}

#[test]
fn an_nvme_drive_is_detached_held_given_to_vfio_reset_removed_and_given_back() {
    let Some(mut g) = boot("nvme_lifecycle", two_drives_and_a_nic) else {
        return;
    };
    let before = (driver(&mut g, A), block_and_marker(&mut g, A));

    // A dry run lists the writes and changes nothing; the real run then makes exactly those.
    let dry = timed(
        &mut g,
        &format!("pcipool host detach {A} --dry-run -o json"),
    );
    let after_dry = driver(&mut g, A);
    let live = timed(&mut g, &format!("pcipool host detach {A} -o json"));
    let detached = (
        driver(&mut g, A),
        g.ok(&format!("cat /sys/bus/pci/devices/{A}/driver_override")),
        g.sh(&format!("ls /sys/bus/pci/devices/{A}/nvme")).status != 0,
    );
    // Given back: the native driver binds and the data is there.
    let attach = timed(&mut g, &format!("pcipool host attach {A}"));
    let attached = (
        driver(&mut g, A),
        block_and_marker(&mut g, A),
        g.ok(&format!("cat /sys/bus/pci/devices/{A}/driver_override")),
    );
    assert_eq!(
        (
            before,
            dry.status,
            after_dry,
            live.status,
            writes(&live.output) == writes(&dry.output) && writes(&dry.output).len() == 2,
            detached,
            attach.status,
            attached
        ),
        (
            ("nvme".to_owned(), "nvme0n1 marker-a".to_owned()),
            0,
            "nvme".to_owned(),
            0,
            true,
            ("-".to_owned(), "pcipool".to_owned(), true),
            0,
            (
                "nvme".to_owned(),
                "nvme0n1 marker-a".to_owned(),
                "(null)".to_owned()
            )
        )
    );

    // vfio-pci: the group's /dev/vfio node appears; attach gives the drive back.
    let vfio = timed(&mut g, &format!("pcipool host vfio {A}"));
    let group = g.ok(&format!(
        "basename $(readlink /sys/bus/pci/devices/{A}/iommu_group)"
    ));
    let held = (
        driver(&mut g, A),
        g.sh(&format!("test -c /dev/vfio/{group}")).status,
    );
    let back = timed(&mut g, &format!("pcipool host attach {A}"));
    assert_eq!(
        (
            vfio.status,
            held,
            back.status,
            driver(&mut g, A),
            block_and_marker(&mut g, A)
        ),
        (
            0,
            ("vfio-pci".to_owned(), 0),
            0,
            "nvme".to_owned(),
            "nvme0n1 marker-a".to_owned()
        )
    );

    // A reset while the native driver has the drive is refused; detached, it runs, and config
    // space reads back the drive's ids with bus mastering off.
    let bound = timed(&mut g, &format!("pcipool host reset {A} --method flr"));
    timed(&mut g, &format!("pcipool host detach {A}"));
    let reset = timed(&mut g, &format!("pcipool host reset {A} --method flr"));
    let config = g.ok(&format!("od -An -tx1 -N6 /sys/bus/pci/devices/{A}/config"));
    assert_eq!(
        (
            bound.status,
            bound.output.contains("busy"),
            reset.status,
            config.split_whitespace().collect::<Vec<_>>()[..4].to_vec(),
            u8::from_str_radix(config.split_whitespace().nth(4).unwrap_or("ff"), 16)
                .map(|c| c & 0x04)
        ),
        (5, true, 0, vec!["36", "1b", "10", "00"], Ok(0))
    );

    // Removed from the bus, then found again by a rescan below its root port, with nvme bound.
    let removed = timed(&mut g, &format!("pcipool host remove {A}"));
    let gone = g.sh(&format!("test -e /sys/bus/pci/devices/{A}")).status != 0;
    let rescan = timed(&mut g, "pcipool host rescan 0000:00:03.0");
    assert_eq!(
        (
            removed.status,
            gone,
            rescan.status,
            driver(&mut g, A),
            block_and_marker(&mut g, A)
        ),
        (0, true, 0, "nvme".to_owned(), "nvme0n1 marker-a".to_owned())
    );
}

#[test]
fn a_drive_in_use_is_refused_with_its_holder_named() {
    let Some(mut g) = boot("nvme_in_use", two_drives_and_a_nic) else {
        return;
    };
    let block = block_and_marker(&mut g, A);
    let dev = block
        .split_whitespace()
        .next()
        .unwrap_or("nvme0n1")
        .to_owned();
    g.ok(&format!(
        "sleep 600 < /dev/{dev} > /dev/null 2>&1 & echo $! > /tmp/holder"
    ));
    let open = timed(&mut g, &format!("pcipool host detach {A}"));
    g.ok("kill $(cat /tmp/holder) && sleep 0.2");
    g.ok(&format!(
        "mke2fs -q /dev/{dev} && mount -t ext2 /dev/{dev} /mnt"
    ));
    let mounted = timed(&mut g, &format!("pcipool host detach {A}"));
    let still = driver(&mut g, A);
    g.ok("umount /mnt");
    let free = timed(&mut g, &format!("pcipool host detach {A}"));
    assert_eq!(
        (
            open.status,
            open.output
                .contains(&format!("(sleep) has /dev/{dev} open")),
            mounted.status,
            mounted.output.trim().to_owned(),
            still,
            free.status,
            driver(&mut g, A)
        ),
        (
            5,
            true,
            5,
            format!("pcipool: {A} is in use: /dev/{dev} is mounted on /mnt"),
            "nvme".to_owned(),
            0,
            "-".to_owned()
        ),
        "open: {}",
        open.output
    );
}

#[test]
fn sriov_vfs_appear_with_their_own_iommu_groups_and_the_default_route_nic_is_refused() {
    let Some(mut g) = boot("sriov_and_nic", two_drives_and_a_nic) else {
        return;
    };
    let total = g.ok(&format!("cat /sys/bus/pci/devices/{B}/sriov_totalvfs"));
    let on = timed(&mut g, &format!("pcipool host vfs {B} 2"));
    let numvfs = g.ok(&format!("cat /sys/bus/pci/devices/{B}/sriov_numvfs"));
    let groups = g.ok(&format!(
        "for f in {B} 0000:02:00.1 0000:02:00.2; do basename $(readlink /sys/bus/pci/devices/$f/iommu_group); done | sort -u | wc -l"
    ));
    let qualify = timed(
        &mut g,
        "pcipool qualify 0000:02:00.1 --model vf --borrower-modules /lib/modules/$(uname -r) -o json",
    );
    let vf_verdict = serde_json::from_str::<serde_json::Value>(&qualify.output)
        .ok()
        .and_then(|v| {
            v["devices"][0]["models"][0]["verdict"]
                .as_str()
                .map(str::to_owned)
        });
    let off = timed(&mut g, &format!("pcipool host vfs {B} 0"));
    let vfs_gone = g.sh("test -e /sys/bus/pci/devices/0000:02:00.1").status != 0;
    assert_eq!(
        (
            total,
            on.status,
            numvfs,
            groups,
            vf_verdict.as_deref(),
            off.status,
            vfs_gone
        ),
        (
            "2".to_owned(),
            0,
            "2".to_owned(),
            "3".to_owned(),
            Some("pass"),
            0,
            true
        ),
        "qualify: {}",
        qualify.output
    );

    // The guest's NIC carries its default route: qualification and `host` both refuse it.
    g.ok(pcipool_vm::vm::GUEST_NET);
    let detach = timed(&mut g, &format!("pcipool host detach {NIC}"));
    let qualify = timed(&mut g, &format!("pcipool qualify {NIC} -o json"));
    assert_eq!(
        (
            detach.status,
            detach.output.trim().to_owned(),
            qualify.output.contains("BACKS_DEFAULT_ROUTE"),
            driver(&mut g, NIC)
        ),
        (
            3,
            format!("pcipool: {NIC} carries the default route: pcipool never touches it"),
            true,
            "virtio-pci".to_owned()
        )
    );
}

#[test]
fn inventory_in_the_guest_matches_the_guest_kernels_sysfs() {
    let Some(mut g) = boot("inventory", two_drives_and_a_nic) else {
        return;
    };
    let sysfs = g.ok(
        "for d in /sys/bus/pci/devices/*; do b=$(basename $d); dr=$(readlink $d/driver); gr=$(readlink $d/iommu_group); rm=$(cat $d/reset_method 2>/dev/null); tv=$(cat $d/sriov_totalvfs 2>/dev/null); echo \"$b ${dr##*/} ${gr##*/} [$rm] $tv\"; done",
    );
    let json = g.ok("pcipool inventory -o json");
    let inv: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let ours: Vec<String> = inv["devices"]
        .as_array()
        .map(|devs| {
            devs.iter()
                .map(|d| {
                    let methods: Vec<&str> = d["reset_methods"]
                        .as_array()
                        .map(|m| m.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    format!(
                        "{} {} {} [{}] {}",
                        d["bdf"].as_str().unwrap_or(""),
                        d["driver"].as_str().unwrap_or(""),
                        d["iommu_group"]
                            .as_u64()
                            .map(|g| g.to_string())
                            .unwrap_or_default(),
                        if d["reset_methods_source"] == "kernel" {
                            methods.join(" ")
                        } else {
                            String::new()
                        },
                        d["sriov"]["total_vfs"]
                            .as_u64()
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    )
                    .trim_end()
                    .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    let theirs: Vec<String> = sysfs.lines().map(|l| l.trim_end().to_owned()).collect();
    assert_eq!(ours, theirs);
}
