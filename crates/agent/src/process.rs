//! `pcipool agent` as a process: the agent's step routes served on a listener, and a thread that
//! registers with the controller and heartbeats until shutdown. With the simulator, the host's hardware
//! is the `pcipool sim serve` process; the agent reads its host's devices from it and calls its
//! kernel's primitives there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pcipool_backend::remote::RemoteHost;
use pcipool_client::Client;
use pcipool_fabric::NodeId;

use crate::{Agent, SimulatedHost};

/// What one agent process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProcess {
    /// This host.
    pub node: NodeId,
    /// The simulated fabric process playing this host's hardware.
    pub fabric_url: String,
    /// Listen address for the controller's step calls.
    pub listen: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
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
    let hardware = SimulatedHost::new(&p.fabric_url, p.node);
    let agent = Arc::new(Agent::new(
        p.node,
        p.secret.clone(),
        RemoteHost(hardware.clone()),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ProcessError::Runtime)?;
    let bind = |source| ProcessError::Bind {
        addr: p.listen.clone(),
        source,
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&p.listen))
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    on_bound(addr);
    let own_url = format!("http://{addr}");
    let stop = Arc::new(AtomicBool::new(false));
    let announcer = {
        let (agent, stop) = (agent.clone(), stop.clone());
        let client = Client::new(&p.controller, &p.token);
        let every = p.heartbeat;
        std::thread::spawn(move || agent.announce(&client, &hardware, &own_url, every, &stop))
    };
    let served = runtime.block_on(crate::server::serve(agent, listener, shutdown));
    stop.store(true, Ordering::Relaxed);
    announcer.join().map_err(|_| ProcessError::Heartbeat)?;
    served.map_err(ProcessError::Serve)
}
