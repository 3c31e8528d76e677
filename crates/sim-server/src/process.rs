//! `pcipool sim serve` as a process: the simulated fabric (every host's hardware, the fabric manager,
//! the test port and the data path) served on a listener until shutdown. Killing the controller or an
//! agent leaves this state alone, as a crash of the software would leave real hosts and their NTB
//! mappings alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pcipool_sim::{FabricDesc, Sim};

use crate::SimServerError;

/// What the process runs with.
#[derive(Debug, Clone)]
pub struct FabricProcess {
    /// The fabric.
    pub desc: FabricDesc,
    /// Listen address.
    pub listen: String,
    /// The controller the data path checks leases with (without it, no mapping is granted).
    pub controller: Option<String>,
    /// The operator token file the data path reconciles with.
    pub controller_token_file: Option<PathBuf>,
    /// The data path's directory (None: a fresh one under /dev/shm, removed at exit).
    pub datapath_dir: Option<PathBuf>,
}

/// What the process serves, told once it is bound.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The address.
    pub addr: SocketAddr,
    /// Simulated hosts.
    pub hosts: usize,
    /// NVMe devices whose data path is served.
    pub datapath_devices: usize,
    /// Where the data path's files are.
    pub datapath_dir: PathBuf,
}

impl Bound {
    /// What `pcipool sim serve` prints once bound.
    #[must_use]
    pub fn banner(&self) -> Vec<String> {
        vec![
            format!(
                "pcipool sim serve: data path of {} NVMe device(s) in {}",
                self.datapath_devices,
                self.datapath_dir.display()
            ),
            format!(
                "pcipool sim serve: the simulated fabric ({} hosts) at http://{}",
                self.hosts, self.addr
            ),
        ]
    }
}

/// Why the process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The fabric or its data path could not be set up.
    #[error(transparent)]
    Setup(#[from] SimServerError),
    /// Runtime, bind or serve failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io {
        context: context.to_owned(),
        source,
    }
}

/// Serves until `shutdown`; `on_bound` hears what is served once the address is bound. A data-path
/// directory made here is removed at the end.
///
/// # Errors
/// [`ProcessError`].
pub fn run(
    p: FabricProcess,
    on_bound: impl FnOnce(&Bound),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let sim = Sim::new(&p.desc, 1).map_err(|e| SimServerError::Description(e.to_string()))?;
    let hosts = sim.hosts().count();
    let (dir, ours) = match &p.datapath_dir {
        Some(d) => (d.clone(), false),
        None => (
            crate::shm_root().join(format!("pcipool-sim-{}", std::process::id())),
            true,
        ),
    };
    let datapath = crate::serve_datapath(&p.desc, &dir)?;
    let datapath_devices = datapath.devices();
    let datapath = match p.controller {
        Some(url) => datapath.with_controller(url),
        None => datapath,
    };
    if let Some(t) = p.controller_token_file {
        datapath.reconcile_with(t);
    }
    let app = crate::router(Arc::new(Mutex::new(sim)), datapath);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting the tokio runtime"))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&p.listen)
            .await
            .map_err(io("binding the listen address"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        on_bound(&Bound {
            addr,
            hosts,
            datapath_devices,
            datapath_dir: dir.clone(),
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io("serving"))
    });
    let removed = if ours {
        std::fs::remove_dir_all(&dir).map_err(io("removing the data path's directory"))
    } else {
        Ok(())
    };
    // A serving failure is the one to report; a removal failure after a clean stop is reported too.
    served.and(removed)
}
