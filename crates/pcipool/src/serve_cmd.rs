//! The long-running commands: `pcipool dev`, `server`, `agent` and `sim serve`. Each assembles its
//! runtime from a library, prints where it serves, and runs until SIGINT or SIGTERM.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pcipool_serve::{ServeError, shutdown_signal};

use crate::BadInput;

/// Prints lines and flushes, so a supervisor reading a pipe sees them before the first request.
fn announce(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        // A closed stdout must not stop a server: it keeps serving without its banner.
        let _banner_lost = writeln!(out, "{line}");
    }
    let _banner_lost = out.flush();
}

fn serve_error(e: ServeError) -> anyhow::Error {
    match e {
        ServeError::BadInput(m) => BadInput(m).into(),
        other => anyhow::Error::new(other),
    }
}

/// `pcipool dev`.
///
/// # Errors
/// Store, bind or description errors.
pub fn dev(
    data_dir: Option<PathBuf>,
    listen: &str,
    fabric: Option<&Path>,
    data_path: bool,
) -> anyhow::Result<ExitCode> {
    let dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pcipool-dev-{}", std::process::id()))
    });
    let loaded = crate::sim_cmd::load(fabric)?;
    let hosts = loaded.desc.hosts.len();
    pcipool_serve::dev::DevPool::open(&loaded.desc, &dir, data_path)
        .map_err(serve_error)?
        .serve(
            listen,
            |info, addr| announce(&info.banner(addr, &loaded.name, hosts)),
            shutdown_signal(),
        )
        .map_err(serve_error)?;
    Ok(ExitCode::SUCCESS)
}

/// `pcipool server`.
///
/// # Errors
/// Bad files (exit 3), store or bind failures.
pub fn server(
    config: &pcipool_serve::server::ServerConfig,
    listen: &str,
) -> anyhow::Result<ExitCode> {
    pcipool_serve::server::open(config)
        .map_err(serve_error)?
        .serve(listen, |lines| announce(&lines), shutdown_signal())
        .map_err(serve_error)?;
    Ok(ExitCode::SUCCESS)
}

/// `pcipool agent`.
///
/// # Errors
/// Bind or serve failures.
pub fn agent(mut process: pcipool_agent::process::AgentProcess) -> anyhow::Result<ExitCode> {
    process.secret = pcipool_serve::tokens::random_token().map_err(serve_error)?;
    let node = process.options.node;
    pcipool_agent::process::run(
        &process,
        |addr| {
            announce(&[format!(
                "pcipool agent {node}: steps served at http://{addr}"
            )])
        },
        shutdown_signal(),
    )
    .map_err(|e| match e {
        pcipool_agent::process::ProcessError::Setup(why) => BadInput(why).into(),
        other => anyhow::Error::new(other).context("the agent"),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `pcipool sim serve`.
///
/// # Errors
/// Bad description (exit 3), bind failures.
pub fn sim_serve(process: pcipool_sim_server::process::FabricProcess) -> anyhow::Result<ExitCode> {
    pcipool_sim_server::process::run(
        process,
        |bound| announce(&bound.banner()),
        shutdown_signal(),
    )
    .map_err(|e| match e {
        pcipool_sim_server::process::ProcessError::Setup(
            pcipool_sim_server::SimServerError::Description(d),
        ) => BadInput(d).into(),
        other => anyhow::Error::new(other),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a policy file (or the default), as `server` and `validate` do.
///
/// # Errors
/// Unreadable file, or bad input (exit 3).
pub fn policy(file: Option<&Path>) -> anyhow::Result<(String, pcipool_pool::policy::Policy)> {
    pcipool_serve::load_policy(file).map_err(serve_error)
}
