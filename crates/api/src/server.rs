//! Routes, bearer-token auth with roles, JSON errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_controller::{ControlError, Granted};
use pcipool_fabric::LeaseId;

use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, ApiErrorBody, AuditVerify, AuditView, BorrowRequest,
    DeviceAction, DeviceDetail, DeviceView, HeartbeatReply, HostView, LeaseView, RegistrationReply,
};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A tenant: borrows, sees and releases only its own leases.
    Tenant,
    /// A host agent.
    Agent,
    /// An operator: every lease, drains, quarantines.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// The role as token files and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Agent => "agent",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name (the tenant name for tenants).
    pub name: String,
    /// Role.
    pub role: Role,
}

/// The domain behind the API. Implemented by the runtime that owns the controller and the executor.
pub trait PoolApi: Send + Sync + 'static {
    /// Grants a request.
    ///
    /// # Errors
    /// [`ControlError`].
    fn borrow(
        &self,
        actor: &str,
        tenant: &str,
        request: BorrowRequest,
    ) -> Result<Vec<Granted>, ControlError>;
    /// Releases a lease (`tenant` None = operator).
    ///
    /// # Errors
    /// [`ControlError`].
    fn release(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
    ) -> Result<(), ControlError>;
    /// Downgrades an exclusive shared-model lease so up to `max_sharers` hosts may share the device
    /// (`tenant` None = operator).
    ///
    /// # Errors
    /// [`ControlError`].
    fn downgrade(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        max_sharers: u32,
    ) -> Result<(), ControlError>;
    /// Renews a lease (`tenant` None = operator): how applications keep shared-model leases alive.
    ///
    /// # Errors
    /// [`ControlError`].
    fn renew(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        epoch: u64,
    ) -> Result<(), ControlError>;
    /// Appends a record another part of the pool reports (operators only).
    ///
    /// # Errors
    /// [`ControlError`].
    fn record(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        result: &str,
    ) -> Result<(), ControlError>;
    /// Every lease.
    ///
    /// # Errors
    /// [`ControlError`].
    fn leases(&self) -> Result<Vec<LeaseView>, ControlError>;
    /// Every device.
    ///
    /// # Errors
    /// [`ControlError`].
    fn devices(&self) -> Result<Vec<DeviceView>, ControlError>;
    /// Verifies the audit chain.
    ///
    /// # Errors
    /// [`ControlError`].
    fn audit_verify(&self) -> Result<AuditVerify, ControlError>;
    /// Audit records from `from` (at most `limit`).
    ///
    /// # Errors
    /// [`ControlError`].
    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ControlError>;
    /// Hosts.
    ///
    /// # Errors
    /// [`ControlError`].
    fn hosts(&self) -> Result<Vec<HostView>, ControlError>;
    /// An operator action on a device; returns the new state name.
    ///
    /// # Errors
    /// [`ControlError`].
    fn device_action(
        &self,
        actor: &str,
        fdid: pcipool_fabric::Fdid,
        action: DeviceAction,
    ) -> Result<String, ControlError>;
    /// A workflow journal as JSON.
    ///
    /// # Errors
    /// [`ControlError`].
    fn workflow(&self, id: u64) -> Result<Option<serde_json::Value>, ControlError>;
    /// One device in full.
    ///
    /// # Errors
    /// [`ControlError`].
    fn device(&self, fdid: pcipool_fabric::Fdid) -> Result<DeviceDetail, ControlError>;
    /// An agent announces itself and its devices (again after a restart of either side).
    ///
    /// # Errors
    /// [`ControlError`].
    fn register_agent(
        &self,
        actor: &str,
        registration: AgentRegistration,
    ) -> Result<RegistrationReply, ControlError>;
    /// An agent's heartbeat: it is alive, and renews the leases its host carries.
    ///
    /// # Errors
    /// [`ControlError`].
    fn agent_heartbeat(
        &self,
        node: pcipool_fabric::NodeId,
        beat: AgentHeartbeat,
    ) -> Result<HeartbeatReply, ControlError>;
    /// The metrics' exposition text (Prometheus/OpenMetrics).
    ///
    /// # Errors
    /// [`ControlError`].
    fn metrics_text(&self) -> Result<String, ControlError>;
    /// Counts a request the API refused, by its stable code.
    fn count_refusal(&self, code: &str);
    /// A receiver woken by every change the domain commits (see
    /// `pcipool_controller::Controller::subscribe_changes`): long polls wait on it.
    fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// How many domain calls run at once on blocking threads. Every domain call blocks (the store is
