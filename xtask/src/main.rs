//! `cargo xtask <task>`: developer tasks that are more than one command.
//!
//! - `ci`: what `.ci/run` runs after installing system packages (fmt check, clippy, tests).
//! - `fuzz SECONDS`: run the `pcie_decode` fuzz target for SECONDS (needs nightly + cargo-fuzz).

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

fn fuzz(seconds: &str) -> Result<(), String> {
    let max_time = format!("-max_total_time={seconds}");
    run(
        "cargo",
        &[
            "+nightly",
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "pcie_decode",
            "--",
            &max_time,
        ],
    )
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
        ["fuzz", seconds] => fuzz(seconds),
        _ => Err("usage: cargo xtask ci | cargo xtask fuzz SECONDS".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
