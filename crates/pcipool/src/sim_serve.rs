//! `pcipool sim serve`: the simulated fabric as a process of its own. It plays every host's hardware
//! and kernel, and the fabric's manager: agents in other processes read their host's qualified devices
//! from it and call their kernel's primitives on it (`/v1/hosts/{node}/control`), and the controller
//! sends it the fabric's steps (`/v1/steps`). Killing the controller or an agent leaves this state
//! alone, as a crash of the software would leave real hosts and their NTB mappings alone. The server
//! itself is `pcipool-sim-server`; this is its command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use pcipool_sim::Sim;

/// Validated `pcipool sim serve` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimServeOptions {
    /// Description file, or None for the built-in lab.
    pub fabric: Option<PathBuf>,
    /// Listen address.
    pub listen: String,
    /// The controller the data path checks leases with.
    pub controller: Option<String>,
    /// The operator token file the data path reconciles with.
    pub controller_token_file: Option<PathBuf>,
    /// The data path's directory (None: a fresh one under /dev/shm, removed at exit).
    pub datapath_dir: Option<PathBuf>,
}

/// The data path's directory, and whether it is ours to remove at exit.
fn datapath_dir(o: &SimServeOptions) -> (PathBuf, bool) {
    match &o.datapath_dir {
        Some(d) => (d.clone(), false),
        None => (
            pcipool_sim_server::shm_root().join(format!("pcipool-sim-{}", std::process::id())),
            true,
        ),
    }
}

/// `pcipool sim serve`.
///
/// # Errors
/// Bad description (exit 3), bind failures.
pub fn run(o: &SimServeOptions) -> anyhow::Result<ExitCode> {
    let listen = o.listen.as_str();
    let (_, desc) =
        crate::sim_cmd::load_or(o.fabric.as_deref(), "built-in lab-4", crate::sim_cmd::LAB_4)?;
    let sim = Sim::new(&desc, 1).map_err(|e| crate::BadInput(e.to_string()))?;
    let hosts = sim.hosts().count();
    let (dir, ours) = datapath_dir(o);
    let datapath = pcipool_sim_server::serve_datapath(&desc, &dir).map_err(|e| match e {
        pcipool_sim_server::SimServerError::Description(d) => {
            anyhow::Error::new(crate::BadInput(d))
        }
        other => anyhow::Error::new(other),
    })?;
    let served = datapath.devices();
    let datapath = match &o.controller {
        Some(url) => datapath.with_controller(url.clone()),
        None => datapath,
    };
    if let Some(t) = &o.controller_token_file {
        datapath.reconcile_with(t.clone());
    }
    let app = pcipool_sim_server::router(Arc::new(Mutex::new(sim)), datapath);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")?;
    let shown = dir.display().to_string();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr().context("local address")?;
        println!("pcipool sim serve: data path of {served} NVMe device(s) in {shown}");
        println!("pcipool sim serve: the simulated fabric ({hosts} hosts) at http://{addr}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::dev::shutdown_signal())
            .await
            .context("serving")?;
        Ok::<_, anyhow::Error>(())
    });
    if ours {
        let _ = std::fs::remove_dir_all(&dir);
    }
    served?;
    Ok(ExitCode::SUCCESS)
}
