//! The README's lab commands as an operator types them: `pcipool lab up` with the shipped 3-host lab
//! (n1 and n2 lend two NVMe drives each, one with SR-IOV; n3 borrows), `pcipool borrow --class nvme
//! --host n3`, `pcipool lab exec`, `pcipool release`, `pcipool lab status`, `pcipool lab kill` and
//! `start` (a failure drill), `pcipool validate --lab-dir` (the validation suites on real kernels),
//! `pcipool lab down`, each a process of its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::guest::room;

const PCIPOOL: &str = env!("CARGO_BIN_EXE_pcipool");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn pcipool(args: &[&str], url: &str, token: &str) -> Run {
    let out = Command::new(PCIPOOL)
        .args(args)
        .env("PCIPOOL_URL", url)
        .env("PCIPOOL_TOKEN", token)
        .output()
        .expect("pcipool runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The value after `key` on the banner line that starts with it.
fn banner_value(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_shipped_lab_lends_a_drive_to_n3_through_the_cli_and_goes_down() {
    let _room = room(3);
    if let Err(pcipool_vm::VmError::Unavailable(why)) = pcipool_vm::tools::ensure() {
        pcipool_testkit::skip::skipped("lab_cli", &why);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
        .to_string();
    let started = Instant::now();
    let mut up = Command::new(PCIPOOL)
        .args([
            "lab",
            "up",
            "--dir",
            &d,
            "--port",
            &port,
            "--agent-timeout",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pcipool lab up starts");
    let mut lines = BufReader::new(up.stdout.take().expect("piped")).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let last = line.starts_with("  pcipool lab status");
        banner.push(line);
        if last {
            break;
        }
    }
    let (url, token) = (
        banner_value(&banner, "controller at "),
        banner_value(&banner, "admin token: "),
    );
    assert!(
        url.starts_with("http://127.0.0.1:") && !token.is_empty(),
        "lab up printed {banner:#?}"
    );
    eprintln!(
        "lab_cli: the shipped lab was up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let status = pcipool(&["lab", "status", "--dir", &d, "--json"], &url, &token);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let hosts: Vec<(String, bool, usize)> = status["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["node"].as_str().unwrap_or_default().to_owned(),
                h["running"].as_bool().unwrap_or(false),
                h["drives"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();

    // Qualification inside a guest refuses its management NIC (the default route's), at root port 6.
    let qualify = pcipool(
        &[
            "lab",
            "exec",
            "--dir",
            &d,
            "n3",
            "--",
            "pcipool qualify -o json",
        ],
        &url,
        &token,
    );
    let nic_refused =
        qualify.stdout.contains("0000:06:00.0") && qualify.stdout.contains("BACKS_DEFAULT_ROUTE");

    let borrowed = pcipool(&["borrow", "--class", "nvme", "--host", "n3"], &url, &token);
    // "lease 1 granted: n2:0000:01:00.0 appears on the borrower as 0000:01:00.0 (epoch 1)"
    let words: Vec<&str> = borrowed.stdout.split_whitespace().collect();
    let (lent, at) = (
        words.get(3).copied().unwrap_or_default().to_owned(),
        words.get(9).copied().unwrap_or_default().to_owned(),
    );
    let serial = match lent.as_str() {
        "n1:0000:01:00.0" => "n1a",
        "n2:0000:01:00.0" => "n2a",
        "n2:0000:02:00.0" => "n2b",
        other => panic!("borrow: {other:?}: {} {}", borrowed.stdout, borrowed.stderr),
    };
    let read = format!(
        "b=$(ls /sys/bus/pci/devices/{at}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); cat /sys/bus/pci/devices/{at}/nvme/*/serial | tr -d ' '; dd if=/dev/$b bs=12 count=1 2>/dev/null"
    );
    let on_n3 = pcipool(
        &["lab", "exec", "--dir", &d, "n3", "--", &read],
        &url,
        &token,
    );
    let write = format!(
        "b=$(ls /sys/bus/pci/devices/{at}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); printf 'from-n3.....' | dd of=/dev/$b bs=12 count=1 conv=notrunc 2>/dev/null; sync"
    );
    let wrote = pcipool(
        &["lab", "exec", "--dir", &d, "n3", "--", &write],
        &url,
        &token,
    );
    let released = pcipool(&["release", "1"], &url, &token);
    let (lender, home) = lent.split_once(':').expect("an fdid");
    let home_read = read.replace(at.as_str(), home);
    let on_lender = pcipool(
        &["lab", "exec", "--dir", &d, lender, "--", &home_read],
        &url,
        &token,
    );
    let failing = pcipool(
        &["lab", "exec", "--dir", &d, "n3", "--", "exit 7"],
        &url,
        &token,
    );
    let verify = pcipool(&["audit", "verify"], &url, &token);
    let unknown = pcipool(
        &["lab", "exec", "--dir", &d, "n9", "--", "true"],
        &url,
        &token,
    );

    let validated = validate(&d, &url, &token);

    // A failure drill: n3 loses power, then boots again with its agent.
    let running = |name: &str| {
        let status = pcipool(&["lab", "status", "--dir", &d, "--json"], &url, &token);
        serde_json::from_str::<serde_json::Value>(&status.stdout)
            .ok()
            .and_then(|s| {
                s["hosts"]
                    .as_array()?
                    .iter()
                    .find(|h| h["node"] == name)
                    .and_then(|h| h["running"].as_bool())
            })
    };
    let killed = pcipool(&["lab", "kill", "--dir", &d, "n3"], &url, &token);
    let after_kill = running("n3");
    let started = pcipool(&["lab", "start", "--dir", &d, "n3"], &url, &token);
    let after_start = running("n3");

    let all_home = pcipool(&["lab", "status", "--dir", &d, "--json"], &url, &token);
    let down = pcipool(&["lab", "down", "--dir", &d], &url, &token);
    let exited = (0..300).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        up.try_wait().ok().flatten()
    });
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let qemus_left = Command::new("pgrep")
        .args(["-f", &format!("qemu-system-x86_64.*{d}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert_eq!(
        (
            (hosts, nic_refused),
            (
                borrowed.code,
                on_n3.stdout.trim().to_owned(),
                wrote.code,
                released.code,
                on_lender.stdout.trim().to_owned(),
            ),
            (
                failing.code,
                unknown.code,
                (killed.code, after_kill, started.code, after_start),
                verify.code,
                down.code,
                exited.map(|s| s.code()),
                rest.last().cloned(),
                qemus_left,
            ),
        ),
        (
            (
                vec![
                    ("n1".to_owned(), true, 2),
                    ("n2".to_owned(), true, 2),
                    ("n3".to_owned(), true, 0)
                ],
                true
            ),
            (
                Some(0),
                format!("{serial}\n{serial:.<12}"),
                Some(0),
                Some(0),
                format!("{serial}\nfrom-n3....."),
            ),
            (
                Some(7),
                Some(4),
                (Some(0), Some(false), Some(0), Some(true)),
                Some(0),
                Some(0),
                Some(Some(0)),
                Some("lab down".to_owned()),
                String::new(),
            ),
        ),
        "borrow: {} {}\nqualify: {}\nrelease: {}\nstart: {}",
        borrowed.stdout,
        borrowed.stderr,
        qualify.stdout.chars().take(400).collect::<String>(),
        released.stderr,
        started.stderr,
    );
    validated.check();
    // After every suite and fault, each lendable drive is home: QEMU has its image in its lender.
    let status: serde_json::Value = serde_json::from_str(&all_home.stdout).expect("status JSON");
    let away: Vec<String> = status["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| {
            h["drives"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(move |d| d["held_by"] != h["node"])
                .map(|d| format!("{}: {}", d["serial"], d["held_by"]))
        })
        .collect();
    assert_eq!(away, Vec::<String>::new());
}

/// What `pcipool validate --lab-dir` found: the suites on all drives, recovery on one.
struct Validated {
    suites: (Option<i32>, serde_json::Value, String),
    recovery: (Option<i32>, serde_json::Value),
    html: String,
}

/// Runs the validation suites against the lab: cycles, reset, rebind and isolation on every lendable
/// drive (one cycle per model), then recovery (real faults: QEMU killed and booted again, a link cut, agents
/// killed, the controller killed mid-lend) on one drive.
fn validate(d: &str, url: &str, token: &str) -> Validated {
    let dir = tempfile::tempdir().expect("tempdir");
    let (json, html, recovery) = (
        dir.path().join("suites.json"),
        dir.path().join("suites.html"),
        dir.path().join("recovery.json"),
    );
    let started = Instant::now();
    let suites = pcipool(
        &[
            "validate",
            "--lab-dir",
            d,
            "--suite",
            "cycles",
            "--suite",
            "reset",
            "--suite",
            "rebind",
            "--suite",
            "isolation",
            "--cycles",
            "1",
            "--report",
            &json.display().to_string(),
            "--report",
            &html.display().to_string(),
        ],
        url,
        token,
    );
    let between = started.elapsed();
    let recovered = pcipool(
        &[
            "validate",
            "--lab-dir",
            d,
            "--suite",
            "recovery",
            "--device",
            "n1:0000:01:00.0",
            "--report",
            &recovery.display().to_string(),
        ],
        url,
        token,
    );
    eprintln!(
        "lab_cli: validate (cycles, reset, rebind, isolation) {:.1} s, recovery {:.1} s\n{}\n{}",
        between.as_secs_f64(),
        (started.elapsed() - between).as_secs_f64(),
        suites.stdout,
        recovered.stdout
    );
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    Validated {
        suites: (suites.code, read(&json), suites.stderr),
        recovery: (recovered.code, read(&recovery)),
        html: std::fs::read_to_string(&html).unwrap_or_default(),
    }
}

impl Validated {
    fn check(&self) {
        let checks = |report: &serde_json::Value, which: &dyn Fn(&serde_json::Value) -> bool| {
            report["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| which(c))
                .map(|c| {
                    format!(
                        "{} / {} on {}",
                        c["suite"].as_str().unwrap_or_default(),
                        c["name"].as_str().unwrap_or_default(),
                        c["target"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
        };
        let failed = |c: &serde_json::Value| c["passed"] == false && c["not_run"].is_null();
        let (code, report, stderr) = &self.suites;
        // The guest kernel offers `bus` for each drive, and its reset with it fails (ENOTTY): a
        // finding about this platform, reported as a failure of that method alone.
        let bus_refused = report["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| failed(c))
            .all(|c| {
                c["evidence"].as_array().into_iter().flatten().any(|e| {
                    e.as_str()
                        .is_some_and(|e| e.contains("Inappropriate ioctl"))
                })
            });
        // Real lend and return times: every cycle's, each above 50 ms (a kernel's hot-plug; a
        // return's reset) and below a minute. Each drive cycles once under `lend` and once under
        // `shared` (a shared lease hot-plugs nothing, so only lends under `lend` count).
        let timed = |prefix: &str| {
            report["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .map(|c| c["micros"].as_u64().unwrap_or(0))
                .filter(|us| (50_000..60_000_000).contains(us))
                .count()
        };
        let per_suite: Vec<(String, u64, u64)> = report["suites"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["suite"].as_str().unwrap_or_default().to_owned(),
                    s["passed"].as_u64().unwrap_or(0),
                    s["failed"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let (recovery_code, recovery) = &self.recovery;
        let not_run = checks(recovery, &|c| !c["not_run"].is_null());
        assert_eq!(
            (
                (*code, checks(report, &failed), bus_refused),
                per_suite
                    .iter()
                    .map(|(s, p, f)| (s.as_str(), *p > 0, *f))
                    .collect::<Vec<_>>(),
                (timed("lent under lend"), timed("returned to available")),
                (
                    self.html.contains(r#"<table id="latency-figures">"#),
                    self.html.contains("<td>lend</td><td class=\"num\">6</td>")
                ),
                (*recovery_code, checks(recovery, &failed), not_run),
                checks(recovery, &|c| c["passed"] == true).iter().any(|c| c
                    .contains("controller killed mid-lend: the next controller finished the lend")),
            ),
            (
                (
                    Some(1),
                    vec![
                        "reset / bus reset on n1:0000:01:00.0".to_owned(),
                        "reset / bus reset on n2:0000:01:00.0".to_owned(),
                        "reset / bus reset on n2:0000:02:00.0".to_owned(),
                    ],
                    true
                ),
                vec![
                    ("cycles", true, 0),
                    ("reset", true, 3),
                    ("rebind", true, 0),
                    ("isolation", true, 0)
                ],
                (3, 6),
                (true, true),
                (
                    Some(0),
                    Vec::new(),
                    vec![
                        "recovery / device hang on n1:0000:01:00.0".to_owned(),
                        "recovery / reset failure on n1:0000:01:00.0".to_owned()
                    ]
                ),
                true,
            ),
            "validate: {stderr}"
        );
    }
}
