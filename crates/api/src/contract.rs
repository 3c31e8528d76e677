//! The API's contract, generated from the code: every handler's `#[utoipa::path]` and every wire type's
//! `ToSchema`, collected here into one OpenAPI 3.1 document, then finished in two passes that keep the
//! document true to what the server does without repeating it on every handler:
//! - [`common_errors`]: every authenticated operation may answer 401 (no or unknown token), 500
//!   (`INTERNAL`, `STORE_ERROR`) and 503 (`NOT_LEADER`, from a controller that follows); every
//!   operation with parameters or a body may answer 400 (`BAD_REQUEST`).
//! - [`rust_ranges`]: a Rust integer's width becomes the `minimum` and `maximum` a client must keep
//!   to (a `u8` field refuses 256), and a tuple its length, so generated requests and the server agree.
//!
//! Request bodies refuse unknown fields (`additionalProperties: false`, from `serde(deny_unknown_fields)`);
//! query strings ignore unknown parameters.

use pcipool_wire::ApiErrorBody;
use serde_json::{Value, json};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;

use crate::routes::{agents, audit, devices, leases, watch};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "pcipool",
        description = "Pools PCIe devices across hosts joined by an NTB or PCIe switch fabric: borrow, share and return them, with leases, fencing and a tamper-evident audit chain. Send `Authorization: Bearer TOKEN`; errors are `{code, message}` with a stable code.",
        license(name = "Apache-2.0 OR MIT"),
    ),
    paths(
        crate::server::openapi_document,
        leases::borrow,
        leases::leases,
        leases::release,
        leases::downgrade,
        leases::renew,
        devices::devices,
        devices::device,
        devices::device_action,
        devices::hosts,
        devices::topology,
        audit::audit_verify,
        audit::audit_list,
        audit::audit_record,
        agents::register_agent,
        agents::agent_heartbeat,
        watch::workflow,
        watch::metrics,
        watch::events,
        watch::whoami,
    ),
    components(schemas(ApiErrorBody)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
)]
struct PoolApiDoc;

/// Declares the bearer token scheme every operation uses unless it says `security: [{}]`.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, doc: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from the server's token file (tenant, agent, operator or admin)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The pool API's document, before [`render`] finishes it: runtimes merge the documents of the routes
/// they serve beside it.
pub fn document() -> OpenApi {
    PoolApiDoc::openapi()
}

/// The document as served: the common errors and integer bounds added, as JSON text.
pub fn render(doc: OpenApi) -> String {
    let mut value = serde_json::to_value(doc).unwrap_or_else(|e| {
        // Serialising utoipa's own types cannot fail; if it ever did, say so in the document.
        json!({ "openapi": "3.1.0", "info": { "title": "pcipool", "version": "0", "description": e.to_string() }, "paths": {} })
    });
    common_errors(&mut value);
    rust_ranges(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ApiErrorBody" } } }
    })
}

/// Adds the errors any authenticated operation, and any operation with input, may answer.
fn common_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let open = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|r| r.is_empty()))
            });
            let has_input = op.get("requestBody").is_some()
                || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status)
                    .or_insert_with(|| error_response(description));
            };
            if has_input {
                add(
                    "400",
                    "BAD_REQUEST: a parameter or the body is not what this operation takes",
                );
            }
            if !open {
                add("401", "UNAUTHORIZED: no bearer token, or an unknown one");
                add(
                    "500",
                    "INTERNAL or STORE_ERROR: the controller or its store failed",
                );
                add(
                    "503",
                    "NOT_LEADER: this controller follows and could not reach the one that leads",
                );
            }
        }
    }
}

