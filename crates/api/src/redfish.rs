//! The pool as a DMTF Redfish service at `/redfish/v1` (first part, read-only): the service root,
//! `Systems` (one per host), `Chassis` (one per host), and the `CompositionService` with one
//! `ResourceBlock` per pooled device, its `CompositionStatus` following the pool's state, and one
//! `ResourceZone` holding them all. Clients sign in with HTTP Basic (any user name, the pool token as
//! the password) or the pool's bearer token; the service root answers without either, as Redfish
//! requires. Errors are Redfish error bodies. Composition (borrow and release by changing a system's
//! resource blocks) is not built yet.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::server::{AppState, PoolApi, Principal};

/// A Redfish error: status plus the `error` body with a message from the Base registry.
struct RedfishError {
    status: StatusCode,
    message_id: &'static str,
    message: String,
}

impl IntoResponse for RedfishError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": format!("Base.1.8.{}", self.message_id),
                "message": self.message,
                "@Message.ExtendedInfo": [{
                    "@odata.type": "#Message.v1_1_1.Message",
                    "MessageId": format!("Base.1.8.{}", self.message_id),
                    "Message": self.message,
                    "Severity": "Critical",
                }]
            }
        });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Basic realm=\"pcipool\""),
            );
        }
        resp
    }
}

fn error(status: StatusCode, message_id: &'static str, message: impl Into<String>) -> RedfishError {
    RedfishError {
        status,
        message_id,
        message: message.into(),
    }
}

/// The caller: HTTP Basic with the pool token as the password, or the bearer token.
fn principal<P>(state: &AppState<P>, headers: &HeaderMap) -> Result<Principal, RedfishError> {
    use base64::Engine as _;
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let token = if let Some(basic) = header.strip_prefix("Basic ") {
        base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, pass)| pass.to_owned()))
    } else {
        header.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
    };
    token
        .and_then(|t| state.tokens.get(&t).cloned())
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "NoValidSession",
                "sign in with HTTP Basic (the pool token as the password) or a bearer token",
            )
        })
}

/// Runs a read of the domain on a blocking thread.
async fn read<P: PoolApi, T: Send + 'static>(
    state: &AppState<P>,
    f: impl FnOnce(&P) -> Result<T, pcipool_controller::ControlError> + Send + 'static,
) -> Result<T, RedfishError> {
    let pool = state.pool.clone();
    tokio::task::spawn_blocking(move || f(&pool))
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })?
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })
}

/// A resource block's id: the fabric device id with `:` and `/` made URL-safe (`n1_0000_03_00.0-vf1`).
fn block_id(fdid: &pcipool_fabric::Fdid) -> String {
    fdid.to_string().replace(':', "_").replace('/', "-")
}

/// The Redfish composition state of a pool state.
fn composition_state(pool_state: &str) -> &'static str {
    match pool_state {
        "available" => "Unused",
        "lending" | "returning" => "Composing",
        "lent" | "shared" => "Composed",
        "quarantined" | "lost" => "Failed",
        _ => "Unavailable",
    }
}

fn collection(id: &str, kind: &str, name: &str, members: Vec<String>) -> Value {
    json!({
        "@odata.id": id,
        "@odata.type": format!("#{kind}.{kind}"),
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": members.into_iter().map(|m| json!({ "@odata.id": m })).collect::<Vec<_>>(),
    })
}

async fn service_root() -> Json<Value> {
    Json(json!({
        "@odata.id": "/redfish/v1",
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "Id": "RootService",
        "Name": "pcipool",
        "RedfishVersion": "1.17.0",
        "UUID": "6f1c7a52-2d0e-4c3e-9a61-706369706f6f",
        "Systems": { "@odata.id": "/redfish/v1/Systems" },
        "Chassis": { "@odata.id": "/redfish/v1/Chassis" },
        "CompositionService": { "@odata.id": "/redfish/v1/CompositionService" },
    }))
}

