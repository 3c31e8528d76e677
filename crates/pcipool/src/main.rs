//! `pcipool`: pool PCIe devices across hosts joined by an NTB or PCIe switch fabric.
//!
//! This binary is the edge: it parses arguments into the domain's types ([`cli`]), runs one command
//! from the libraries, prints the result, and maps failures to the exit codes in [`cli::EXIT_CODES`].
//!
//! # Layout
//! - [`cli`]: clap definitions.
//! - [`commands`]: the dispatch, and the commands that read this host (inventory, inspect, decode).
//! - [`serve_cmd`]: the long-running commands (`dev`, `server`, `agent`, `sim serve`).
//! - [`client_cmd`]: the commands that talk to the API.
//! - [`qualify_cmd`], [`validate_cmd`], [`sim_cmd`]: qualification, validation, the simulator.

mod cli;
mod client_cmd;
mod commands;
mod qualify_cmd;
mod serve_cmd;
mod sim_cmd;
mod validate_cmd;

use std::process::ExitCode;

use clap::Parser;

/// Input that was read but is not valid (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// A named thing that does not exist (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// A request clap accepted whose parts do not fit together (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn run() -> anyhow::Result<ExitCode> {
    commands::execute(cli::Cli::parse())
}

fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<UsageError>()) {
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
