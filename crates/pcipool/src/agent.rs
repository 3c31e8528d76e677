//! `pcipool agent`: one per host, the edge of `pcipool_agent`'s runtime. With the simulator the host's
//! hardware is the `pcipool sim serve` process; the agent reads its host's devices from it and calls its
//! kernel's primitives there.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use pcipool_agent::{Agent, SimulatedHost};
use pcipool_backend::remote::RemoteHost;
use pcipool_client::Client;
use pcipool_fabric::NodeId;

/// Validated `pcipool agent` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    /// This host.
    pub node: NodeId,
    /// The simulated fabric process.
    pub fabric_url: String,
    /// Listen address for step calls.
    pub listen: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Controller URL.
    pub controller: String,
    /// Agent token for the controller.
    pub token: String,
}

/// `pcipool agent`.
///
/// # Errors
/// Bind failures.
pub fn run(o: &AgentOptions) -> anyhow::Result<ExitCode> {
    let hardware = SimulatedHost::new(&o.fabric_url, o.node);
    let agent = Arc::new(Agent::new(
        o.node,
        crate::dev::random_token()?,
        RemoteHost(hardware.clone()),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting tokio")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&o.listen))
        .with_context(|| format!("binding {}", o.listen))?;
    let addr = listener.local_addr().context("local address")?;
    let own_url = format!("http://{addr}");
    println!("pcipool agent {}: steps served at {own_url}", o.node);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stop = Arc::new(AtomicBool::new(false));
    let announcer = {
        let (agent, stop) = (agent.clone(), stop.clone());
        let client = Client::new(&o.controller, &o.token);
        let every = o.heartbeat;
        std::thread::spawn(move || agent.announce(&client, &hardware, &own_url, every, &stop))
    };
    let served = runtime.block_on(pcipool_agent::server::serve(
        agent,
        listener,
        crate::dev::shutdown_signal(),
    ));
    stop.store(true, Ordering::Relaxed);
    let _ = announcer.join();
    served.context("serving")?;
    Ok(ExitCode::SUCCESS)
}
