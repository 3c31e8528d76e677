//! `/v1/leases`: borrow, list, release, downgrade, renew.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use pcipool_controller::{ControlError, Granted};
use pcipool_fabric::LeaseId;
use pcipool_wire::{ApiErrorBody, BorrowRequest, DowngradeRequest, LeaseView, RenewRequest};

use super::{Body, PathParam};
use crate::server::{
    ApiError, AppState, PoolApi, Role, bad_request, call, json_body, path_param, principal,
};

/// Borrow devices: the scheduler picks them, the lends run (or are queued, with `wait: false`).
#[utoipa::path(
    post, path = "/v1/leases", tag = "leases",
    request_body = BorrowRequest,
    responses(
        (status = 201, description = "Lent (the request waited for the lends)", body = Vec<Granted>),
        (status = 202, description = "Assigned; follow each lease's workflow", body = Vec<Granted>),
        (status = 403, description = "FORBIDDEN (agents), UNKNOWN_TENANT or POLICY", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_HOST (the borrower) or NO_SUCH_DEVICE (a named one)", body = ApiErrorBody),
        (status = 409, description = "NO_CAPACITY, CONFLICT or BUSY: trying again later may succeed", body = ApiErrorBody),
        (status = 429, description = "OVER_QUOTA: the tenant's quota is full", body = ApiErrorBody),
        (status = 502, description = "LEND_FAILED: the lend failed and was compensated", body = ApiErrorBody),
    ),
)]
pub(crate) async fn borrow<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    body: Body<BorrowRequest>,
) -> Result<(StatusCode, Json<Vec<Granted>>), ApiError> {
    let who = principal(&state, &headers)?;
    let request = json_body(body)?.checked().map_err(bad_request)?;
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

/// Return a lease: the release workflow runs before the answer.
#[utoipa::path(
    delete, path = "/v1/leases/{id}", tag = "leases",
    params(("id" = u64, Path, description = "Lease id")),
    responses(
        (status = 204, description = "Returned"),
        (status = 403, description = "FORBIDDEN: not the caller's lease, or an agent", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_LEASE", body = ApiErrorBody),
        (status = 409, description = "CONFLICT, BUSY, ILLEGAL_TRANSITION or STALE_EPOCH", body = ApiErrorBody),
    ),
)]
pub(crate) async fn release<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    id: PathParam<u64>,
) -> Result<StatusCode, ApiError> {
    let id = path_param(id)?;
    lease_change(&state, &headers, "release", move |d, actor, tenant| {
        d.release(actor, tenant, LeaseId(id))
    })
    .await
}

/// The exclusive holder of a shared-model lease lets others share the device.
#[utoipa::path(
    post, path = "/v1/leases/{id}/downgrade", tag = "leases",
    params(("id" = u64, Path, description = "Lease id")),
    request_body = DowngradeRequest,
    responses(
        (status = 204, description = "Downgraded"),
        (status = 403, description = "FORBIDDEN: not the caller's lease, or an agent", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_LEASE", body = ApiErrorBody),
        (status = 409, description = "CONFLICT or ILLEGAL_TRANSITION (not an exclusive shared-model lease)", body = ApiErrorBody),
    ),
)]
pub(crate) async fn downgrade<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    id: PathParam<u64>,
    body: Body<DowngradeRequest>,
) -> Result<StatusCode, ApiError> {
    let id = path_param(id)?;
    let request = json_body(body)?.checked().map_err(bad_request)?;
    lease_change(&state, &headers, "downgrade", move |d, actor, tenant| {
        d.downgrade(actor, tenant, LeaseId(id), request.max_sharers)
    })
    .await
}

/// The holder keeps its lease alive.
#[utoipa::path(
    post, path = "/v1/leases/{id}/heartbeat", tag = "leases",
    params(("id" = u64, Path, description = "Lease id")),
    request_body = RenewRequest,
    responses(
        (status = 204, description = "Renewed"),
        (status = 403, description = "FORBIDDEN: not the caller's lease, or an agent", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_LEASE", body = ApiErrorBody),
        (status = 409, description = "STALE_EPOCH (fenced), CONFLICT or ILLEGAL_TRANSITION", body = ApiErrorBody),
    ),
)]
pub(crate) async fn renew<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    id: PathParam<u64>,
    body: Body<RenewRequest>,
) -> Result<StatusCode, ApiError> {
    let id = path_param(id)?;
    let request = json_body(body)?;
    lease_change(&state, &headers, "renew", move |d, actor, tenant| {
        d.renew(actor, tenant, LeaseId(id), request.epoch)
    })
    .await
}

/// Every lease the caller may see (a tenant sees its own).
#[utoipa::path(
    get, path = "/v1/leases", tag = "leases",
    responses((status = 200, description = "Leases", body = Vec<LeaseView>)),
)]
pub(crate) async fn leases<P: PoolApi>(
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
