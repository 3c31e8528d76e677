//! The data path of `pcipool sim serve`: the HTTP face of [`pcipool_sim_datapath::service::DataPath`].
//! Every mapping request is checked with the controller under the caller's own token (the lease
//! must be visible to the caller, for that device and borrower host, shared-model or lent); a
//! background thread asks the controller for every lease under the fabric's operator token, tears
//! down the mappings of leases that ended, and reports every teardown to the controller's audit
//! chain. While the controller is unreachable nothing is torn down and nothing new is granted:
//! mappings in use keep working through a controller restart, as NTB windows do.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pcipool_api::server::{ApiError, json_body, path_param};
use pcipool_client::{Client, ClientError};
use pcipool_qualify::AccessModel;
use pcipool_sim_datapath::service::{DataPath, DataPathError, Grant};
use pcipool_sim_datapath::service::{DeviceMemoryGrant, WindowGrant};
use pcipool_sim_datapath::wire::{
    DeviceMemoryRequest, Events, ExportRequest, Holder, Info, InterruptRequest, Mapped, Released,
    SegmentCreate, SegmentMade, SegmentRequest, TornDown,
};
use pcipool_wire::ApiErrorBody;

/// How often the fabric compares its mappings with the controller's leases.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);

/// The data path's state behind the HTTP routes.
#[derive(Clone)]
pub struct DataPathState {
    service: Arc<Mutex<DataPath>>,
    controller: Option<String>,
    /// Digests of the tokens the controller has confirmed (tokens are static configuration, so a
    /// confirmed one stays good for the life of this process).
    confirmed: Arc<Mutex<BTreeSet<String>>>,
}

fn lock(s: &Mutex<DataPath>) -> std::sync::MutexGuard<'_, DataPath> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn refused(e: &DataPathError) -> ApiError {
    let (status, code) = match e {
        DataPathError::NoDevice(_) => (StatusCode::NOT_FOUND, "NO_SUCH_DEVICE"),
        DataPathError::BadName(_) | DataPathError::BadSize(_) => {
            (StatusCode::BAD_REQUEST, "BAD_REQUEST")
        }
        DataPathError::NotExported { .. }
        | DataPathError::LeaseMismatch { .. }
        | DataPathError::NotOwner(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
        DataPathError::NoSegment { .. } => (StatusCode::NOT_FOUND, "NO_SUCH_SEGMENT"),
        DataPathError::NoSlots => (StatusCode::SERVICE_UNAVAILABLE, "NO_WINDOW_SLOTS"),
        DataPathError::TooMany { .. } => (StatusCode::CONFLICT, "TOO_MANY"),
        DataPathError::Shm(_) => (StatusCode::CONFLICT, "SHARED_MEMORY"),
        DataPathError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "IO"),
    };
    ApiError::new(status, code, e.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// The caller's identity: a digest of its bearer token (the token itself is never kept). With a
/// controller, the token must be one the controller knows (asked once per token, at `/v1/whoami`), so a
/// made-up token neither makes segments nor ends anybody's mappings; a fabric started without a
/// controller cannot ask, and takes the token as it comes.
async fn caller(state: &DataPathState, headers: &HeaderMap) -> Result<String, ApiError> {
    use sha2::Digest as _;
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a bearer token is required",
        )
    })?;
    let digest: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let Some(controller) = state.controller.clone() else {
        return Ok(digest);
    };
    let confirmed = |s: &DataPathState| {
        s.confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&digest)
    };
    if confirmed(state) {
        return Ok(digest);
    }
    let asked = tokio::task::spawn_blocking(move || {
        Client::new(&controller, &token).get::<pcipool_wire::WhoAmI>("/v1/whoami")
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    match asked {
        Ok(_) => {
            state
                .confirmed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(digest.clone());
            Ok(digest)
        }
        Err(ClientError::Api {
            status: 401,
            message,
            ..
        }) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            message,
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CONTROLLER_UNAVAILABLE",
            format!("cannot check the token: {e}"),
        )),
    }
}

