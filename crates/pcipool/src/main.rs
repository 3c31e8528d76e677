//! `pcipool`: pool PCIe devices across hosts joined by an NTB or PCIe switch fabric.
//!
//! This binary is the edge: it parses arguments (two phases, see [`cli`]), runs one command, prints
//! the result, and maps failures to the exit codes in [`cli::EXIT_CODES`].
//!
//! # Layout
//! - [`cli`]: clap definitions and validation.
//! - [`commands`]: one function per command.
//! - [`dev`]: `pcipool dev` (the controller's service + store + simulated lab + HTTP API).
//! - [`server`]: `pcipool server` (controller whose hosts are reached through agents).
//! - [`agent`]: `pcipool agent` (one per host).
//! - [`sim_serve`]: `pcipool sim serve` (the simulated fabric as a process of its own; the server is
//!   `pcipool-sim-server`).
//! - [`validate_cmd`]: `pcipool validate` (validation suites and their report).
//! - [`client_cmd`]: the CLI commands that talk to the API.
//! - [`qualify_cmd`]: the qualification report.
//! - [`render`]: text output.
//! - [`sim_cmd`]: the simulator commands.
//! - [`bench`]: benchmarks that measure pcipool against a reference side by side.
//! - [`bench_control`]: the control plane's benchmarks (API cycles, restart).

mod agent;
mod bench;
mod bench_control;
mod cli;
mod client_cmd;
mod commands;
mod dev;
mod qualify_cmd;
mod render;
mod server;
mod sim_cmd;
mod sim_serve;
mod validate_cmd;

use std::process::ExitCode;

use clap::Parser;

/// Input that was read but is not valid (exit code 3).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

/// A named thing that does not exist (exit code 4).
#[derive(Debug)]
pub struct NotFound(pub String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotFound {}

fn run() -> anyhow::Result<ExitCode> {
    let command = cli::Cli::parse().validate()?;
    commands::execute(command)
}

fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<cli::UsageError>()) {
        2
    } else if err.chain().any(|e| e.is::<BadInput>()) {
        3
    } else if err.chain().any(|e| e.is::<NotFound>()) {
        4
    } else {
        1
    }
}

fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Structured logs to stderr (stdout stays the commands' output): `PCIPOOL_LOG` filters them
/// (`info`, `pcipool_controller=debug`, ...), warnings and errors by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PCIPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second initialisation (there is none) would only be refused; nothing to report.
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    init_logging();
    match run() {
        Ok(code) => code,
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pcipool: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}
