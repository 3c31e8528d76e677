//! `pcipool sim serve`: the simulated fabric as a process of its own. It plays every host's hardware
//! and kernel, and the fabric's manager: agents in other processes read their host's qualified devices
//! from it and call their kernel's primitives on it (`/v1/hosts/{node}/control`), and the controller
//! sends it the fabric's steps (`/v1/steps`). Killing the controller or an agent leaves this state alone, as a crash of the
//! software would leave real hosts and their NTB mappings alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_agent::StepRunner;
use pcipool_api::server::error_response as error;
use pcipool_backend::remote::{self, HostOp};
use pcipool_backend::{Absent, Side, Site as _};
use pcipool_datapath::service::{DataPath, Idle};
use pcipool_fabric::NodeId;
use pcipool_pool::schedule::DeviceClass;
use pcipool_qualify::AccessModel;
use pcipool_sim::Sim;
use pcipool_wire::{ReportedDevice, StepRequest};

use crate::datapath_serve::DataPathState;

type Shared = Arc<Mutex<Sim>>;

fn lock(sim: &Shared) -> std::sync::MutexGuard<'_, Sim> {
    sim.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn devices(State(sim): State<Shared>, UrlPath(node): UrlPath<String>) -> Response {
    let node: NodeId = match node.parse() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", format!("{e}")),
    };
    let sim = lock(&sim);
    if sim.host(node).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "NO_SUCH_HOST",
            format!("no host {node} in the simulated fabric"),
        );
    }
    let report: Vec<ReportedDevice> = pcipool_lab::qualified_devices(&sim, Some(node))
        .into_iter()
        .map(|(info, reasons)| ReportedDevice { info, reasons })
        .collect();
    Json(report).into_response()
}

/// One primitive on a host's kernel: the hardware side of that host's agent.
async fn host_control(
    State(sim): State<Shared>,
    UrlPath(node): UrlPath<String>,
    body: Result<Json<HostOp>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let node: NodeId = match node.parse() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", format!("{e}")),
    };
    let Json(op) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()),
    };
    let mut sim = lock(&sim);
    if sim.host(node).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "NO_SUCH_HOST",
            format!("no host {node} in the simulated fabric"),
        );
    }
    Json(remote::serve(&mut sim.host_control(node), op)).into_response()
}

/// The fabric manager: carries out the fabric's steps (map, unmap). Host steps go to the host's agent.
async fn step(
    State(sim): State<Shared>,
    body: Result<Json<StepRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()),
    };
    if request.step.side() != Side::Fabric {
        return error(
            StatusCode::BAD_REQUEST,
            "NOT_A_FABRIC_STEP",
            format!(
                "{:?} runs on a host; send it to that host's agent",
                request.step
            ),
        );
    }
    let mut sim = lock(&sim);
    match StepRunner::new(Absent, sim.fabric_control()).run(request.step, &request.ctx) {
        Ok(output) => Json(output).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e.kind.code(), e.message),
    }
}

async fn probe(
    State(sim): State<Shared>,
    body: Result<Json<crate::probe::Probe>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()),
    };
    match crate::probe::answer(&mut lock(&sim), &request) {
        Ok(v) => Json(v).into_response(),
        Err(message) => error(StatusCode::CONFLICT, "REFUSED", message),
    }
}

/// What the hardware carries, for tests and operators comparing it with the controller's store.
#[derive(Debug, serde::Serialize)]
pub struct FabricState {
    /// Leases that have at least one fabric mapping (BAR or DMA window).
    pub mapped_leases: Vec<u64>,
    /// Borrowed devices present on borrowers: (borrower, shadow address, lender's device).
    pub shadows: Vec<(NodeId, String, String)>,
}

async fn state(State(sim): State<Shared>) -> Response {
    let sim = lock(&sim);
    let mut mapped: Vec<u64> = sim.fabric.mappings().map(|m| m.lease.0).collect();
    mapped.sort_unstable();
    mapped.dedup();
    let shadows = sim
        .hosts()
        .flat_map(|h| {
            h.devices.iter().filter_map(move |(bdf, d)| {
                d.remote
                    .filter(|_| d.present)
                    .map(|fdid| (h.node, bdf.to_string(), fdid.to_string()))
            })
        })
        .collect();
    Json(FabricState {
        mapped_leases: mapped,
        shadows,
    })
    .into_response()
}

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

/// Blocks of 512 bytes behind each simulated NVMe device on the data path (64 MiB, sparse).
const NVME_BLOCKS: u64 = 131_072;

/// Where shared regions go by default: RAM-backed when /dev/shm exists.
pub fn shm_root() -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// The data path's directory, and whether it is ours to remove at exit.
fn datapath_dir(o: &SimServeOptions) -> (PathBuf, bool) {
    match &o.datapath_dir {
        Some(d) => (d.clone(), false),
        None => (
            shm_root().join(format!("pcipool-sim-{}", std::process::id())),
            true,
        ),
    }
}

/// The data-path service for the fabric `desc` in `dir`: every whole NVMe device that qualified for
/// sharing or lending is served.
///
/// # Errors
/// Bad description (exit 3), or the service's files cannot be made.
pub fn serve_datapath(desc: &pcipool_sim::FabricDesc, dir: &Path) -> anyhow::Result<DataPathState> {
    let sim = Sim::new(desc, 1).map_err(|e| crate::BadInput(e.to_string()))?;
    let mut service =
        DataPath::new(dir).with_context(|| format!("data path in {}", dir.display()))?;
    for (info, _) in pcipool_lab::qualified_devices(&sim, None) {
        if DeviceClass::of(info.class) == DeviceClass::Nvme
            && info.fdid.vf.is_none()
            && (info.models.contains(&AccessModel::Shared)
                || info.models.contains(&AccessModel::Lend))
        {
            service
                .add_nvme(
                    &info.fdid.to_string(),
                    512,
                    NVME_BLOCKS,
                    Idle::Sleep(std::time::Duration::from_millis(1)),
                )
                .with_context(|| format!("serving {} on the data path", info.fdid))?;
        }
    }
    Ok(DataPathState::new(service, None))
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
    let datapath = serve_datapath(&desc, &dir)?;
    let served = datapath.devices();
    let datapath = match &o.controller {
        Some(url) => datapath.with_controller(url.clone()),
        None => datapath,
    };
    if let Some(t) = &o.controller_token_file {
        datapath.reconcile_with(t.clone());
    }
    let shared: Shared = Arc::new(Mutex::new(sim));
    let app = Router::new()
        .route("/v1/hosts/{node}/devices", get(devices))
        .route("/v1/hosts/{node}/control", post(host_control))
        .route("/v1/steps", post(step))
        .route("/v1/state", get(state))
        .route("/v1/probe", post(probe))
        .route("/v1/health", get(|| async { "ok" }))
        .with_state(shared)
        .merge(crate::datapath_serve::router(datapath));
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