/// Checks with the controller, under the caller's token, that `lease` is a shared-model lease on `fdid`
/// held by `host`.
async fn check_lease(
    state: &DataPathState,
    headers: &HeaderMap,
    lease: u64,
    fdid: &str,
    host: &str,
) -> Result<(), ApiError> {
    let Some(controller) = state.controller.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NO_CONTROLLER",
            "this fabric was started without --controller: it cannot check leases",
        ));
    };
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a bearer token is required",
        ));
    };
    let leases = tokio::task::spawn_blocking(move || Client::new(&controller, &token).leases())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    let leases = match leases {
        Ok(l) => l,
        Err(ClientError::Api {
            status: 401,
            message,
            ..
        }) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                message,
            ));
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "CONTROLLER_UNAVAILABLE",
                format!("cannot check the lease: {e}"),
            ));
        }
    };
    // Shared-model leases map as soon as they are granted; a lent device once its lend finished (the
    // borrower's native driver then reaches it through the window the lend set up).
    let held = leases.iter().any(|l| {
        l.lease_id.0 == lease
            && l.fdid.to_string() == fdid
            && l.borrower.to_string() == host
            && (l.model == AccessModel::Shared
                || (l.model == AccessModel::Lend && l.state == "lent"))
    });
    if held {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "NOT_YOUR_LEASE",
            format!("lease {lease} is not a shared or lent lease of yours on {fdid} for {host}"),
        ))
    }
}

#[utoipa::path(
    get, path = "/v1/datapath", tag = "datapath",
    security(()),
    responses(
        (status = 200, description = "The data path", body = Info),
    ),
)]
pub(crate) async fn info(State(state): State<DataPathState>) -> Response {
    let s = lock(&state.service);
    Json(Info {
        dir: s.dir().display().to_string(),
        devices: s.devices().map(str::to_owned).collect(),
    })
    .into_response()
}

#[utoipa::path(
    get, path = "/v1/datapath/events", tag = "datapath",
    security(()),
    responses(
        (status = 200, description = "Faults, teardowns and mapped leases", body = Events),
    ),
)]
pub(crate) async fn events(State(state): State<DataPathState>) -> Response {
    let s = lock(&state.service);
    let (window_faults, dma_faults) = s.faults();
    Json(Events {
        window_faults,
        dma_faults,
        torn_down: s
            .torn_down
            .iter()
            .map(|(lease, why)| TornDown {
                lease: *lease,
                why: why.clone(),
            })
            .collect(),
        mapped: s.mapped_leases().collect(),
    })
    .into_response()
}

type Body<T> = Result<pcipool_api::server::JsonBody<T>, ApiError>;

/// A lease in the path, its parse failure answered in the API's JSON error form.
type LeaseParam = Result<UrlPath<u64>, PathRejection>;

/// A mapping request: what names the lease's device and host.
trait ForLease {
    fn fdid(&self) -> &str;
    fn host(&self) -> &str;
}

macro_rules! for_lease {
    ($($t:ty),*) => {$(
        impl ForLease for $t {
            fn fdid(&self) -> &str {
                &self.fdid
            }
            fn host(&self) -> &str {
                &self.host
            }
        }
    )*};
}
for_lease!(
    Holder,
    SegmentRequest,
    DeviceMemoryRequest,
    InterruptRequest
);

/// Checks the lease of request `b` with the controller, then lets `grant` act on the service.
async fn grant<T: ForLease, R: serde::Serialize>(
    state: &DataPathState,
    headers: &HeaderMap,
    lease: u64,
    b: Body<T>,
    grant: impl FnOnce(&mut DataPath, &T, &str) -> Result<R, DataPathError>,
) -> Result<Response, ApiError> {
    let who = caller(state, headers).await?;
    let r = json_body(b)?;
    check_lease(state, headers, lease, r.fdid(), r.host()).await?;
    let granted = grant(&mut lock(&state.service), &r, &who);
    granted
        .map(|g| Json(g).into_response())
        .map_err(|e| refused(&e))
}

