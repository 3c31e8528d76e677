//! `pcipool agent` as a process: the agent's step routes served on a listener, and a thread that
//! registers with the controller and heartbeats until shutdown. With the simulator (`--backend sim`),
//! the host's hardware is the `pcipool sim serve` process; the agent reads its host's devices from it
//! and calls its kernel's primitives there. With `--backend linux`, the hardware is this host's kernel,
//! through the pool of functions the operator names ([`crate::linux`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::path::PathBuf;

use pcipool_backend::DeviceControl;
use pcipool_backend::remote::RemoteHost;
use pcipool_client::Client;
use pcipool_fabric::NodeId;
use pcipool_pcie::Bdf;

use crate::linux::LinuxPool;
use crate::{Agent, Reporter, SimulatedHost};

/// What drives the host's hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendKind {
    /// The simulated fabric's process (`--fabric-url`).
    #[default]
    Sim,
    /// This host's Linux kernel, for the functions in `--pool`.
    Linux,
}

/// `pcipool agent`'s options.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AgentOptions {
    /// The host this agent runs on (node id, e.g. n1).
    #[arg(long, value_name = "NODE")]
    pub node: NodeId,
    /// What drives the host's hardware.
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendKind,
    /// The simulated fabric process (`pcipool sim serve`) that plays this host's hardware.
    #[arg(long, value_name = "URL", required_if_eq("backend", "sim"))]
    pub fabric_url: Option<String>,
    /// The functions this agent may lend (Linux backend): it writes to nothing else, and refuses to
    /// start with one that backs / or carries the default route.
    #[arg(long, value_name = "BDF", num_args = 1..)]
    pub pool: Vec<Bdf>,
    /// A Linux host that lends nothing and only borrows (no --pool): it writes only to the devices
    /// the fabric attaches to it.
    #[arg(long, conflicts_with = "pool")]
    pub borrower_only: bool,
    /// sysfs root (Linux backend; a fake tree in tests).
    #[arg(long, value_name = "PATH", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Where the agent keeps its fencing epochs across restarts.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address the agent listens on for the controller's step calls.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The URL the controller reaches the agent at, when it is not the listen address (a forwarded
    /// port, a NAT): registered with the controller instead.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// Heartbeat interval, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,
}

/// What one agent process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProcess {
    /// The operator's options.
    pub options: AgentOptions,
    /// Controller URL.
    pub controller: String,
    /// Agent token for the controller.
    pub token: String,
    /// The secret the controller presents on step calls (fresh per process).
    pub secret: String,
}

/// Why the agent process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The runtime could not start.
    #[error("starting the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
    /// The heartbeat thread panicked.
    #[error("the heartbeat thread panicked")]
    Heartbeat,
    /// The backend could not be set up (no pool, an unsafe function, an unreadable state directory).
    #[error("{0}")]
    Setup(String),
}

/// Runs the agent until `shutdown`; `on_bound` hears the step address once it is bound.
///
/// # Errors
/// [`ProcessError`].
pub fn run(
    p: &AgentProcess,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let o = &p.options;
    match o.backend {
        BackendKind::Sim => {
            let url = o
                .fabric_url
                .as_deref()
                .ok_or_else(|| ProcessError::Setup("the sim backend needs --fabric-url".into()))?;
            let hardware = SimulatedHost::new(url, o.node);
            let agent = Agent::new(o.node, p.secret.clone(), RemoteHost(hardware.clone()));
            serve(p, agent, Arc::new(hardware), on_bound, shutdown)
        }
        BackendKind::Linux => {
            let pool = LinuxPool {
                node: o.node,
                paths: pcipool_backend_linux::HostPaths::given(&o.sysfs_root, None),
                pool: o.pool.iter().copied().collect(),
                borrower_only: o.borrower_only,
                served_before: match &o.state_dir {
                    Some(dir) => {
                        crate::runtime::served_before(dir, o.node).map_err(ProcessError::Setup)?
                    }
                    None => BTreeSet::new(),
                },
                profile: pcipool_qualify::AdapterProfile::named("dolphin-pxh830-32g")
                    .ok_or_else(|| ProcessError::Setup("no built-in adapter profile".into()))?,
                modules: None,
            };
            let away = pool.check().map_err(ProcessError::Setup)?;
            let agent = Agent::new(
                o.node,
                p.secret.clone(),
                pool.control(&away).map_err(ProcessError::Setup)?,
            );
            serve(p, agent, Arc::new(pool), on_bound, shutdown)
        }
    }
}

fn serve<D: DeviceControl + Send + 'static>(
    p: &AgentProcess,
    agent: Agent<D>,
    reporter: Arc<dyn Reporter>,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let agent = match &p.options.state_dir {
        Some(dir) => agent.with_state_dir(dir).map_err(ProcessError::Setup)?,
        None => agent,
    };
    let agent = Arc::new(agent);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ProcessError::Runtime)?;
    let bind = |source| ProcessError::Bind {
        addr: p.options.listen.clone(),
        source,
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&p.options.listen))
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    on_bound(addr);
    let own_url = p
        .options
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let stop = Arc::new(AtomicBool::new(false));
    let announcer = {
        let (agent, stop) = (agent.clone(), stop.clone());
        let client = Client::new(&p.controller, &p.token);
        let every = Duration::from_millis(p.options.heartbeat_ms);
        std::thread::spawn(move || {
            agent.announce(&client, reporter.as_ref(), &own_url, every, &stop)
        })
    };
    let served = runtime.block_on(crate::server::serve(agent, listener, shutdown));
    stop.store(true, Ordering::Relaxed);
    announcer.join().map_err(|_| ProcessError::Heartbeat)?;
    served.map_err(ProcessError::Serve)
}
