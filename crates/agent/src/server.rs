//! The agent's HTTP side: the controller sends host steps to `POST /v1/steps` with the secret the agent
//! registered; the answer is the step's output, or an error whose code is the step error's kind.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_backend::{DeviceControl, StepErrorKind};
use pcipool_wire::{ApiErrorBody, StepRequest};

use crate::runtime::Agent;

/// A JSON error with a stable code, as every pcipool service answers.
pub(crate) fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ApiErrorBody {
        code: code.to_owned(),
        message,
    };
    (status, Json(body)).into_response()
}

/// The HTTP status a step error travels with.
pub fn status_of(kind: StepErrorKind) -> StatusCode {
    match kind {
        StepErrorKind::HostDown => StatusCode::BAD_GATEWAY,
        StepErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        StepErrorKind::Unsupported => StatusCode::BAD_REQUEST,
        StepErrorKind::Busy | StepErrorKind::StaleEpoch | StepErrorKind::Failed => {
            StatusCode::CONFLICT
        }
    }
}

async fn step<D: DeviceControl + Send + 'static>(
    State(agent): State<Arc<Agent<D>>>,
    headers: HeaderMap,
    body: Result<Json<StepRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let authorised = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| agent.authorises(t.trim()));
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
    let started = std::time::Instant::now();
    let counted = agent.clone();
    let ran = tokio::task::spawn_blocking(move || agent.execute(&request)).await;
    counted.clock.count(started);
    match ran {
        Ok(Ok(output)) => Json(output).into_response(),
        Ok(Err(e)) => error(status_of(e.kind), e.kind.code(), e.message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    }
}

async fn stats<D: DeviceControl + Send + 'static>(State(agent): State<Arc<Agent<D>>>) -> Response {
    match tokio::task::spawn_blocking(move || agent.stats()).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
    }
}

/// The agent's routes.
pub fn router<D: DeviceControl + Send + 'static>(agent: Arc<Agent<D>>) -> Router {
    Router::new()
        .route("/v1/steps", post(step::<D>))
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/stats", get(stats::<D>))
        .with_state(agent)
}

/// Serves `agent` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener failed.
pub async fn serve<D: DeviceControl + Send + 'static>(
    agent: Arc<Agent<D>>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(agent))
        .with_graceful_shutdown(shutdown)
        .await
}