#[utoipa::path(
    post, path = "/v1/datapath/leases/{lease}/bar", tag = "datapath",
    params(("lease" = u64, Path, description = "The lease")),
    request_body = Holder,
    responses(
        (status = 200, description = "A window onto the device's BAR", body = WindowGrant),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE (not on the data path) or NO_SUCH_SEGMENT", body = ApiErrorBody),
        (status = 409, description = "TOO_MANY (the lease holds the most it may) or SHARED_MEMORY", body = ApiErrorBody),
        (status = 503, description = "NO_WINDOW_SLOTS, NO_CONTROLLER or CONTROLLER_UNAVAILABLE: the lease cannot be checked or mapped now", body = ApiErrorBody),
    ),
)]
pub(crate) async fn map_bar(
    State(state): State<DataPathState>,
    lease: LeaseParam,
    headers: HeaderMap,
    b: Body<Holder>,
) -> Result<Response, ApiError> {
    let lease = path_param(lease)?;
    grant(&state, &headers, lease, b, |s, r, who| {
        s.map_bar(lease, &r.fdid, &r.host, who)
    })
    .await
}

#[utoipa::path(
    post, path = "/v1/datapath/leases/{lease}/segments", tag = "datapath",
    params(("lease" = u64, Path, description = "The lease")),
    request_body = SegmentRequest,
    responses(
        (status = 200, description = "The segment, mapped for the device's DMA", body = Mapped),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE (not on the data path) or NO_SUCH_SEGMENT", body = ApiErrorBody),
        (status = 409, description = "TOO_MANY (the lease holds the most it may) or SHARED_MEMORY", body = ApiErrorBody),
        (status = 503, description = "NO_WINDOW_SLOTS, NO_CONTROLLER or CONTROLLER_UNAVAILABLE: the lease cannot be checked or mapped now", body = ApiErrorBody),
    ),
)]
pub(crate) async fn map_segment(
    State(state): State<DataPathState>,
    lease: LeaseParam,
    headers: HeaderMap,
    b: Body<SegmentRequest>,
) -> Result<Response, ApiError> {
    let lease = path_param(lease)?;
    grant(&state, &headers, lease, b, |s, r, who| {
        s.map_segment(lease, &r.fdid, &r.host, who, &r.owner, &r.name)
            .map(|device_addr| Mapped { device_addr })
    })
    .await
}

#[utoipa::path(
    post, path = "/v1/datapath/leases/{lease}/device-memory", tag = "datapath",
    params(("lease" = u64, Path, description = "The lease")),
    request_body = DeviceMemoryRequest,
    responses(
        (status = 200, description = "Device memory made", body = DeviceMemoryGrant),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE (not on the data path) or NO_SUCH_SEGMENT", body = ApiErrorBody),
        (status = 409, description = "TOO_MANY (the lease holds the most it may) or SHARED_MEMORY", body = ApiErrorBody),
        (status = 503, description = "NO_WINDOW_SLOTS, NO_CONTROLLER or CONTROLLER_UNAVAILABLE: the lease cannot be checked or mapped now", body = ApiErrorBody),
    ),
)]
pub(crate) async fn device_memory(
    State(state): State<DataPathState>,
    lease: LeaseParam,
    headers: HeaderMap,
    b: Body<DeviceMemoryRequest>,
) -> Result<Response, ApiError> {
    let lease = path_param(lease)?;
    grant(&state, &headers, lease, b, |s, r, who| {
        s.device_memory(lease, &r.fdid, &r.host, who, r.size, r.placement)
    })
    .await
}

#[utoipa::path(
    post, path = "/v1/datapath/leases/{lease}/interrupts", tag = "datapath",
    params(("lease" = u64, Path, description = "The lease")),
    request_body = InterruptRequest,
    responses(
        (status = 200, description = "Routed (`{}`)", body = Object),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE (not on the data path) or NO_SUCH_SEGMENT", body = ApiErrorBody),
        (status = 409, description = "TOO_MANY (the lease holds the most it may) or SHARED_MEMORY", body = ApiErrorBody),
        (status = 503, description = "NO_WINDOW_SLOTS, NO_CONTROLLER or CONTROLLER_UNAVAILABLE: the lease cannot be checked or mapped now", body = ApiErrorBody),
    ),
)]
pub(crate) async fn interrupt(
    State(state): State<DataPathState>,
    lease: LeaseParam,
    headers: HeaderMap,
    b: Body<InterruptRequest>,
) -> Result<Response, ApiError> {
    let lease = path_param(lease)?;
    grant(&state, &headers, lease, b, |s, r, who| {
        s.route_interrupt(lease, &r.fdid, &r.host, who, r.vector, &r.cell)
            .map(|()| serde_json::json!({}))
    })
    .await
}

