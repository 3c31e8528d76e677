//! What watchers read: a workflow's journal (with a long poll), the event stream, metrics, and who a
//! token is.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pcipool_wire::{ApiErrorBody, WaitQuery, WhoAmI};

use super::{PathParam, QueryParams};
use crate::server::{
    ApiError, AppState, PoolApi, bad_request, call, path_param, principal, query_params,
};

/// How often a long poll reads its workflow again although nothing in this process changed: another
/// controller sharing the store may have finished it.
const LONG_POLL_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A workflow's journal: its steps, each step's status and output, and its outcome once it has one.
#[utoipa::path(
    get, path = "/v1/workflows/{id}", tag = "watch",
    params(("id" = u64, Path, description = "Workflow id"), WaitQuery),
    responses(
        (status = 200, description = "The journal (`outcome` is null while it runs)", body = Object),
        (status = 404, description = "NO_SUCH_WORKFLOW", body = ApiErrorBody),
    ),
)]
pub(crate) async fn workflow<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    id: PathParam<u64>,
    query: QueryParams<WaitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal(&state, &headers)?;
    let id = path_param(id)?;
    // `wait_secs`: hold the answer until the workflow has an outcome (or the time is up), so a client
    // follows a long operation without polling in a loop.
    let wait = query_params(query)?.checked().map_err(bad_request)?;
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the first read, so a change between the read and the wait still wakes it.
    let mut changes = state.pool.subscribe_changes();
    loop {
        let journal = call(&state, move |d| d.workflow(id))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NO_SUCH_WORKFLOW",
                    format!("no workflow {id}"),
                )
            })?;
        let finished = !journal["outcome"].is_null();
        let now = tokio::time::Instant::now();
        // A domain going away answers as it stands (a server's graceful shutdown waits for this).
        let closing = *changes.borrow() == u64::MAX;
        if finished || closing || now >= deadline {
            return Ok(Json(journal));
        }
        let wake = deadline.min(now + LONG_POLL_RECHECK);
        // A change, the re-check time or the deadline: read again. A closed channel (the domain is
        // going away) waits out the re-check time instead of spinning.
        if let Ok(Err(_)) = tokio::time::timeout_at(wake, changes.changed()).await {
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// The pool's metrics in the Prometheus text format (no token: scrapers read it).
#[utoipa::path(
    get, path = "/metrics", tag = "watch",
    security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")),
)]
pub(crate) async fn metrics<P: PoolApi>(
    State(state): State<AppState<P>>,
) -> Result<Response, ApiError> {
    let text = call(&state, PoolApi::metrics_text).await?;
    Ok(([("content-type", pcipool_metrics::CONTENT_TYPE)], text).into_response())
}

/// Who a token is: what the dashboard shows and which actions it offers.
#[utoipa::path(
    get, path = "/v1/whoami", tag = "watch",
    responses((status = 200, description = "The token's principal", body = WhoAmI)),
)]
pub(crate) async fn whoami<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    let who = principal(&state, &headers)?;
    Ok(Json(WhoAmI {
        name: who.name,
        role: who.role.as_str().to_owned(),
    }))
}

/// How often an event stream with nothing to say sends a comment, so proxies keep it open.
const EVENTS_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `change` events, one per change the domain commits (several quick changes may come as one):
/// watchers re-read what they show. No token: an event carries a counter and nothing else.
#[utoipa::path(
    get, path = "/v1/events", tag = "watch",
    security(()),
    responses((status = 200, description = "Server-sent events: `event: change`, `data: {\"changes\":N}`", body = String, content_type = "text/event-stream")),
)]
pub(crate) async fn events<P: PoolApi>(
    State(state): State<AppState<P>>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    let changes = state.pool.subscribe_changes();
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        // A closed channel (the domain is going away) ends the stream.
        changes.changed().await.ok()?;
        let n = *changes.borrow_and_update();
        if n == u64::MAX {
            // The domain is going away (see `Controller::close_changes`).
            return None;
        }
        let event = axum::response::sse::Event::default()
            .event("change")
            .data(format!("{{\"changes\":{n}}}"));
        Some((Ok(event), changes))
    });
    axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(EVENTS_KEEP_ALIVE))
}