/// synchronous, a lend waits for its steps); more requests than this queue here instead of growing
/// tokio's blocking pool without bound.
pub const MAX_BLOCKING_CALLS: usize = 64;

/// How often a long poll reads its workflow again although nothing in this process changed: another
/// controller sharing the store may have finished it.
const LONG_POLL_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

struct AppState<P> {
    pool: Arc<P>,
    tokens: Arc<BTreeMap<String, Principal>>,
    blocking: Arc<tokio::sync::Semaphore>,
}

impl<P> Clone for AppState<P> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            tokens: self.tokens.clone(),
            blocking: self.blocking.clone(),
        }
    }
}

/// The one way a handler calls the domain: on a blocking thread, at most [`MAX_BLOCKING_CALLS`] at
/// once, so the async workers only parse, authorise and answer.
async fn call<P: PoolApi, T: Send + 'static>(
    state: &AppState<P>,
    f: impl FnOnce(&P) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    let internal = |why: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", why);
    let permit = state
        .blocking
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| internal(e.to_string()))?;
    let pool = state.pool.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&pool)
    })
    .await
    .map_err(|e| internal(e.to_string()))?;
    answer.map_err(|e| {
        state.pool.count_refusal(e.code());
        ApiError::from(e)
    })
}

/// An API error: status plus JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ApiErrorBody,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = e.error_code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, code.as_str(), e.to_string())
    }
}

/// A request body, or 400 BAD_REQUEST saying what is wrong with it.
///
/// # Errors
/// The body is not the JSON the route takes.
pub fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()))
}

/// A JSON error response with a stable code, for the other HTTP services pcipool runs (agents, the
/// simulated fabric) so every pcipool endpoint fails the same way.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn principal<P: PoolApi>(state: &AppState<P>, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = token.and_then(|t| state.tokens.get(t.trim()).cloned());
    known.ok_or_else(|| {
        state.pool.count_refusal("UNAUTHORIZED");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            if token.is_some() {
                "unknown token"
            } else {
                "missing bearer token"
            },
        )
    })
}

async fn borrow<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    body: Result<Json<BorrowRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Vec<Granted>>), ApiError> {
    let who = principal(&state, &headers)?;
    let request = json_body(body)?;
    if who.role == Role::Agent {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "agents cannot borrow",
        ));
    }
    let wait = request.wait;
    let granted = call(&state, move |d| d.borrow(&who.name, &who.name, request)).await?;
    let status = if wait {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(granted)))
}

/// Runs `change` on a lease for its tenant or an operator (agents carry out steps; changing or ending a
/// lease is not theirs to do); 204 when it succeeds.
async fn lease_change<P: PoolApi>(
    state: &AppState<P>,
    headers: &HeaderMap,
    what: &str,
    change: impl FnOnce(&P, &str, Option<&str>) -> Result<(), ControlError> + Send + 'static,
) -> Result<StatusCode, ApiError> {
    let who = principal(state, headers)?;
    if who.role == Role::Agent {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("agents cannot {what} leases"),
        ));
    }
    let tenant = (who.role == Role::Tenant).then(|| who.name.clone());
    call(state, move |d| change(d, &who.name, tenant.as_deref())).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn release<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    lease_change(&state, &headers, "release", move |d, actor, tenant| {
        d.release(actor, tenant, LeaseId(id))
    })
    .await
}

