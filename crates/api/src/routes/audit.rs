//! `/v1/audit`: the tamper-evident chain, its verification, and records other parts of the pool report.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use pcipool_wire::{ApiErrorBody, AuditQuery, AuditRecord, AuditVerify, AuditView};

use super::{Body, QueryParams};
use crate::server::{
    ApiError, AppState, PoolApi, bad_request, call, json_body, operators_only, principal,
    query_params,
};

/// Verify the whole chain.
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    responses(
        (status = 200, description = "The verdict (a broken chain is `ok: false`, not an error)", body = AuditVerify),
        (status = 403, description = "FORBIDDEN: operators and admins only", body = ApiErrorBody),
    ),
)]
pub(crate) async fn audit_verify<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<AuditVerify>, ApiError> {
    operators_only(&principal(&state, &headers)?)?;
    Ok(Json(call(&state, P::audit_verify).await?))
}

/// Append a record another part of the pool reports (the fabric's data path).
#[utoipa::path(
    post, path = "/v1/audit", tag = "audit",
    request_body = AuditRecord,
    responses(
        (status = 204, description = "Recorded"),
        (status = 403, description = "FORBIDDEN: operators and admins only", body = ApiErrorBody),
    ),
)]
pub(crate) async fn audit_record<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    body: Body<AuditRecord>,
) -> Result<StatusCode, ApiError> {
    let who = principal(&state, &headers)?;
    operators_only(&who)?;
    let r = json_body(body)?.checked().map_err(bad_request)?;
    call(&state, move |d| {
        d.record(&who.name, &r.target, &r.action, &r.result)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records in order, from `from`.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Records", body = Vec<AuditView>),
        (status = 403, description = "FORBIDDEN: operators and admins only", body = ApiErrorBody),
    ),
)]
pub(crate) async fn audit_list<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    query: QueryParams<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    operators_only(&principal(&state, &headers)?)?;
    let q = query_params(query)?.checked().map_err(bad_request)?;
    let (from, limit) = (q.from.unwrap_or(1), q.limit.unwrap_or(100));
    Ok(Json(
        call(&state, move |d| d.audit(from, limit as usize)).await?,
    ))
}