/// A collection with one member per host under `path` (`/redfish/v1/Systems`, `/redfish/v1/Chassis`).
async fn per_host<P: PoolApi>(
    state: &AppState<P>,
    headers: &HeaderMap,
    path: &str,
    kind: &str,
    name: &str,
) -> Result<Json<Value>, RedfishError> {
    principal(state, headers)?;
    let hosts = read(state, P::hosts).await?;
    Ok(Json(collection(
        path,
        kind,
        name,
        hosts.iter().map(|h| format!("{path}/{}", h.node)).collect(),
    )))
}

/// The host a system or chassis id names.
fn host_named(
    hosts: Vec<pcipool_wire::HostView>,
    what: &str,
    id: &str,
) -> Result<pcipool_wire::HostView, RedfishError> {
    hosts
        .into_iter()
        .find(|h| h.node.to_string() == id)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("no {what} {id}"),
            )
        })
}

async fn systems<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Value>, RedfishError> {
    let kind = "ComputerSystemCollection";
    per_host(
        &state,
        &headers,
        "/redfish/v1/Systems",
        kind,
        "Computer Systems",
    )
    .await
}

async fn system<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    let (hosts, leases) = read(&state, |p| Ok((p.hosts()?, p.leases()?))).await?;
    let host = host_named(hosts, "system", &id)?;
    let blocks: Vec<Value> = leases
        .iter()
        .filter(|l| l.borrower == host.node)
        .map(|l| json!({ "@odata.id": format!("/redfish/v1/CompositionService/ResourceBlocks/{}", block_id(&l.fdid)) }))
        .collect();
    Ok(Json(json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}"),
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": id,
        "Name": host.name,
        "SystemType": "Physical",
        "Status": { "State": if host.agent == "lost" { "UnavailableOffline" } else { "Enabled" }, "Health": "OK" },
        "Links": {
            "ResourceBlocks": blocks,
            "Chassis": [{ "@odata.id": format!("/redfish/v1/Chassis/{id}") }],
        },
    })))
}

async fn chassis_collection<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Value>, RedfishError> {
    let kind = "ChassisCollection";
    per_host(&state, &headers, "/redfish/v1/Chassis", kind, "Chassis").await
}

async fn chassis<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    let hosts = read(&state, P::hosts).await?;
    let host = host_named(hosts, "chassis", &id)?;
    Ok(Json(json!({
        "@odata.id": format!("/redfish/v1/Chassis/{id}"),
        "@odata.type": "#Chassis.v1_23_0.Chassis",
        "Id": id,
        "Name": host.name,
        "ChassisType": "RackMount",
        "Links": { "ComputerSystems": [{ "@odata.id": format!("/redfish/v1/Systems/{id}") }] },
    })))
}

async fn composition_service<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    Ok(Json(json!({
        "@odata.id": "/redfish/v1/CompositionService",
        "@odata.type": "#CompositionService.v1_2_2.CompositionService",
        "Id": "CompositionService",
        "Name": "pcipool composition service",
        "ServiceEnabled": true,
        "AllowOverprovisioning": false,
        "Status": { "State": "Enabled", "Health": "OK" },
        "ResourceBlocks": { "@odata.id": "/redfish/v1/CompositionService/ResourceBlocks" },
        "ResourceZones": { "@odata.id": "/redfish/v1/CompositionService/ResourceZones" },
    })))
}

async fn resource_blocks<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    let devices = read(&state, P::devices).await?;
    Ok(Json(collection(
        "/redfish/v1/CompositionService/ResourceBlocks",
        "ResourceBlockCollection",
        "Resource Blocks",
        devices
            .iter()
            .map(|d| {
                format!(
                    "/redfish/v1/CompositionService/ResourceBlocks/{}",
                    block_id(&d.fdid)
                )
            })
            .collect(),
    )))
}