async fn downgrade<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Result<Json<pcipool_wire::DowngradeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = json_body(body)?;
    lease_change(&state, &headers, "downgrade", move |d, actor, tenant| {
        d.downgrade(actor, tenant, LeaseId(id), request.max_sharers)
    })
    .await
}

async fn renew<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    body: Result<Json<pcipool_wire::RenewRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = json_body(body)?;
    lease_change(&state, &headers, "renew", move |d, actor, tenant| {
        d.renew(actor, tenant, LeaseId(id), request.epoch)
    })
    .await
}

async fn leases<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    let who = principal(&state, &headers)?;
    let all = call(&state, P::leases).await?;
    let visible = all
        .into_iter()
        .filter(|l| who.role != Role::Tenant || l.tenant == who.name)
        .collect();
    Ok(Json(visible))
}

async fn devices<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    principal(&state, &headers)?;
    Ok(Json(call(&state, P::devices).await?))
}

async fn audit_verify<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<AuditVerify>, ApiError> {
    let who = principal(&state, &headers)?;
    if who.role < Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "operators and admins only",
        ));
    }
    Ok(Json(call(&state, P::audit_verify).await?))
}

async fn audit_record<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    body: Result<Json<pcipool_wire::AuditRecord>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let who = principal(&state, &headers)?;
    if who.role < Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "operators and admins only",
        ));
    }
    let r = json_body(body)?;
    call(&state, move |d| {
        d.record(&who.name, &r.target, &r.action, &r.result)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit_list<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let who = principal(&state, &headers)?;
    if who.role < Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "operators and admins only",
        ));
    }
    let from = q.get("from").and_then(|v| v.parse().ok()).unwrap_or(1);
    let limit = q
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .min(10_000);
    Ok(Json(call(&state, move |d| d.audit(from, limit)).await?))
}

async fn hosts<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Vec<HostView>>, ApiError> {
    principal(&state, &headers)?;
    Ok(Json(call(&state, P::hosts).await?))
}

async fn device_action<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(fdid): Path<String>,
    body: Result<Json<DeviceAction>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = principal(&state, &headers)?;
    if who.role < Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "operators and admins only",
        ));
    }
    let action = json_body(body)?;
    let fdid = fdid.parse().map_err(|e: pcipool_fabric::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
    })?;
    let state_name = call(&state, move |d| d.device_action(&who.name, fdid, action)).await?;
    Ok(Json(
        serde_json::json!({ "fdid": fdid.to_string(), "state": state_name }),
    ))
}

async fn device<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(fdid): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let who = principal(&state, &headers)?;
    let fdid = fdid.parse().map_err(|e: pcipool_fabric::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
    })?;
    let mut detail = call(&state, move |d| d.device(fdid)).await?;
    if who.role == Role::Tenant {
        detail.leases.retain(|l| l.tenant == who.name);
    }
    Ok(Json(detail))
}

/// Agents (and admins) only; an agent token named after a host (`n3`) speaks for that host alone. A token
/// with another name (the lab's shared `agent` token) may speak for any host.
fn agents_only(who: &Principal, node: pcipool_fabric::NodeId) -> Result<(), ApiError> {
    let forbidden = |why: String| Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", why));
    match who.role {
        Role::Admin => Ok(()),
        Role::Agent => match who.name.parse::<pcipool_fabric::NodeId>() {
            Ok(own) if own != node => {
                forbidden(format!("the agent token of {own} cannot speak for {node}"))
            }
            _ => Ok(()),
        },
        Role::Tenant | Role::Operator => forbidden("agents and admins only".into()),
    }
}

async fn register_agent<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    body: Result<Json<AgentRegistration>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RegistrationReply>, ApiError> {
    let who = principal(&state, &headers)?;
    let registration = json_body(body)?;
    agents_only(&who, registration.node)?;
    let reply = call(&state, move |d| d.register_agent(&who.name, registration)).await?;
    Ok(Json(reply))
}

