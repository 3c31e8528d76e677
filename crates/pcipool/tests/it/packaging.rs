//! What an operator installs beside the binary: the systemd units pass `systemd-analyze verify`, the
//! example policy and token files are what `pcipool server` accepts, and the man pages and shell
//! completions are generated from the command line itself.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_shipped_systemd_units_pass_systemd_analyze_verify() {
    let Ok(found) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        pcipool_testkit::skip::skipped("systemd_units", "no systemd-analyze on this machine");
        return;
    };
    assert!(found.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for name in ["pcipool-server.service", "pcipool-agent.service"] {
        let text = std::fs::read_to_string(repo().join("packaging/systemd").join(name))
            .expect("the unit is shipped");
        // The units name the installed binary; this test's is the one just built.
        let text = text.replace("/usr/local/bin/pcipool", env!("CARGO_BIN_EXE_pcipool"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("written");
        units.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_server_starts_with_the_example_policy_and_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = repo().join("packaging/examples");
    let args: Vec<std::ffi::OsString> = vec![
        "server".into(),
        "--data-dir".into(),
        dir.path().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--tokens".into(),
        examples.join("tokens.toml").into(),
        "--policy".into(),
        examples.join("policy.toml").into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
    let (mut server, url) = crate::support::spawn_until(&args, "controller at ");
    let operator = pcipool_client::Client::new(&url, "replace-me-operator-0123456789abcd");
    let seen = operator.devices().map(|d| d.len());
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        (
            url.starts_with("http://127.0.0.1:"),
            seen.map_err(|e| e.to_string())
        ),
        (true, Ok(0))
    );
}

#[test]
fn man_pages_and_completions_come_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let man = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    let borrow = std::fs::read_to_string(dir.path().join("pcipool-borrow.1")).unwrap_or_default();
    let bash = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    let script = String::from_utf8_lossy(&bash.stdout);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(
        (
            man.status.success(),
            borrow.contains(".TH pcipool-borrow") && borrow.contains(r"\-\-max\-sharers"),
            dir.path().join("pcipool-lease-list.1").is_file(),
            bash.status.success() && script.contains("_pcipool") && script.contains("borrow"),
            bad.status.code(),
        ),
        (true, true, true, true, Some(2)),
    );
}
