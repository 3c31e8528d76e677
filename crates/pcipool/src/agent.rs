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
use pcipool_api::types::{
    AgentHeartbeat, AgentRegistration, ApiErrorBody, LeaseBeat, ReportedDevice, StepRequest,
};
use pcipool_backend::Step;
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
    /// Leases this host carries as a borrower, with their epochs.
    carried: Mutex<BTreeMap<LeaseId, u64>>,
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(ApiErrorBody {
            code: code.to_owned(),
            message,
        }),
    )
        .into_response()
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Agent {
    fn execute(&self, request: &StepRequest) -> Response {
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
        let url = format!("{}/v1/steps", self.fabric.trim_end_matches('/'));
        let mut resp = match self.http.post(&url).send_json(request) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "HARDWARE_UNREACHABLE",
                    format!("{}: cannot reach the fabric at {url}: {e}", self.node),
                );
            }
        };
        if !resp.status().is_success() {
            let status = resp.status();
            return match resp.body_mut().read_json::<ApiErrorBody>() {
                Ok(b) => error(status, &b.code, b.message),
                Err(_) => error(
                    StatusCode::BAD_GATEWAY,
                    "HARDWARE",
                    format!("the fabric answered HTTP {status}"),
                ),
            };
        }
        let lease = LeaseId(ctx.lease);
        match request.step {
            Step::BorrowerHotAdd | Step::BorrowerBind | Step::BorrowerVerify => {
                guard(&self.carried).insert(lease, ctx.epoch);
            }
            Step::BorrowerUnbind | Step::BorrowerHotRemove => {
                guard(&self.carried).remove(&lease);
            }
            _ => {}
        }
        StatusCode::NO_CONTENT.into_response()
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
                        .map(|(&lease_id, &epoch)| LeaseBeat { lease_id, epoch })
                        .collect(),
                };
                match client.agent_heartbeat(self.node, &beat) {
                    Ok(reply) if reply.register => registered = false,
                    Ok(reply) => {
                        let mut carried = guard(&self.carried);
                        for id in reply.refused {
                            carried.remove(&id);
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
                        .map(|()| n)
                        .map_err(|e| format!("registering: {e}"))
                });
                match result {
                    Ok(n) => {
                        println!(
                            "pcipool agent {}: registered with {n} devices",
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
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            e.to_string(),
        ),
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