async fn agent_heartbeat<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(node): Path<String>,
    body: Result<Json<AgentHeartbeat>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let who = principal(&state, &headers)?;
    let node: pcipool_fabric::NodeId = node.parse().map_err(|e: pcipool_fabric::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
    })?;
    agents_only(&who, node)?;
    let beat = json_body(body)?;
    let reply = call(&state, move |d| d.agent_heartbeat(node, beat)).await?;
    Ok(Json(reply))
}

async fn workflow<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal(&state, &headers)?;
    // `wait_secs`: hold the answer until the workflow has an outcome (or the time is up), so a client
    // follows a long operation without polling in a loop.
    let wait_secs: u64 = match q.get("wait_secs") {
        None => 0,
        Some(v) => v.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("wait_secs={v:?} is not a number of seconds"),
            )
        })?,
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait_secs.min(300));
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

async fn metrics<P: PoolApi>(State(state): State<AppState<P>>) -> Result<Response, ApiError> {
    let text = call(&state, PoolApi::metrics_text).await?;
    Ok(([("content-type", pcipool_metrics::CONTENT_TYPE)], text).into_response())
}

/// Who a token is: what the dashboard shows and which actions it offers.
async fn whoami<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<pcipool_wire::WhoAmI>, ApiError> {
    let who = principal(&state, &headers)?;
    Ok(Json(pcipool_wire::WhoAmI {
        name: who.name,
        role: who.role.as_str().to_owned(),
    }))
}

/// How often an event stream with nothing to say sends a comment, so proxies keep it open.
const EVENTS_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `change` events, one per change the domain commits (several quick changes may come as one):
/// watchers re-read what they show. No token: an event carries a counter and nothing else.
async fn events<P: PoolApi>(
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

/// The OpenAPI document (checked in beside this file).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

/// The router (exposed so tests can list its routes against the OpenAPI document).
pub fn router<P: PoolApi>(pool: Arc<P>, tokens: BTreeMap<String, Principal>) -> Router {
    let state = AppState {
        pool,
        tokens: Arc::new(tokens),
        blocking: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_CALLS)),
    };
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/leases", post(borrow::<P>).get(leases::<P>))
        .route("/v1/leases/{id}", axum::routing::delete(release::<P>))
        .route("/v1/leases/{id}/downgrade", post(downgrade::<P>))
        .route("/v1/leases/{id}/heartbeat", post(renew::<P>))
        .route("/v1/devices", get(devices::<P>))
        .route("/v1/audit/verify", get(audit_verify::<P>))
        .route("/v1/audit", get(audit_list::<P>).post(audit_record::<P>))
        .route("/v1/hosts", get(hosts::<P>))
        .route("/v1/devices/{fdid}", get(device::<P>))
        .route("/v1/devices/{fdid}/actions", post(device_action::<P>))
        .route("/v1/agents", post(register_agent::<P>))
        .route("/v1/agents/{node}/heartbeat", post(agent_heartbeat::<P>))
        .route("/v1/workflows/{id}", get(workflow::<P>))
        .route("/metrics", get(metrics::<P>))
        .route("/v1/events", get(events::<P>))
        .route("/v1/whoami", get(whoami::<P>))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Serves until `shutdown` resolves.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve<P: PoolApi>(
    listener: tokio::net::TcpListener,
    pool: Arc<P>,
    tokens: BTreeMap<String, Principal>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(pool, tokens))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    /// Every route the router declares (read from this file's source) has an OpenAPI entry, and the
    /// document lists nothing the router does not serve.
    #[test]
    fn openapi_paths_match_the_router() {
        let source = include_str!("server.rs");
        let mut routes: Vec<&str> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        routes.sort_unstable();
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        documented.sort_unstable();
        assert_eq!(routes, documented);
    }
}
