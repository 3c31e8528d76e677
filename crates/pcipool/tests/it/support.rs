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