async fn resource_block<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    let (devices, leases) = read(&state, |p| Ok((p.devices()?, p.leases()?))).await?;
    let device = devices
        .into_iter()
        .find(|d| block_id(&d.fdid) == id)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("no resource block {id}"),
            )
        })?;
    let holders: Vec<Value> = leases
        .iter()
        .filter(|l| l.fdid == device.fdid)
        .map(|l| json!({ "@odata.id": format!("/redfish/v1/Systems/{}", l.borrower) }))
        .collect();
    Ok(Json(json!({
        "@odata.id": format!("/redfish/v1/CompositionService/ResourceBlocks/{id}"),
        "@odata.type": "#ResourceBlock.v1_4_2.ResourceBlock",
        "Id": id,
        "Name": format!("{} {}", device.name, device.fdid),
        "Description": format!("pooled device {} ({}), pool state {}", device.fdid, device.name, device.state),
        "ResourceBlockType": ["Expansion"],
        "CompositionStatus": {
            "CompositionState": composition_state(&device.state),
            "Reserved": false,
            "SharingCapable": true,
            "SharingEnabled": device.state == "shared",
            "NumberOfCompositions": holders.len(),
        },
        "Links": {
            "ComputerSystems": holders,
            "Chassis": [{ "@odata.id": format!("/redfish/v1/Chassis/{}", device.fdid.node) }],
            "Zones": [{ "@odata.id": "/redfish/v1/CompositionService/ResourceZones/pool" }],
        },
    })))
}

async fn resource_zones<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    Ok(Json(collection(
        "/redfish/v1/CompositionService/ResourceZones",
        "ZoneCollection",
        "Resource Zones",
        vec!["/redfish/v1/CompositionService/ResourceZones/pool".into()],
    )))
}

async fn resource_zone<P: PoolApi>(
    State(state): State<AppState<P>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, RedfishError> {
    principal(&state, &headers)?;
    if id != "pool" {
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("no zone {id}"),
        ));
    }
    let devices = read(&state, P::devices).await?;
    Ok(Json(json!({
        "@odata.id": "/redfish/v1/CompositionService/ResourceZones/pool",
        "@odata.type": "#Zone.v1_6_1.Zone",
        "Id": "pool",
        "Name": "every pooled device",
        "ZoneType": "ZoneOfResourceBlocks",
        "Links": {
            "ResourceBlocks": devices.iter().map(|d| json!({
                "@odata.id": format!("/redfish/v1/CompositionService/ResourceBlocks/{}", block_id(&d.fdid))
            })).collect::<Vec<_>>(),
        },
    })))
}

async fn not_found() -> RedfishError {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "no such Redfish resource",
    )
}

/// The Redfish routes over the same state as the pool API.
pub(crate) fn routes<P: PoolApi>() -> Router<AppState<P>> {
    Router::new()
        .route(
            "/redfish",
            get(|| async { Json(json!({ "v1": "/redfish/v1/" })) }),
        )
        .route("/redfish/v1", get(service_root))
        .route("/redfish/v1/", get(service_root))
        .route("/redfish/v1/Systems", get(systems::<P>))
        .route("/redfish/v1/Systems/{id}", get(system::<P>))
        .route("/redfish/v1/Chassis", get(chassis_collection::<P>))
        .route("/redfish/v1/Chassis/{id}", get(chassis::<P>))
        .route(
            "/redfish/v1/CompositionService",
            get(composition_service::<P>),
        )
        .route(
            "/redfish/v1/CompositionService/ResourceBlocks",
            get(resource_blocks::<P>),
        )
        .route(
            "/redfish/v1/CompositionService/ResourceBlocks/{id}",
            get(resource_block::<P>),
        )
        .route(
            "/redfish/v1/CompositionService/ResourceZones",
            get(resource_zones::<P>),
        )
        .route(
            "/redfish/v1/CompositionService/ResourceZones/{id}",
            get(resource_zone::<P>),
        )
        .route("/redfish/v1/{*rest}", get(not_found))
}
