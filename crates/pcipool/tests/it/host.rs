//! `pcipool inventory` on this machine against `lspci -nnk`: same devices, classes, ids and drivers, and
//! the devices behind `/` and the default route flagged.

use crate::support::{pcipool, run_lspci};

#[derive(Debug, PartialEq, Eq)]
struct Row {
    slot: String,
    class: String,
    ids: String,
    driver: Option<String>,
}

/// `00:02.0 Mass storage controller [0180]: Red Hat, Inc. Virtio ... [1af4:1042] (rev 01)` + driver line.
fn lspci_rows(text: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for line in text.lines() {
        if let Some(driver) = line.trim().strip_prefix("Kernel driver in use: ") {
            if let Some(row) = rows.last_mut() {
                row.driver = Some(driver.to_owned());
            }
            continue;
        }
        if line.starts_with(['\t', ' ']) || line.is_empty() {
            continue;
        }
        let slot = line.split_whitespace().next().unwrap_or("").to_owned();
        let class = line
            .split(" [")
            .nth(1)
            .map(|c| c[..4].to_owned())
            .unwrap_or_default();
        let ids = line
            .rsplit_once(" (rev")
            .map_or(line, |(head, _)| head)
            .rsplit_once('[')
            .map(|(_, ids)| ids.trim_end_matches(']').to_owned())
            .unwrap_or_default();
        rows.push(Row {
            slot,
            class,
            ids,
            driver: None,
        });
    }
    rows
}

fn pcipool_rows(json: &serde_json::Value) -> Vec<Row> {
    json["devices"]
        .as_array()
        .map(|devs| {
            devs.iter()
                .map(|d| {
                    let bdf = d["bdf"].as_str().unwrap_or("");
                    Row {
                        // lspci omits domain 0000.
                        slot: bdf.strip_prefix("0000:").unwrap_or(bdf).to_owned(),
                        class: format!(
                            "{:02x}{:02x}",
                            d["class"]["base"].as_u64().unwrap_or(0),
                            d["class"]["sub"].as_u64().unwrap_or(0)
                        ),
                        ids: format!(
                            "{:04x}:{:04x}",
                            d["vendor_id"].as_u64().unwrap_or(0),
                            d["device_id"].as_u64().unwrap_or(0)
                        ),
                        driver: d["driver"].as_str().map(str::to_owned),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn inventory_json() -> serde_json::Value {
    let out = pcipool(&["inventory", "--output", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn inventory_matches_lspci_nnk() {
    if !std::path::Path::new("/sys/bus/pci/devices").is_dir() {
        let why = "no /sys/bus/pci on this machine";
        pcipool_testkit::skip::skipped("inventory_matches_lspci_nnk", why);
        return;
    }
    let theirs = lspci_rows(&run_lspci(&["-nnk"]));
    let ours = pcipool_rows(&inventory_json());
    assert_eq!(ours, theirs);
}

/// The block device `/` is mounted from, found with `findmnt`-free means: the root entry of
/// /proc/self/mountinfo gives major:minor, /sys/dev/block/M:m names the disk.
fn root_disk_name() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dev = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&"/")).then(|| f[2].to_owned())
    })?;
    let target = std::fs::read_link(format!("/sys/dev/block/{dev}")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The PCI function behind the root disk, found through sysfs links.
pub fn root_disk_bdf() -> Option<String> {
    let disk = root_disk_name()?;
    let path = std::fs::canonicalize(format!("/sys/class/block/{disk}")).ok()?;
    path.components()
        .filter_map(|c| c.as_os_str().to_str().map(str::to_owned))
        .rfind(|c| c.len() == 12 && c.contains('.'))
}

/// The PCI function behind the interface with the IPv4 default route.
pub fn default_route_bdf() -> Option<String> {
    let route = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
    })?;
    let path = std::fs::canonicalize(format!("/sys/class/net/{iface}")).ok()?;
    path.components()
        .filter_map(|c| c.as_os_str().to_str().map(str::to_owned))
        .rfind(|c| c.len() == 12 && c.contains('.'))
}

#[test]
fn inventory_flags_the_root_disk_device() {
    let Some(disk) = root_disk_name() else {
        let why = "root is not on a block device here";
        pcipool_testkit::skip::skipped("inventory_flags_the_root_disk_device", why);
        return;
    };
    let json = inventory_json();
    let flagged: Vec<&serde_json::Value> = json["devices"]
        .as_array()
        .map(|d| d.iter().filter(|d| d["backs_root_fs"] == true).collect())
        .unwrap_or_default();
    let names: Vec<&str> = flagged
        .iter()
        .flat_map(|d| d["block_devices"].as_array().into_iter().flatten())
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!((flagged.len(), names.contains(&disk.as_str())), (1, true));
}

#[test]
fn inventory_flags_the_default_route_device() {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let Some(iface) = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
    }) else {
        let why = "no IPv4 default route on this machine";
        pcipool_testkit::skip::skipped("inventory_flags_the_default_route_device", why);
        return;
    };
    let json = inventory_json();
    let carriers: Vec<&serde_json::Value> = json["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter(|d| d["backs_default_route"] == true)
                .collect()
        })
        .unwrap_or_default();
    let ifaces: Vec<&str> = carriers
        .iter()
        .flat_map(|d| d["net_interfaces"].as_array().into_iter().flatten())
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(ifaces, vec![iface.as_str()]);
}
