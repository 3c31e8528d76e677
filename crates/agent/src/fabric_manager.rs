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

/// Something that holds a fabric and runs one fabric step on it at a time: a `FabricControl` behind
/// a lock, or a simulator whose fabric is borrowed from it for the step.
pub trait FabricHolder: Send + Sync + 'static {
    /// Runs one fabric step through the step runner.
    ///
    /// # Errors
    /// The step's error.
    fn run_fabric_step(&self, request: &StepRequest) -> Result<StepOutput, StepError>;
}

impl<F: FabricControl + Send + 'static> FabricHolder for Mutex<F> {
    fn run_fabric_step(&self, request: &StepRequest) -> Result<StepOutput, StepError> {
        let mut fabric = self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        StepRunner::new(Absent, &mut *fabric).run(request.step, &request.ctx)
    }
}

async fn step<H: FabricHolder>(
    State(fabric): State<Arc<H>>,
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
    let ran = tokio::task::spawn_blocking(move || fabric.run_fabric_step(&request)).await;
    match ran {
        Ok(Ok(output)) => Json(output).into_response(),
        Ok(Err(e)) => error(status_of(e.kind), e.kind.code(), e.message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    }
}

/// `POST /v1/steps` over `fabric`, for a process that serves other routes too.
pub fn steps_route<H: FabricHolder>(fabric: Arc<H>) -> Router {
    Router::new()
        .route("/v1/steps", post(step::<H>))
        .with_state(fabric)
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