/// The range of each integer format utoipa writes for Rust's integer types (`non_strict_integers`),
/// and the standard format that replaces it (none for `u64`: its range is wider than `int64`'s).
fn bounds(format: &str) -> Option<(i128, i128, Option<&'static str>)> {
    // utoipa spells the unsigned ones `u-int8`; the OpenAPI format registry `uint8`.
    let format = format.replace("u-int", "uint");
    Some(match format.as_str() {
        "uint8" => (0, u8::MAX.into(), Some("int32")),
        "uint16" => (0, u16::MAX.into(), Some("int32")),
        "uint32" => (0, u32::MAX.into(), Some("int64")),
        "uint64" => (0, u64::MAX.into(), None),
        "int8" => (i8::MIN.into(), i8::MAX.into(), Some("int32")),
        "int16" => (i16::MIN.into(), i16::MAX.into(), Some("int32")),
        "int32" => (i32::MIN.into(), i32::MAX.into(), Some("int32")),
        "int64" => (i64::MIN.into(), i64::MAX.into(), Some("int64")),
        _ => return None,
    })
}

/// An integer of a schema (`minimum`, `maximum`) as a wide number.
fn wide(v: Option<&Value>) -> Option<i128> {
    v.and_then(|v| {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
    })
}

/// A wide number back as JSON (it came from a 64-bit range, so it fits one of them).
fn narrow(n: i128) -> Value {
    u64::try_from(n)
        .map(Value::from)
        .or_else(|_| i64::try_from(n).map(Value::from))
        .unwrap_or(Value::Null)
}

/// Writes each integer's range into its schema (keeping a tighter range a field declares), and each
/// tuple's length (a Rust tuple has all its items: utoipa's `prefixItems` alone would allow fewer).
fn rust_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(n) = map
                .get("prefixItems")
                .and_then(Value::as_array)
                .map(Vec::len)
            {
                map.insert("minItems".into(), n.into());
                map.insert("maxItems".into(), n.into());
            }
            let range = map.get("format").and_then(Value::as_str).and_then(bounds);
            if let Some((low, high, format)) = range {
                let min = wide(map.get("minimum")).map_or(low, |m| m.max(low));
                let max = wide(map.get("maximum")).map_or(high, |m| m.min(high));
                map.insert("minimum".into(), narrow(min));
                map.insert("maximum".into(), narrow(max));
                match format {
                    Some(format) => map.insert("format".into(), format.into()),
                    None => map.remove("format"),
                };
            }
            map.values_mut().for_each(rust_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(rust_ranges),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> Value {
        serde_json::from_str(&render(document())).expect("the document is JSON")
    }

    /// Every route the router declares (read from the router's source) has an entry, and the document
    /// lists nothing the router does not serve; the dashboard's pages are not API.
    #[test]
    fn the_document_lists_exactly_the_routes_the_router_serves() {
        let source = include_str!("server.rs");
        let mut routes: Vec<&str> = source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .collect();
        routes.sort_unstable();
        let doc = rendered();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        documented.sort_unstable();
        assert_eq!(routes, documented);
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn integers_carry_their_rust_range() {
        let doc = rendered();
        let selector = &doc["components"]["schemas"]["Selector"]["properties"];
        assert_eq!(selector["min_link_width"]["maximum"], 255);
        assert_eq!(selector["vendor_id"]["maximum"], 65535);
        // A tighter range the field declares is kept.
        let count = &doc["components"]["schemas"]["BorrowRequest"]["properties"]["count"];
        assert_eq!(
            (&count["minimum"], &count["maximum"]),
            (&json!(1), &json!(1024))
        );
    }

    #[test]
    fn authenticated_operations_document_401_and_open_ones_do_not() {
        let doc = rendered();
        let borrow = &doc["paths"]["/v1/leases"]["post"]["responses"];
        for status in ["400", "401", "500", "503", "201"] {
            assert!(
                borrow.get(status).is_some(),
                "POST /v1/leases lacks {status}"
            );
        }
        let events = &doc["paths"]["/v1/events"]["get"]["responses"];
        assert!(events.get("401").is_none(), "{events}");
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let doc = rendered();
        for body in ["BorrowRequest", "Selector", "RenewRequest", "AuditRecord"] {
            assert_eq!(
                doc["components"]["schemas"][body]["additionalProperties"], false,
                "{body}"
            );
        }
    }
}
