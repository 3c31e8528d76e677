//! How a follower passes a request to the leader: the same method, path, query, token and body, sent
//! to the URL the leader wrote in the store when it took the leadership, and its answer handed back
//! as it came. Reads the store answers alike on every controller are served where they arrive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Marks a request a follower passed on: a controller that receives one and does not lead refuses it
/// instead of passing it again (two followers each taking the other for the leader would loop).
pub const FORWARDED_BY: &str = "x-pcipool-forwarded-by";

/// The largest request body passed on (agents' registrations are the largest: a few KiB per device).
const MAX_BODY: usize = 16 << 20;

/// How long a passed-on request may take: a borrow that waits for its lend, a long poll.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(600);

/// What the forwarding layer needs.
#[derive(Clone)]
pub struct Forwarder {
    /// The leader's `leader` key value (`HOSTNAME:PID URL`) as last read; None while nobody leads.
    pub leader: Arc<Mutex<Option<String>>>,
    /// This controller, for the loop guard.
    pub this: String,
    http: ureq::Agent,
}

impl Forwarder {
    /// A forwarder reading the leader from `leader`.
    pub fn new(leader: Arc<Mutex<Option<String>>>, this: String) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(FORWARD_TIMEOUT))
            .max_redirects(0)
            .build()
            .into();
        Self { leader, this, http }
    }

    fn leader_url(&self) -> Option<String> {
        let value = self
            .leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        leader_url(&value).map(str::to_owned)
    }
}

/// The URL in a `leader` key value (`HOSTNAME:PID URL`).
pub fn leader_url(value: &str) -> Option<&str> {
    value
        .split_once(' ')
        .map(|(_, url)| url.trim())
        .filter(|u| !u.is_empty())
}

/// Whether a request is a read every controller answers alike from the store.
pub fn is_local_read(method: &Method, path: &str) -> bool {
    if method != Method::GET {
        return false;
    }
    matches!(
        path,
        "/v1/devices" | "/v1/leases" | "/v1/audit" | "/v1/audit/verify" | "/v1/openapi.json"
    ) || matches!(
        path,
        "/v1/controller" | "/v1/events" | "/v1/whoami" | "/v1/topology"
    ) || path == "/ui"
        || path.starts_with("/ui/")
        || path.starts_with("/v1/workflows/")
        || (path.starts_with("/v1/devices/") && !path.ends_with("/actions"))
}

fn not_leader(message: String) -> Response {
    pcipool_api::server::error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        pcipool_wire::ErrorCode::NotLeader.as_str(),
        message,
    )
}

/// The layer: local reads go on to the follower's own routes; everything else to the leader.
pub async fn forward(State(to): State<Forwarder>, request: Request, next: Next) -> Response {
    if is_local_read(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_BY) {
        return not_leader(format!(
            "{} does not lead the pool and will not pass on a request passed to it",
            to.this
        ));
    }
    let Some(leader) = to.leader_url() else {
        return not_leader("no controller leads the pool at the moment; try again shortly".into());
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return pcipool_api::server::error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("reading the request body: {e}"),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let url = format!("{leader}{path}");
    let mut builder = ureq::http::Request::builder()
        .method(parts.method.clone())
        .uri(&url)
        .header(FORWARDED_BY, to.this.as_str());
    for name in ["authorization", "content-type", "accept"] {
        if let Some(v) = parts.headers.get(name) {
            builder = builder.header(name, v.as_bytes());
        }
    }
    let http = to.http.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let request = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
        let mut resp = http.run(request).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let kind = resp.headers().get("content-type").cloned();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY as u64)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, kind, bytes))
    })
    .await;
    match sent {
        Ok(Ok((status, kind, bytes))) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(k) = kind.and_then(|k| HeaderValue::from_bytes(k.as_bytes()).ok()) {
                resp.headers_mut().insert("content-type", k);
            }
            resp
        }
        Ok(Err(e)) => not_leader(format!("the leader at {leader} did not answer: {e}")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_the_store_stay_and_everything_else_goes_to_the_leader() {
        assert!(is_local_read(&Method::GET, "/v1/devices"));
        assert!(is_local_read(&Method::GET, "/v1/devices/n1:0000:01:00.0"));
        assert!(is_local_read(&Method::GET, "/v1/workflows/7"));
        assert!(!is_local_read(
            &Method::POST,
            "/v1/devices/n1:0000:01:00.0/actions"
        ));
        assert!(!is_local_read(&Method::GET, "/v1/hosts"));
        assert!(!is_local_read(&Method::GET, "/metrics"));
        assert!(!is_local_read(&Method::POST, "/v1/leases"));
        assert!(!is_local_read(&Method::DELETE, "/v1/leases/3"));
    }

    #[test]
    fn the_leader_url_is_the_second_word_of_the_key() {
        assert_eq!(
            leader_url("ctl1:42 http://10.0.0.1:7070"),
            Some("http://10.0.0.1:7070")
        );
        assert_eq!(leader_url("ctl1:42"), None);
        assert_eq!(leader_url("ctl1:42 "), None);
    }
}
