//! `cargo xtask <task>`: developer tasks that are more than one command.
//!
//! - `ci`: what `.ci/run` runs after installing system packages (fmt check, clippy, tests).
//! - `fuzz TARGET SECONDS`: run a cargo-fuzz target (`pcie_decode`, `lspci_dump`) for SECONDS.

use std::process::{Command, ExitCode};

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed: {status}", args.join(" ")))
    }
}

fn ci() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["test", "--workspace"])
}

/// Runs a cargo-fuzz target (`pcie_decode` or `lspci_dump`) for `seconds`. cargo-fuzz needs nightly
/// flags; only a stable toolchain exists on these machines, so `RUSTC_BOOTSTRAP=1` unlocks them.
fn fuzz(target: &str, seconds: &str) -> Result<(), String> {
    let max_time = format!("-max_total_time={seconds}");
    let corpus = format!("fuzz/corpus/{target}");
    std::fs::create_dir_all(&corpus).map_err(|e| format!("creating {corpus}: {e}"))?;
    eprintln!("+ RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {corpus} -- {max_time}");
    let status = Command::new("cargo")
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            target,
            &corpus,
            "--",
            &max_time,
        ])
        .status()
        .map_err(|e| format!("cannot start cargo fuzz (cargo install cargo-fuzz): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("fuzzing {target} failed: {status}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["ci"] => ci(),
        ["fuzz", target, seconds] => fuzz(target, seconds),
        _ => Err("usage: cargo xtask ci | cargo xtask fuzz TARGET SECONDS".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
