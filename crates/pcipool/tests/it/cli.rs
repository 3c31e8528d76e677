//! The CLI against fake sysfs trees and bad input.

use pcipool_pcie::{Bdf, presets};
use pcipool_testkit::sysfs::{FakeDevice, SysfsTreeBuilder};

use crate::support::{pcipool, stderr, stdout};

fn bdf(s: &str) -> Bdf {
    s.parse().expect("test address")
}

fn fake_host(dir: &std::path::Path) -> String {
    let host = SysfsTreeBuilder::new(dir)
        .device(FakeDevice::new(bdf("00:01.0"), presets::root_port().build()).driver("pcieport"))
        .device(
            FakeDevice::new(bdf("01:00.0"), presets::nvme_ssd().build())
                .under(bdf("00:01.0"))
                .driver("nvme")
                .iommu_group(3)
                .block("nvme0n1", "259:0"),
        )
        .device(
            FakeDevice::new(bdf("00:02.0"), presets::sriov_nic().build())
                .driver("mlx5_core")
                .net("eth0"),
        )
        .mount("259:0", "/")
        .default_route("eth0")
        .build()
        .expect("fake tree");
    host.sys.to_string_lossy().into_owned()
}

#[test]
fn inventory_table_flags_root_fs_and_default_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_host(dir.path());
    let out = pcipool(&["inventory", "--sysfs-root", &sys]);
    let text = stdout(&out);
    let flagged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ROOT-FS") || l.contains("DEFAULT-ROUTE"))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        (out.status.code(), flagged),
        (Some(0), vec!["0000:00:02.0", "0000:01:00.0"])
    );
}

#[test]
fn inventory_json_keeps_documented_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_host(dir.path());
    let out = pcipool(&["inventory", "--sysfs-root", &sys, "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let nvme = json["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["bdf"] == "0000:01:00.0"))
        .expect("nvme listed");
    let got = (
        nvme["bdf"].as_str(),
        nvme["vendor_id"].as_u64(),
        nvme["device_id"].as_u64(),
        nvme["class"]["base"].as_u64(),
        nvme["capabilities"][0]["id"].as_u64(),
        nvme["capabilities"][0]["offset"].as_u64(),
        nvme["extended_capabilities"][0]["version"].as_u64(),
        nvme["backs_root_fs"].as_bool(),
    );
    assert_eq!(
        got,
        (
            Some("0000:01:00.0"),
            Some(0x144d),
            Some(0xa808),
            Some(1),
            Some(1),
            Some(0x40),
            Some(2),
            Some(true)
        )
    );
}

#[test]
fn inventory_json_sriov_total_vfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_host(dir.path());
    let out = pcipool(&["inventory", "--sysfs-root", &sys, "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let nic = json["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["bdf"] == "0000:00:02.0"))
        .expect("nic listed");
    let total = nic["extended_capabilities"]
        .as_array()
        .and_then(|caps| caps.iter().find(|c| c["kind"] == "sr_iov"))
        .and_then(|c| c["total_vfs"].as_u64());
    assert_eq!(total, Some(16));
}

#[test]
fn inspect_unknown_device_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_host(dir.path());
    let out = pcipool(&["inspect", "07:00.0", "--sysfs-root", &sys]);
    assert_eq!(
        (
            out.status.code(),
            stderr(&out).contains("no PCI function 0000:07:00.0")
        ),
        (Some(4), true)
    );
}

#[test]
fn inspect_shows_full_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = fake_host(dir.path());
    let out = pcipool(&["inspect", "01:00.0", "--sysfs-root", &sys]);
    let text = stdout(&out);
    assert_eq!(
        (
            out.status.code(),
            text.contains("Express v2 endpoint: link 8GT/s x4"),
            text.contains("SAFETY: backs the root filesystem")
        ),
        (Some(0), true, true)
    );
}

#[test]
fn inspect_malformed_address_exits_2() {
    let out = pcipool(&["inspect", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inventory_of_missing_root_exits_1_naming_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = dir.path().join("nothing");
    let out = pcipool(&["inventory", "--sysfs-root", &sys.to_string_lossy()]);
    assert_eq!(
        (out.status.code(), stderr(&out).contains("no PCI bus here")),
        (Some(1), true)
    );
}

#[test]
fn decode_malformed_dump_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.dump");
    std::fs::write(&file, "00:00.0 Host bridge\n00: 86 80 zz\n").expect("write");
    let out = pcipool(&["decode", &file.to_string_lossy()]);
    let expected = format!("{}:2: 'zz' is not a hex byte", file.display());
    assert_eq!(
        (out.status.code(), stderr(&out).contains(&expected)),
        (Some(3), true)
    );
}

#[test]
fn decode_absent_device_reports_and_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gone.dump");
    let ones = " ff".repeat(16);
    std::fs::write(
        &file,
        format!("00:00.0 X\n00:{ones}\n10:{ones}\n20:{ones}\n30:{ones}\n"),
    )
    .expect("write");
    let out = pcipool(&["decode", &file.to_string_lossy()]);
    assert_eq!(
        (out.status.code(), stdout(&out).contains("device absent")),
        (Some(3), true)
    );
}

