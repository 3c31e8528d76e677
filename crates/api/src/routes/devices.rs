//! `/v1/devices` and `/v1/hosts`: what the pool holds, one device in full, operators' device actions.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use pcipool_fabric::Fdid;
use pcipool_wire::{
    ApiErrorBody, DeviceAction, DeviceActionReply, DeviceDetail, DeviceView, HostView, TopologyView,
};

use super::{Body, PathParam};
use crate::server::{
    ApiError, AppState, PoolApi, Role, call, json_body, operators_only, path_param, principal,
};

/// Every device of the pool.
#[utoipa::path(
    get, path = "/v1/devices", tag = "devices",
    responses((status = 200, description = "Devices", body = Vec<DeviceView>)),
)]
pub(crate) async fn devices<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    principal(&state, &headers)?;
    Ok(Json(call(&state, P::devices).await?))
}

/// One device in full: facts, state, qualification, leases (a tenant sees its own).
#[utoipa::path(
    get, path = "/v1/devices/{fdid}", tag = "devices",
    params(("fdid" = Fdid, Path, description = "Fabric device id (percent-encode the `/` of a VF's id)")),
    responses(
        (status = 200, description = "The device", body = DeviceDetail),
        (status = 404, description = "NO_SUCH_DEVICE", body = ApiErrorBody),
    ),
)]
pub(crate) async fn device<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    fdid: PathParam<Fdid>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let who = principal(&state, &headers)?;
    let fdid = path_param(fdid)?;
    let mut detail = call(&state, move |d| d.device(fdid)).await?;
    if who.role == Role::Tenant {
        detail.leases.retain(|l| l.tenant == who.name);
    }
    Ok(Json(detail))
}

/// An operator's action on a device: drain, drain to the lender's own use, undrain, clear quarantine.
#[utoipa::path(
    post, path = "/v1/devices/{fdid}/actions", tag = "devices",
    params(("fdid" = Fdid, Path, description = "Fabric device id (percent-encode the `/` of a VF's id)")),
    request_body = DeviceAction,
    responses(
        (status = 200, description = "The device's new state", body = DeviceActionReply),
        (status = 403, description = "FORBIDDEN: operators and admins only", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_DEVICE", body = ApiErrorBody),
        (status = 409, description = "ILLEGAL_TRANSITION (the state does not allow it), CONFLICT or BUSY", body = ApiErrorBody),
    ),
)]
pub(crate) async fn device_action<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    fdid: PathParam<Fdid>,
    body: Body<DeviceAction>,
) -> Result<Json<DeviceActionReply>, ApiError> {
    let who = principal(&state, &headers)?;
    operators_only(&who)?;
    let fdid = path_param(fdid)?;
    let action = json_body(body)?;
    let state_name = call(&state, move |d| d.device_action(&who.name, fdid, action)).await?;
    Ok(Json(DeviceActionReply {
        fdid,
        state: state_name,
    }))
}

/// Every host of the fabric, with its adapters and its agent's liveness.
#[utoipa::path(
    get, path = "/v1/hosts", tag = "devices",
    responses((status = 200, description = "Hosts", body = Vec<HostView>)),
)]
pub(crate) async fn hosts<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Vec<HostView>>, ApiError> {
    principal(&state, &headers)?;
    Ok(Json(call(&state, P::hosts).await?))
}

/// The fabric's switches and links: what the dashboard draws and `pcipool review` budgets.
#[utoipa::path(
    get, path = "/v1/topology", tag = "devices",
    responses((status = 200, description = "Switches and links", body = TopologyView)),
)]
pub(crate) async fn topology<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<TopologyView>, ApiError> {
    principal(&state, &headers)?;
    Ok(Json(call(&state, P::topology).await?))
}
