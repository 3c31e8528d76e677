//! `pcipool agent`: one per host. It reports the host's qualified devices to the controller, carries
//! out the workflow steps the controller sends (refusing any step whose fencing epoch is older than one
//! it has already seen for that device, so a controller that was replaced cannot undo its successor's
//! work), and heartbeats the leases its host borrows.
//!
//! With the simulator the host's hardware is the `pcipool sim serve` process: the agent reads its host's
//! devices from it and forwards steps to it. A Linux agent would do the same through sysfs.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_api::client::Client;
use pcipool_api::server::error_response as error;
use pcipool_api::types::{
    AgentHeartbeat, AgentRegistration, ApiErrorBody, LeaseBeat, ReportedDevice, StepRequest,
};
use pcipool_backend::{Step, StepContext};
use pcipool_fabric::{LeaseId, NodeId};
use pcipool_pcie::Bdf;

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

struct Agent {
    node: NodeId,
    secret: String,
    fabric: String,
    http: ureq::Agent,
    /// Highest fencing epoch seen per device (lender node, address).
    epochs: Mutex<BTreeMap<(u32, Bdf), u64>>,
    /// Leases this host carries as a borrower, with the context to tear them down.
    carried: Mutex<BTreeMap<LeaseId, StepContext>>,
    /// Held while a step runs, so the sweep after a registration never races a lend half-way.
    steps: Mutex<()>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Agent {
    fn execute(&self, request: &StepRequest) -> Response {
        let _one_at_a_time = guard(&self.steps);
        let ctx = &request.ctx;
        {
            let mut epochs = guard(&self.epochs);
            let seen = epochs.entry((ctx.lender, ctx.bdf)).or_insert(0);
            if ctx.epoch < *seen {
                return error(
                    StatusCode::CONFLICT,
                    "STALE_EPOCH",
                    format!(
                        "{:?} for lease {} carries epoch {}, but the device has moved on to epoch {}",
                        request.step, ctx.lease, ctx.epoch, *seen
                    ),
                );
            }
            *seen = ctx.epoch;
        }
        if let Err((status, code, message)) = self.hardware(request) {
            return error(status, &code, message);
        }
        let lease = LeaseId(ctx.lease);
        match request.step {
            Step::BorrowerHotAdd | Step::BorrowerBind | Step::BorrowerVerify => {
                guard(&self.carried).insert(lease, ctx.clone());
            }
            Step::BorrowerUnbind | Step::BorrowerHotRemove => {
                guard(&self.carried).remove(&lease);
            }
            _ => {}
        }
        StatusCode::NO_CONTENT.into_response()
    }

    /// Carries out a step on this host's hardware (the simulated fabric process).
    fn hardware(&self, request: &StepRequest) -> Result<(), (StatusCode, String, String)> {
        let url = format!("{}/v1/steps", self.fabric.trim_end_matches('/'));
        let mut resp = self.http.post(&url).send_json(request).map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                "HARDWARE_UNREACHABLE".to_owned(),
                format!("{}: cannot reach the fabric at {url}: {e}", self.node),
            )
        })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        Err(match resp.body_mut().read_json::<ApiErrorBody>() {
            Ok(b) => (status, b.code, b.message),
            Err(_) => (
                StatusCode::BAD_GATEWAY,
                "HARDWARE".to_owned(),
                format!("the fabric answered HTTP {status}"),
            ),
        })
    }

    /// The controller no longer grants `lease` (fenced while this host was unreachable, or expired):
    /// unbind and remove the borrowed device here; the lender has already cut the mappings.
    fn tear_down(&self, lease: LeaseId) {
        let _no_steps_meanwhile = guard(&self.steps);
        let Some(ctx) = guard(&self.carried).remove(&lease) else {
            return;
        };
        for step in [Step::BorrowerUnbind, Step::BorrowerHotRemove] {
            let request = StepRequest {
                step,
                ctx: ctx.clone(),
            };
            if let Err((_, code, message)) = self.hardware(&request) {
                eprintln!(
                    "pcipool agent {}: tearing down {lease}: {step:?}: {code}: {message}",
                    self.node
                );
            }
        }
        println!(
            "pcipool agent {}: {lease} is no longer granted; its device was removed here",
            self.node
        );
    }

    /// After a registration: carry exactly the leases the controller grants this host, and remove any
    /// other borrowed device still present here (left over from before an agent or controller restart).
    fn adopt(&self, granted: Vec<StepContext>) -> Result<usize, String> {
        let _no_steps_meanwhile = guard(&self.steps);
        let granted: BTreeMap<LeaseId, StepContext> =
            granted.into_iter().map(|c| (LeaseId(c.lease), c)).collect();
        let url = format!("{}/v1/state", self.fabric.trim_end_matches('/'));
        let state: serde_json::Value = self
            .http
            .get(&url)
            .call()
            .map_err(|e| format!("cannot reach the fabric at {url}: {e}"))?
            .body_mut()
            .read_json()
            .map_err(|e| format!("{url}: unexpected body: {e}"))?;
        let mut removed = 0;
        let empty = Vec::new();
        for shadow in state["shadows"].as_array().unwrap_or(&empty) {
            let (Some(node), Some(bdf), Some(lender)) = (
                shadow[0].as_str().and_then(|n| n.parse::<NodeId>().ok()),
                shadow[1].as_str().and_then(|b| b.parse::<Bdf>().ok()),
                shadow[2]
                    .as_str()
                    .and_then(|f| f.parse::<pcipool_fabric::Fdid>().ok()),
            ) else {
                continue;
            };
            if node != self.node || granted.values().any(|c| c.shadow == bdf) {
                continue;
            }
            let ctx = StepContext {
                lender: lender.node.0,
                bdf: lender.bdf,
                borrower: self.node.0,
                shadow: bdf,
                lease: 0,
                epoch: 0,
                bars: Vec::new(),
                dma_window: 0,
                driver: None,
                lender_driver: None,
                lender_vfs: 0,
            };
            for step in [Step::BorrowerUnbind, Step::BorrowerHotRemove] {
                self.hardware(&StepRequest {
                    step,
                    ctx: ctx.clone(),
                })
                .map_err(|(_, code, message)| format!("removing {bdf}: {code}: {message}"))?;
            }
            removed += 1;
        }
        *guard(&self.carried) = granted;
        Ok(removed)
    }

    fn devices(&self) -> Result<Vec<ReportedDevice>, String> {
        let url = format!(
            "{}/v1/hosts/{}/devices",
            self.fabric.trim_end_matches('/'),
            self.node
        );
        let mut resp = self
            .http
            .get(&url)
            .call()
            .map_err(|e| format!("cannot reach the fabric at {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        resp.body_mut()
            .read_json()
            .map_err(|e| format!("{url}: unexpected body: {e}"))
    }

    /// Registers, then heartbeats forever; registers again whenever the controller asks.
    fn announce(&self, client: &Client, own_url: &str, every: Duration) {
        let mut registered = false;
        let mut last_error = String::new();
        let mut report = |e: String| {
            if e != last_error {
                eprintln!("pcipool agent {}: {e}", self.node);
                last_error = e;
            }
        };
        loop {
            if registered {
                let beat = AgentHeartbeat {
                    leases: guard(&self.carried)
                        .iter()
                        .map(|(&lease_id, ctx)| LeaseBeat {
                            lease_id,
                            epoch: ctx.epoch,
                        })
                        .collect(),
                };
                match client.agent_heartbeat(self.node, &beat) {
                    Ok(reply) if reply.register => registered = false,
                    Ok(reply) => {
                        for id in reply.refused {
                            self.tear_down(id);
                        }
                    }
                    Err(e) => report(format!("heartbeat: {e}")),
                }
            }
            if !registered {
                let result = self.devices().and_then(|devices| {
                    let n = devices.len();
                    client
                        .register_agent(&AgentRegistration {
                            node: self.node,
                            url: own_url.to_owned(),
                            secret: self.secret.clone(),
                            devices,
                        })
                        .map_err(|e| format!("registering: {e}"))
                        .and_then(|reply| {
                            let borrowed = reply.borrowed.len();
                            self.adopt(reply.borrowed)
                                .map(|removed| (n, borrowed, removed))
                        })
                });
                match result {
                    Ok((n, borrowed, removed)) => {
                        println!(
                            "pcipool agent {}: registered with {n} devices; carries {borrowed} borrowed, removed {removed} no longer granted",
                            self.node
                        );
                        registered = true;
                    }
                    Err(e) => report(e),
                }
            }
            std::thread::sleep(every);
        }
    }
}

async fn step(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: Result<Json<StepRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let authorised = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == agent.secret);
    if !authorised {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "not the controller this agent registered with".into(),
        );
    }
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()),
    };
    match tokio::task::spawn_blocking(move || agent.execute(&request)).await {
        Ok(r) => r,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    }
}

/// `pcipool agent`.
///
/// # Errors
/// Bind failures.
pub fn run(o: &AgentOptions) -> anyhow::Result<ExitCode> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    let agent = Arc::new(Agent {
        node: o.node,
        secret: crate::dev::random_token()?,
        fabric: o.fabric_url.clone(),
        http: config.into(),
        epochs: Mutex::new(BTreeMap::new()),
        carried: Mutex::new(BTreeMap::new()),
        steps: Mutex::new(()),
    });
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
    let announcer = agent.clone();
    let client = Client::new(&o.controller, &o.token);
    let every = o.heartbeat;
    std::thread::spawn(move || announcer.announce(&client, &own_url, every));
    let app = Router::new()
        .route("/v1/steps", post(step))
        .route("/v1/health", get(|| async { "ok" }))
        .with_state(agent);
    runtime.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::dev::shutdown_signal())
            .await
            .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}
