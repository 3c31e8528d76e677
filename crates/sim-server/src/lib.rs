//! The simulated fabric as a server (simulation only): what `pcipool sim serve` runs, as a library so
//! tests and other runtimes serve it on a listener they bind. It plays every host's hardware (an
//! agent calls its kernel's primitives at `/v1/hosts/{node}/control`), the fabric manager (fabric
//! steps at `/v1/steps`), the validation test port (`/v1/probe`) and the data path of the simulated
//! NVMe devices (`/v1/datapath/...`).
//!
//! # Layout
//! - this file: the hardware and fabric-manager routes, [`router`], [`serve_datapath`].
//! - [`probe`]: the test port's one request type and its answers.
//! - [`datapath`]: the data path's routes over `pcipool-sim-datapath`'s service.
//! - [`process`]: `pcipool sim serve` as a process.
#![deny(missing_docs)]

pub mod datapath;
pub mod probe;
pub mod process;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_agent::StepRunner;
use pcipool_agent::fabric_manager::{self, FabricHolder};
use pcipool_api::server::error_response as error;
use pcipool_backend::remote::{self, HostOp};
use pcipool_backend::{Absent, Site as _, StepError, StepOutput};
use pcipool_fabric::NodeId;
use pcipool_pool::schedule::DeviceClass;
use pcipool_qualify::AccessModel;
use pcipool_sim::Sim;
use pcipool_sim_datapath::service::{DataPath, DataPathError, Idle};
use pcipool_wire::{ReportedDevice, StepRequest};

pub use datapath::DataPathState;

/// Why the server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimServerError {
    /// The simulator refused the fabric description.
    #[error("fabric description: {0}")]
    Description(String),
    /// The data path's files could not be made.
    #[error(transparent)]
    DataPath(#[from] DataPathError),
}

/// The simulated hardware, shared by the routes.
pub type Shared = Arc<Mutex<Sim>>;

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
    let report: Vec<ReportedDevice> = pcipool_sim_lab::qualified_devices(&sim, Some(node))
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
/// The simulated fabric as a fabric manager sees it: its fabric borrowed from the lock for one step.
struct SimFabric(Shared);

impl FabricHolder for SimFabric {
    fn run_fabric_step(&self, request: &StepRequest) -> Result<StepOutput, StepError> {
        let mut sim = lock(&self.0);
        StepRunner::new(Absent, sim.fabric_control()).run(request.step, &request.ctx)
    }
}

async fn probe(
    State(sim): State<Shared>,
    body: Result<Json<probe::Probe>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()),
    };
    match probe::answer(&mut lock(&sim), &request) {
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

/// Every route of the simulated fabric over `sim`, with the data path `datapath`.
pub fn router(sim: Shared, datapath: DataPathState) -> Router {
    Router::new()
        .route("/v1/hosts/{node}/devices", get(devices))
        .route("/v1/hosts/{node}/control", post(host_control))
        .route("/v1/state", get(state))
        .route("/v1/probe", post(probe))
        .route("/v1/health", get(|| async { "ok" }))
        .with_state(sim.clone())
        .merge(fabric_manager::steps_route(Arc::new(SimFabric(sim))))
        .merge(datapath::router(datapath))
}

/// Blocks of 512 bytes behind each simulated NVMe device on the data path (64 MiB, sparse).
pub const NVME_BLOCKS: u64 = 131_072;

/// Where shared regions go by default: RAM-backed when /dev/shm exists.
pub fn shm_root() -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// The data-path service for the fabric `desc` in `dir`: every whole NVMe device that qualified for
/// sharing or lending is served.
///
/// # Errors
/// [`SimServerError`]: a description the simulator refuses, or the service's files cannot be made.
pub fn serve_datapath(
    desc: &pcipool_sim::FabricDesc,
    dir: &Path,
) -> Result<DataPathState, SimServerError> {
    let sim = Sim::new(desc, 1).map_err(|e| SimServerError::Description(e.to_string()))?;
    let mut service = DataPath::new(dir)?;
    for (info, _) in pcipool_sim_lab::qualified_devices(&sim, None) {
        if DeviceClass::of(info.class) == DeviceClass::Nvme
            && info.fdid.vf.is_none()
            && (info.models.contains(&AccessModel::Shared)
                || info.models.contains(&AccessModel::Lend))
        {
            service.add_nvme(
                &info.fdid.to_string(),
                512,
                NVME_BLOCKS,
                Idle::Sleep(std::time::Duration::from_millis(1)),
            )?;
        }
    }
    Ok(DataPathState::new(service, None))
}
