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
    /// The fabric's switches and links.
    ///
    /// # Errors
    /// [`ControlError`].
    fn topology(&self) -> Result<pcipool_wire::TopologyView, ControlError>;
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

pub(crate) struct AppState<P> {
    pub(crate) pool: Arc<P>,
    pub(crate) tokens: Arc<BTreeMap<String, Principal>>,
    blocking: Arc<tokio::sync::Semaphore>,
    /// The OpenAPI document served at `/v1/openapi.json`, rendered once.
    openapi: Arc<String>,
}

impl<P> Clone for AppState<P> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            tokens: self.tokens.clone(),
            blocking: self.blocking.clone(),
            openapi: self.openapi.clone(),
        }
    }
}

/// The one way a handler calls the domain: on a blocking thread, at most [`MAX_BLOCKING_CALLS`] at
/// once, so the async workers only parse, authorise and answer.
pub(crate) async fn call<P: PoolApi, T: Send + 'static>(
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

/// A JSON request body, read the way JSON Schema reads JSON: a number with no fractional part is an
/// integer (`238.0` is `238`), so every body the contract allows parses. Its rejection is an
/// [`ApiError`] (400 BAD_REQUEST naming the bad field); handlers take it as `Result` and look at it
/// after the token, so a caller without a token hears 401 whatever it sent.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", why);
        let json = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !json {
            return Err(bad(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| bad(e.body_text()))?;
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        integral_numbers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|e| bad(format!("{}: {}", e.path(), e.inner())))
    }
}

/// Rewrites every number with no fractional part that fits a 64-bit integer as that integer.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
            {
                // Exact conversions only: the float must name the same integer.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let exact = if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    Some(Value::from(f as u64))
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    Some(Value::from(f as i64))
                } else {
                    None
                };
                if let Some(exact) = exact {
                    *value = exact;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        Value::Bool(_) | Value::Null | Value::String(_) => {}
    }
}

/// A request body as a handler took it, or the 400 BAD_REQUEST saying what is wrong with it.
///
/// # Errors
/// The body is not the JSON the route takes.
pub fn json_body<T>(body: Result<JsonBody<T>, ApiError>) -> Result<T, ApiError> {
    body.map(|JsonBody(v)| v)
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

pub(crate) fn principal<P: PoolApi>(
    state: &AppState<P>,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
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

/// 400 BAD_REQUEST: the input is outside what the contract documents.
pub(crate) fn bad_request(why: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", why)
}

/// Operators and admins only.
pub(crate) fn operators_only(who: &Principal) -> Result<(), ApiError> {
    if who.role < Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "operators and admins only",
        ));
    }
    Ok(())
}

/// A path parameter, or 400 BAD_REQUEST in the API's JSON error form.
///
/// # Errors
/// The parameter does not parse.
pub fn path_param<T>(
    param: Result<Path<T>, axum::extract::rejection::PathRejection>,
) -> Result<T, ApiError> {
    param
        .map(|Path(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()))
}

/// Query parameters, or 400 BAD_REQUEST in the API's JSON error form.
pub(crate) fn query_params<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.body_text()))
}

/// This document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "watch",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of what this server serves", body = Object)),
)]
pub(crate) async fn openapi_document<P: PoolApi>(State(state): State<AppState<P>>) -> Response {
    (
        [("content-type", "application/json")],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

/// The router, serving the pool API's own contract ([`crate::contract::document`]).
pub fn router<P: PoolApi>(pool: Arc<P>, tokens: BTreeMap<String, Principal>) -> Router {
    router_with_contract(pool, tokens, crate::contract::document())
}

/// The router, serving `contract` at `/v1/openapi.json`: the pool API's document, merged with the
/// documents of routes a runtime serves beside it (the data path of `pcipool dev`, the controller seat
/// of `pcipool server`).
pub fn router_with_contract<P: PoolApi>(
    pool: Arc<P>,
    tokens: BTreeMap<String, Principal>,
    contract: utoipa::openapi::OpenApi,
) -> Router {
    let state = AppState {
        pool,
        tokens: Arc::new(tokens),
        blocking: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_CALLS)),
        openapi: Arc::new(crate::contract::render(contract)),
    };
    use crate::routes::{agents, audit, devices, leases, watch};
    Router::new()
        .route("/v1/openapi.json", get(openapi_document::<P>))
        .route(
            "/v1/leases",
            post(leases::borrow::<P>).get(leases::leases::<P>),
        )
        .route(
            "/v1/leases/{id}",
            axum::routing::delete(leases::release::<P>),
        )
        .route("/v1/leases/{id}/downgrade", post(leases::downgrade::<P>))
        .route("/v1/leases/{id}/heartbeat", post(leases::renew::<P>))
        .route("/v1/devices", get(devices::devices::<P>))
        .route("/v1/audit/verify", get(audit::audit_verify::<P>))
        .route(
            "/v1/audit",
            get(audit::audit_list::<P>).post(audit::audit_record::<P>),
        )
        .route("/v1/hosts", get(devices::hosts::<P>))
        .route("/v1/topology", get(devices::topology::<P>))
        .route("/v1/devices/{fdid}", get(devices::device::<P>))
        .route(
            "/v1/devices/{fdid}/actions",
            post(devices::device_action::<P>),
        )
        .route("/v1/agents", post(agents::register_agent::<P>))
        .route(
            "/v1/agents/{node}/heartbeat",
            post(agents::agent_heartbeat::<P>),
        )
        .route("/v1/workflows/{id}", get(watch::workflow::<P>))
        .route("/metrics", get(watch::metrics::<P>))
        .route("/v1/events", get(watch::events::<P>))
        .route("/v1/whoami", get(watch::whoami::<P>))
        .merge(crate::ui::routes())
        .merge(crate::redfish::routes::<P>())
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
