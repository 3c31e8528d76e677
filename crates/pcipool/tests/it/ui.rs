//! The dashboard in a real browser: Debian's chromium driven by playwright-core (`ui_check.js`),
//! against a pool of processes (`pcipool server`, the simulated fabric, four agents).

use crate::cluster::{Cluster, Spec};

const TENANT: &str = "tenant-secret-0123456789";

/// Where the test command installs playwright-core (outside the source tree).
fn playwright() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME")?;
    let modules = std::path::Path::new(&home).join(".cache/pcipool/npm/node_modules");
    modules.join("playwright-core").is_dir().then_some(modules)
}

/// playwright-core's modules when it and Debian's chromium are both there; otherwise `test` prints
/// SKIPPED with the reason.
fn browser(test: &str) -> Option<std::path::PathBuf> {
    let Some(modules) = playwright() else {
        pcipool_testkit::skip::skipped(
            test,
            "no playwright-core under ~/.cache/pcipool/npm (the test command installs it)",
        );
        return None;
    };
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        pcipool_testkit::skip::skipped(test, "no /usr/bin/chromium");
        return None;
    }
    Some(modules)
}

#[test]
fn the_dashboard_shows_a_cli_lend_live_and_offers_a_tenant_no_actions() {
    let Some(modules) = browser("dashboard_in_chromium") else {
        return;
    };
    let c = Cluster::launch(&Spec {
        tokens: Some(&[("acme", "tenant", TENANT)]),
        ..Spec::default()
    });
    let shots = std::env::var("PCIPOOL_UI_SHOTS").unwrap_or_default();
    // The system review of the 64-host rack, written by the CLI, is opened in the same browser.
    let review_dir = tempfile::tempdir().expect("temp dir");
    let fabric = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fabrics/rack-64.toml");
    let reviewed = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["review", "--fabric", fabric, "--dir"])
        .arg(review_dir.path())
        .output()
        .expect("pcipool review runs");
    let review_text = String::from_utf8_lossy(&reviewed.stdout).into_owned();
    assert!(
        reviewed.status.success()
            && review_text.contains("oversubscribed: switch:sw1 - switch:sw0"),
        "{review_text}{}",
        String::from_utf8_lossy(&reviewed.stderr)
    );
    let out = std::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/ui_check.js"))
        .env("NODE_PATH", &modules)
        .env("UI_URL", &c.url)
        .env("UI_ADMIN", c.token("admin.token"))
        .env("UI_TENANT", TENANT)
        .env("UI_PCIPOOL", env!("CARGO_BIN_EXE_pcipool"))
        .env("UI_SHOTS", &shots)
        .env("UI_DEVICES", "9")
        .env("UI_REVIEW", review_dir.path().join("review.html"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from the browser: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("dashboard: {result}");
    assert_eq!(
        (
            result["errors"].as_array().map(Vec::len),
            result["lentBefore"].as_u64(),
            result["drainButtons"].as_u64().is_some_and(|n| n > 0),
            result["lentMs"].as_u64().is_some_and(|ms| ms <= 2000),
            // The lend plan of the simulated NTB fabric has eight steps, all done.
            result["timelineSteps"].as_u64(),
            result["tenantButtons"].as_u64(),
            result["tenantRole"].as_str(),
            // The lease shows as an arc on the topology, among all four hosts.
            result["topologyLeases"].as_u64(),
            result["topologyHosts"].as_u64(),
            // The review names the rack's two switch uplinks and its 16 lenders' adapter links.
            result["reviewOversubscribed"].as_u64(),
        ),
        (
            Some(0),
            Some(0),
            true,
            true,
            Some(8),
            Some(0),
            Some("tenant"),
            Some(1),
            Some(4),
            Some(18),
        ),
        "{result}"
    );
}

/// `pcipool dev` on the 1,024-host fabric (16,384 devices; without the data path, which would run a
/// thread per drive), until it prints where it serves; stopped when dropped.
struct LargeDev {
    child: std::process::Child,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for LargeDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn large_dev() -> LargeDev {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args([
            "dev",
            "--no-data-path",
            "--listen",
            "127.0.0.1:0",
            "--fabric",
        ])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fabrics/fabric-1024.toml"
        ))
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pcipool dev starts");
    let stdout = child.stdout.take().expect("piped");
    let (mut url, mut token) = (String::new(), String::new());
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        if let Some(rest) = line.split("served at ").nth(1) {
            url = rest.trim().to_owned();
        }
        if let Some(rest) = line.trim().strip_prefix("admin token: ") {
            token = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            break;
        }
    }
    assert!(!url.is_empty() && !token.is_empty(), "dev did not serve");
    LargeDev {
        child,
        url,
        token,
        _dir: dir,
    }
}

#[test]
fn the_dashboard_renders_the_16384_device_pool() {
    let Some(modules) = browser("dashboard_at_scale") else {
        return;
    };
    let dev = large_dev();
    let out = std::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/ui_scale.js"))
        .env("NODE_PATH", &modules)
        .env("UI_URL", &dev.url)
        .env("UI_ADMIN", &dev.token)
        .env(
            "UI_SHOTS",
            std::env::var("PCIPOOL_UI_SHOTS").unwrap_or_default(),
        )
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the browser: {stdout}"));
    // The first screen's time is printed, not asserted: a debug build on a busy CI machine is no
    // benchmark (the figure for the note comes from this line).
    eprintln!("dashboard on 16,384 devices: {result}");
    assert_eq!(
        (
            result["errors"].as_array().map(Vec::len),
            result["rows"].as_u64(),
            result["count"]
                .as_str()
                .is_some_and(|c| c.starts_with("16384 of 16384")),
            result["hosts"].as_u64(),
            result["firstScreenMs"].is_u64(),
        ),
        (Some(0), Some(500), true, Some(1024), true),
        "{result}"
    );
}
