//! `/v1/agents`: host agents register (again after a restart of either side) and heartbeat.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use pcipool_fabric::NodeId;
use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, ApiErrorBody, HeartbeatReply, RegistrationReply,
};

use super::{Body, PathParam};
use crate::server::{
    ApiError, AppState, PoolApi, Principal, Role, call, json_body, path_param, principal,
};

/// Agents (and admins) only; an agent token named after a host (`n3`) speaks for that host alone. A token
/// with another name (the lab's shared `agent` token) may speak for any host.
fn agents_only(who: &Principal, node: NodeId) -> Result<(), ApiError> {
    let forbidden = |why: String| Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", why));
    match who.role {
        Role::Admin => Ok(()),
        Role::Agent => match who.name.parse::<NodeId>() {
            Ok(own) if own != node => {
                forbidden(format!("the agent token of {own} cannot speak for {node}"))
            }
            _ => Ok(()),
        },
        Role::Tenant | Role::Operator => forbidden("agents and admins only".into()),
    }
}

/// An agent announces itself and its host's devices.
#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body = AgentRegistration,
    responses(
        (status = 200, description = "Registered: the leases this host carries as a borrower", body = RegistrationReply),
        (status = 403, description = "FORBIDDEN: agents (for their own host) and admins only", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_HOST", body = ApiErrorBody),
        (status = 409, description = "UNSUPPORTED (this pool's hosts run in process: `pcipool dev`), CONFLICT", body = ApiErrorBody),
    ),
)]
pub(crate) async fn register_agent<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    body: Body<AgentRegistration>,
) -> Result<Json<RegistrationReply>, ApiError> {
    let who = principal(&state, &headers)?;
    let registration = json_body(body)?;
    agents_only(&who, registration.node)?;
    let reply = call(&state, move |d| d.register_agent(&who.name, registration)).await?;
    Ok(Json(reply))
}

/// An agent is alive, and renews the leases its host carries.
#[utoipa::path(
    post, path = "/v1/agents/{node}/heartbeat", tag = "agents",
    params(("node" = NodeId, Path, description = "The agent's host")),
    request_body = AgentHeartbeat,
    responses(
        (status = 200, description = "Renewed and refused leases; whether to register again", body = HeartbeatReply),
        (status = 403, description = "FORBIDDEN: agents (for their own host) and admins only", body = ApiErrorBody),
        (status = 404, description = "NO_SUCH_HOST", body = ApiErrorBody),
        (status = 409, description = "UNSUPPORTED (this pool's hosts run in process: `pcipool dev`), CONFLICT", body = ApiErrorBody),
    ),
)]
pub(crate) async fn agent_heartbeat<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    node: PathParam<NodeId>,
    body: Body<AgentHeartbeat>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let who = principal(&state, &headers)?;
    let node = path_param(node)?;
    agents_only(&who, node)?;
    let beat = json_body(body)?;
    let reply = call(&state, move |d| d.agent_heartbeat(node, beat)).await?;
    Ok(Json(reply))
}