/// Ends a lease's mappings, for the application that made them (the lease itself may already be gone
/// at the controller: returning is what holders do while releasing, so it is not checked there).
#[utoipa::path(
    delete, path = "/v1/datapath/leases/{lease}", tag = "datapath",
    params(("lease" = u64, Path, description = "The lease")),
    responses(
        (status = 204, description = "Every mapping the caller made for the lease is gone (idempotent)"),
    ),
)]
pub(crate) async fn unmap(
    State(state): State<DataPathState>,
    lease: LeaseParam,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let lease = path_param(lease)?;
    let who = caller(&state, &headers).await?;
    let unmapped = lock(&state.service).unmap_for(lease, &who);
    unmapped
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(|e| refused(&e))
}

/// Ends one grant of a lease (its holder dropped the handle).
#[utoipa::path(
    post, path = "/v1/datapath/leases/{lease}/release", tag = "datapath",
    params(("lease" = u64, Path, description = "The lease")),
    request_body = Grant,
    responses(
        (status = 200, description = "Given back", body = Released),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
    ),
)]
pub(crate) async fn release(
    State(state): State<DataPathState>,
    lease: LeaseParam,
    headers: HeaderMap,
    b: Body<Grant>,
) -> Result<Response, ApiError> {
    let lease = path_param(lease)?;
    let who = caller(&state, &headers).await?;
    let grant = json_body(b)?;
    let released = lock(&state.service).release(lease, &who, grant);
    released
        .map(|released| Json(Released { released }).into_response())
        .map_err(|e| refused(&e))
}

#[utoipa::path(
    post, path = "/v1/datapath/segments", tag = "datapath",
    request_body = SegmentCreate,
    responses(
        (status = 200, description = "Made", body = SegmentMade),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 409, description = "TOO_MANY (the lease holds the most it may) or SHARED_MEMORY", body = ApiErrorBody),
    ),
)]
pub(crate) async fn create_segment(
    State(state): State<DataPathState>,
    headers: HeaderMap,
    b: Body<SegmentCreate>,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers).await?;
    let r = json_body(b)?;
    let made = lock(&state.service).create_segment(&who, &r.host, &r.name, r.size);
    made.map(|file| Json(SegmentMade { file }).into_response())
        .map_err(|e| refused(&e))
}

#[utoipa::path(
    delete, path = "/v1/datapath/segments/{host}/{name}", tag = "datapath",
    params(("host" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "The owner host"), ("name" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "The segment")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE (not on the data path) or NO_SUCH_SEGMENT", body = ApiErrorBody),
    ),
)]
pub(crate) async fn delete_segment(
    State(state): State<DataPathState>,
    segment: Result<UrlPath<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (host, name) = path_param(segment)?;
    let who = caller(&state, &headers).await?;
    let deleted = lock(&state.service).delete_segment(&who, &host, &name);
    deleted
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(|e| refused(&e))
}

#[utoipa::path(
    post, path = "/v1/datapath/exports", tag = "datapath",
    request_body = ExportRequest,
    responses(
        (status = 200, description = "Exported (`{}`)", body = Object),
        (status = 403, description = "NOT_YOUR_LEASE (not a shared or lent lease of the caller on that device and host), FORBIDDEN (another application's segment, not exported, another lease's mapping)", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE (not on the data path) or NO_SUCH_SEGMENT", body = ApiErrorBody),
    ),
)]
pub(crate) async fn export(
    State(state): State<DataPathState>,
    headers: HeaderMap,
    b: Body<ExportRequest>,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers).await?;
    let r = json_body(b)?;
    let exported = lock(&state.service).export(&who, &r.host, &r.name);
    exported
        .map(|()| Json(serde_json::json!({})).into_response())
        .map_err(|e| refused(&e))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    info,
    events,
    map_bar,
    map_segment,
    device_memory,
    interrupt,
    unmap,
    release,
    create_segment,
    delete_segment,
    export
))]
struct DataPathDoc;