#[test]
fn decode_json_lists_devices_with_line_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("two.dump");
    let mut text = String::new();
    pcipool_pcie::dump::write_dump(
        &mut text,
        bdf("03:00.0"),
        "NVMe",
        &presets::nvme_ssd().build().bytes,
    );
    pcipool_pcie::dump::write_dump(
        &mut text,
        bdf("04:00.0"),
        "GPU",
        &presets::gpu().build().bytes,
    );
    std::fs::write(&file, text).expect("write");
    let out = pcipool(&["decode", &file.to_string_lossy(), "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let got: Vec<(Option<&str>, Option<u64>)> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|d| (d["bdf"].as_str(), d["line"].as_u64()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("0000:03:00.0"), Some(1)),
            (Some("0000:04:00.0"), Some(259))
        ]
    );
}

#[test]
fn decode_missing_file_exits_1() {
    let out = pcipool(&["decode", "/nonexistent/pcipool/dump"]);
    assert_eq!(
        (
            out.status.code(),
            stderr(&out).contains("reading /nonexistent/pcipool/dump")
        ),
        (Some(1), true)
    );
}

#[test]
fn help_documents_exit_codes() {
    let out = pcipool(&["--help"]);
    assert!(stdout(&out).contains("3  bad input data"));
}

#[test]
fn sim_fabric_run_is_reproducible_from_its_seed() {
    let a = stdout(&pcipool(&[
        "sim",
        "fabric-run",
        "--seed",
        "5",
        "--steps",
        "500",
    ]));
    let b = stdout(&pcipool(&[
        "sim",
        "fabric-run",
        "--seed",
        "5",
        "--steps",
        "500",
    ]));
    let last = |t: &str| t.lines().last().unwrap_or("").to_owned();
    assert_eq!(
        (last(&a), last(&a).starts_with("seed 5 event-log hash ")),
        (last(&b), true)
    );
}

#[test]
fn sim_run_over_the_controller_is_reproducible_from_its_seed() {
    let a = stdout(&pcipool(&["sim", "run", "--seed", "5", "--steps", "300"]));
    let b = stdout(&pcipool(&["sim", "run", "--seed", "5", "--steps", "300"]));
    let last = |t: &str| t.lines().last().unwrap_or("").to_owned();
    assert_eq!(
        (
            last(&a),
            last(&a).starts_with("sim run: seed 5 · 300 steps")
        ),
        (last(&b), true)
    );
}

#[test]
fn sim_run_with_a_planted_bug_exits_1_with_the_replay_command() {
    let out = pcipool(&[
        "sim",
        "run",
        "--seed",
        "3",
        "--steps",
        "300",
        "--mutant",
        "skip-unmap",
    ]);
    let text = stdout(&out);
    let replay = text
        .lines()
        .find_map(|l| l.strip_prefix("replay: "))
        .unwrap_or_default()
        .to_owned();
    let args: Vec<&str> = replay.split_whitespace().skip(1).collect();
    let again = pcipool(&args);
    assert_eq!(
        (
            out.status.code(),
            replay.starts_with("pcipool sim run --seed 3 --steps "),
            again.status.code(),
            stdout(&again).lines().next().map(str::to_owned),
        ),
        (
            Some(1),
            true,
            Some(1),
            text.lines().next().map(str::to_owned)
        ),
        "{text}"
    );
}

#[test]
fn sim_inventory_json_lists_the_lab() {
    let out = pcipool(&["sim", "inventory", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let hosts = json.as_array().map(Vec::len);
    let first_device = json[0]["devices"][0]["bdf"].as_str();
    assert_eq!((hosts, first_device), (Some(4), Some("0000:03:00.0")));
}

#[test]
fn sim_bad_fabric_file_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[[host]]\nname = 1\n").expect("write");
    let out = pcipool(&["sim", "inventory", "--fabric", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn sim_unknown_fault_is_usage_error() {
    let out = pcipool(&["sim", "fabric-run", "--faults", "meteor"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_runs_the_built_suites_and_writes_a_json_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let out = crate::support::pcipool(&[
        "validate",
        "--cycles",
        "1",
        "--seed",
        "42",
        "--report",
        report.to_str().expect("utf-8"),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
            .expect("json");
    let bogus = crate::support::pcipool(&["validate", "--suite", "bogus"]);
    let no_cycles = crate::support::pcipool(&["validate", "--cycles", "0"]);
    assert_eq!(
        (
            out.status.code(),
            json["run"]["seed"].as_u64(),
            json["suites"].as_array().map(Vec::len),
            json["checks"].as_array().is_some_and(|c| c.len() > 50),
            bogus.status.code(),
            no_cycles.status.code(),
        ),
        (Some(0), Some(42), Some(7), true, Some(2), Some(2))
    );
}

#[test]
fn relay_carries_one_connection_both_ways() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let service = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut asked = String::new();
        conn.read_to_string(&mut asked).expect("read");
        conn.write_all(asked.to_uppercase().as_bytes())
            .expect("answer");
        asked
    });
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["relay", &addr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("relay");
    relay
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"get /v1/health\n")
        .expect("write");
    let out = relay.wait_with_output().expect("relay output");
    assert_eq!(
        (
            service.join().expect("service"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code()
        ),
        (
            "get /v1/health\n".to_owned(),
            "GET /V1/HEALTH\n".to_owned(),
            Some(0)
        )
    );
}
