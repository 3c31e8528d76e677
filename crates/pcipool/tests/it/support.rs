//! Running the binary and lspci.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `pcipool ARGS`.
pub fn pcipool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("the pcipool binary runs")
}

/// Path of lspci. The test command installs pciutils; without it these tests cannot mean anything.
pub fn lspci() -> &'static Path {
    let path = Path::new("/usr/bin/lspci");
    assert!(
        path.exists(),
        "lspci missing: run ./scripts/test, which installs pciutils"
    );
    path
}

/// Runs `lspci ARGS` and returns stdout (stderr carries a harmless libkmod notice).
pub fn run_lspci(args: &[&str]) -> String {
    let out = Command::new(lspci())
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("lspci runs");
    assert!(
        out.status.success(),
        "lspci {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Spawns `pcipool ARGS` and waits for the stdout line containing `marker`; returns the rest of that
/// line. Keeps draining stdout afterwards so the process never writes into a closed pipe.
pub fn spawn_until(args: &[&std::ffi::OsStr], marker: &str) -> (std::process::Child, String) {
    spawn_until_in(None, args, marker)
}

/// [`spawn_until`] in a network namespace (`ip netns exec NS pcipool ARGS`), or here with None.
pub fn spawn_until_in(
    ns: Option<&str>,
    args: &[&std::ffi::OsStr],
    marker: &str,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_pcipool")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_pcipool")),
    };
    let mut child = command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pcipool starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut rest = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(r) = line.split(marker).nth(1) {
            rest = r.trim().to_owned();
            break;
        }
    }
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (child, rest)
}

/// One NVMe drive, lent to `borrower`.
pub fn nvme_for(borrower: u32) -> pcipool_wire::BorrowRequest {
    pcipool_wire::BorrowRequest {
        selector: pcipool_pool::schedule::Selector {
            class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
            ..Default::default()
        },
        count: 1,
        model: pcipool_qualify::AccessModel::Lend,
        borrower: pcipool_fabric::NodeId(borrower),
        duration_secs: None,
        max_sharers: None,
        request_id: None,
        wait: true,
    }
}

/// The first device of a pool that its fabric serves on the data path.
pub fn first_data_path_device(pool: &pcipool_access::Pool) -> String {
    pool.find(&pcipool_access::Filter {
        on_data_path: true,
        ..pcipool_access::Filter::default()
    })
    .expect("find")[0]
        .fdid
        .to_string()
}
