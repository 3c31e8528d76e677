//! A fabric manager's HTTP side: the controller sends fabric steps (map, unmap, attach, detach) to
//! `POST /v1/steps`, and the step runner carries them out over whatever `FabricControl` this process
//! holds (the hypervisor's QMP for a QEMU lab; a switch's manager later). One step at a time: a fabric
//! move is not something to interleave.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_backend::{Absent, FabricControl, Side, StepError, StepOutput};
use pcipool_wire::StepRequest;

use crate::runner::StepRunner;
use crate::server::{error, status_of};
use crate::stats::StepClock;

/// Something that holds a fabric and runs one fabric step on it at a time: a `FabricControl` behind
/// a lock, or a simulator whose fabric is borrowed from it for the step.
pub trait FabricHolder: Send + Sync + 'static {
    /// Runs one fabric step through the step runner.
    ///
    /// # Errors
    /// The step's error.
    fn run_fabric_step(&self, request: &StepRequest) -> Result<StepOutput, StepError>;

    /// Time the fabric spent waiting on the hypervisor or switch (zero when not measured).
    fn waited(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl<F: FabricControl + Send + 'static> FabricHolder for Mutex<F> {
    fn run_fabric_step(&self, request: &StepRequest) -> Result<StepOutput, StepError> {
        let mut fabric = self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        StepRunner::new(Absent, &mut *fabric).run(request.step, &request.ctx)
    }

    fn waited(&self) -> std::time::Duration {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .waited()
    }
}

/// What the fabric manager's handlers share: the fabric and the clock of its steps.
struct Manager<H> {
    fabric: Arc<H>,
    clock: Arc<StepClock>,
}

// Derived `Clone` would ask `H: Clone`; only the handles are cloned.
impl<H> Clone for Manager<H> {
    fn clone(&self) -> Self {
        Self {
            fabric: self.fabric.clone(),
            clock: self.clock.clone(),
        }
    }
}

async fn step<H: FabricHolder>(
    State(manager): State<Manager<H>>,
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
    let (fabric, started) = (manager.fabric.clone(), std::time::Instant::now());
    let ran = tokio::task::spawn_blocking(move || fabric.run_fabric_step(&request)).await;
    manager.clock.count(started);
    match ran {
        Ok(Ok(output)) => Json(output).into_response(),
        Ok(Err(e)) => error(status_of(e.kind), e.kind.code(), e.message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    }
}

async fn stats<H: FabricHolder>(State(manager): State<Manager<H>>) -> Response {
    let fabric = manager.fabric.clone();
    match tokio::task::spawn_blocking(move || fabric.waited()).await {
        Ok(waited) => Json(manager.clock.stats(waited)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    }
}

/// `POST /v1/steps` (and `GET /v1/stats`) over `fabric`, for a process that serves other routes too.
pub fn steps_route<H: FabricHolder>(fabric: Arc<H>) -> Router {
    Router::new()
        .route("/v1/steps", post(step::<H>))
        .route("/v1/stats", get(stats::<H>))
        .with_state(Manager {
            fabric,
            clock: Arc::default(),
        })
}

/// The fabric manager's routes over `fabric`.
pub fn router<F: FabricControl + Send + 'static>(fabric: Arc<Mutex<F>>) -> Router {
    steps_route(fabric).route("/v1/health", get(|| async { "ok" }))
}

/// Serves `fabric` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener failed.
pub async fn serve<F: FabricControl + Send + 'static>(
    fabric: Arc<Mutex<F>>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(fabric))
        .with_graceful_shutdown(shutdown)
        .await
}