/// The data path's entries in the contract (`pcipool dev` serves them beside the pool API's).
pub fn contract() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    DataPathDoc::openapi()
}

/// The routes, and the state a reconcile thread shares.
pub fn router(state: DataPathState) -> Router {
    Router::new()
        .route("/v1/datapath", get(info))
        .route("/v1/datapath/events", get(events))
        .route("/v1/datapath/exports", post(export))
        .route("/v1/datapath/segments", post(create_segment))
        .route(
            "/v1/datapath/segments/{host}/{name}",
            axum::routing::delete(delete_segment),
        )
        .route("/v1/datapath/leases/{lease}/bar", post(map_bar))
        .route("/v1/datapath/leases/{lease}/segments", post(map_segment))
        .route(
            "/v1/datapath/leases/{lease}/device-memory",
            post(device_memory),
        )
        .route("/v1/datapath/leases/{lease}/interrupts", post(interrupt))
        .route("/v1/datapath/leases/{lease}/release", post(release))
        .route("/v1/datapath/leases/{lease}", axum::routing::delete(unmap))
        .with_state(state)
}

impl DataPathState {
    /// Wraps the service.
    pub fn new(service: DataPath, controller: Option<String>) -> Self {
        Self {
            service: Arc::new(Mutex::new(service)),
            controller,
            confirmed: Arc::default(),
        }
    }

    /// The same service, checking leases with the controller at `url`.
    pub fn with_controller(self, url: String) -> Self {
        Self {
            controller: Some(url),
            ..self
        }
    }

    /// Devices served.
    pub fn devices(&self) -> usize {
        lock(&self.service).devices().count()
    }

    /// Starts the thread that tears down the mappings of leases the controller no longer holds. It
    /// ends by itself once the data path is gone (the server that served it stopped and dropped it).
    pub fn reconcile_with(&self, token_file: PathBuf) {
        let Some(controller) = self.controller.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.service);
        std::thread::spawn(move || {
            // Whether the token read last is an operator's: a tenant sees only its own leases, and
            // reconciling with its view would tear down everyone else's mappings.
            let mut vetted: Option<(String, bool)> = None;
            loop {
                std::thread::sleep(RECONCILE_EVERY);
                let Some(service) = weak.upgrade() else {
                    return;
                };
                let Some(token) = read_token(&token_file) else {
                    continue;
                };
                let client = Client::new(&controller, &token);
                let operator = match &vetted {
                    Some((t, ok)) if *t == token => *ok,
                    _ => match client.audit(1, 1) {
                        Ok(_) => {
                            vetted = Some((token.clone(), true));
                            true
                        }
                        Err(ClientError::Api {
                            status: 401 | 403, ..
                        }) => {
                            tracing::warn!(
                                token_file = %token_file.display(),
                                "not an operator's token; not reconciling with it"
                            );
                            vetted = Some((token.clone(), false));
                            false
                        }
                        // Unreachable: ask again next time.
                        Err(_) => false,
                    },
                };
                if !operator {
                    continue;
                }
                // Only a complete answer may tear anything down: an unreachable controller (restarting)
                // says nothing about leases.
                let mark = lock(&service).mark();
                if let Ok(leases) = client.leases() {
                    let live: BTreeSet<u64> = leases.iter().map(|l| l.lease_id.0).collect();
                    lock(&service).reconcile(&live, mark);
                }
                report(&service, &client);
            }
        });
    }
}

/// Reports teardowns to the controller's audit chain, so the record of who held what says when a
/// lease's mappings ended and why; what cannot be reported now is tried again later.
fn report(service: &Mutex<DataPath>, client: &Client) {
    let pending = lock(service).take_unreported();
    let mut left = pending.into_iter();
    while let Some((lease, why)) = left.next() {
        let sent = client.record(&format!("lease {lease}"), "datapath_teardown", &why);
        if sent.is_err() {
            let mut again = vec![(lease, why)];
            again.extend(left);
            lock(service).unreported_again(again);
            return;
        }
    }
}

fn read_token(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}
