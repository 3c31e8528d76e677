//! The blocking client of pcipool's API: the CLI, the agents and applications (`pcipool-access`) use
//! it. Every call has a timeout (60 s unless [`Client::with_timeout`] says otherwise; a long poll adds
//! its wait), so a stuck server never hangs a caller.
//!
//! # Layout
//! - [`Client`]: one server and token; typed calls per route, plus [`Client::get`]/[`Client::post`]
//!   for other pcipool-style services (the fabric's data path).
//! - [`ClientError`]: what failed, with the server's stable code when it answered.
//! - [`text`]: how the answers read as text (the CLI's tables).
//! - [`relay`]: one connection relayed to stdin/stdout (a guest's way to the controller).
#![deny(missing_docs)]

pub mod progress;
pub mod relay;
pub mod text;

use std::time::Duration;

use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, ApiErrorBody, AuditVerify, AuditView, BorrowRequest,
    DeviceAction, DeviceDetail, DeviceView, ErrorCode, Granted, HeartbeatReply, HostView,
    LeaseView, RegistrationReply,
};
use serde::de::DeserializeOwned;

/// How long one call may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code.
        code: String,
        /// Message.
        message: String,
    },
    /// Transport failure (server down, bad URL).
    #[error("cannot reach {url}")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The body did not decode.
    #[error("unexpected response body from {url}")]
    Body {
        /// The URL.
        url: String,
    },
}

/// A fabric device id as one URL path segment: a VF's id (`n2:0000:03:00.0/vf1`) contains a slash.
fn path_segment(fdid: &str) -> String {
    fdid.replace('%', "%25").replace('/', "%2F")
}

impl ClientError {
    /// The server's stable code, when it answered with one pcipool knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => ErrorCode::parse(code),
            Self::Transport { .. } | Self::Body { .. } => None,
        }
    }
}

/// A client for one server (or several controllers of one pool) and a token.
#[derive(Debug, Clone)]
pub struct Client {
    /// The servers' base URLs; a request goes to `current` first.
    bases: std::sync::Arc<Vec<String>>,
    /// The base that answered last (shared by clones).
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    agent: ureq::Agent,
    timeout: Duration,
}

/// Whether a failed call never reached the server, so the same request may go to another controller
/// of the pool without being carried out twice.
fn unreached(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect),
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
        ),
        _ => false,
    }
}

/// How a request is sent.
enum Send<'a> {
    Get,
    Delete,
    Post(&'a dyn erased::Json),
}

/// A JSON body whatever its type, so one sender serves every route.
mod erased {
    /// Serialisable to JSON.
    pub(crate) trait Json {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}

/// A blocking HTTP agent whose calls give up after `timeout`: connecting, sending and receiving each
/// have that limit. Name resolution has none on purpose: with a resolve timeout, ureq resolves on a
/// thread of its own for every request (a thread per call, measured as a 13 % loss in `bench api`),
/// and pcipool's services are reached by address.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .timeout_send_request(Some(timeout))
        .timeout_send_body(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_recv_body(Some(timeout))
        .build()
        .into()
}

/// Per-request limits for an agent made by [`http_agent`]: the same phases, another duration.
pub fn with_timeout<B>(
    request: ureq::RequestBuilder<B>,
    timeout: Duration,
) -> ureq::RequestBuilder<B> {
    request
        .config()
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .timeout_send_request(Some(timeout))
        .timeout_send_body(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_recv_body(Some(timeout))
        .build()
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7070`), with the [`DEFAULT_TIMEOUT`]. Several
    /// controllers of one pool may be named, separated by commas: a request the first cannot take
    /// (not reachable) goes to the next, and the one that answered is asked first from then on.
    pub fn new(base: &str, token: &str) -> Self {
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        Self {
            bases: std::sync::Arc::new(if bases.is_empty() {
                vec![String::new()]
            } else {
                bases
            }),
            current: std::sync::Arc::default(),
            token: token.to_owned(),
            agent: http_agent(DEFAULT_TIMEOUT),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with calls limited to `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = http_agent(timeout);
        self.timeout = timeout;
        self
    }

    /// The base URL of the server asked first (the one that answered last).
    pub fn base(&self) -> &str {
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[at % self.bases.len()]
    }

    /// Asks the next server first from now on (when several are named): for a caller whose call to
    /// the current one failed in a way [`Client`] does not move on from by itself (it timed out after
    /// the request was sent), and whose request may safely go elsewhere (an agent's heartbeat).
    pub fn next_server(&self) {
        use std::sync::atomic::Ordering;
        let at = self.current.load(Ordering::Relaxed);
        self.current
            .store((at + 1) % self.bases.len(), Ordering::Relaxed);
    }

    /// Sends a request to the server that answered last, moving on to the next only when one was not
    /// reached: the URL that answered and its answer.
    fn send(
        &self,
        how: &Send<'_>,
        path: &str,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), ClientError> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let bearer = format!("Bearer {}", self.token);
        let mut last = None;
        for i in 0..self.bases.len() {
            let at = (first + i) % self.bases.len();
            let url = format!("{}{path}", self.bases[at]);
            let sent = match how {
                Send::Get => self.agent.get(&url).header("authorization", &bearer).call(),
                Send::Delete => self
                    .agent
                    .delete(&url)
                    .header("authorization", &bearer)
                    .call(),
                Send::Post(body) => {
                    let json = body
                        .to_json()
                        .map_err(|_| ClientError::Body { url: url.clone() })?;
                    self.agent
                        .post(&url)
                        .header("authorization", &bearer)
                        .header("content-type", "application/json")
                        .send(&json[..])
                }
            };
            match sent {
                Ok(resp) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok((url, resp));
                }
                Err(e) if unreached(&e) && i + 1 < self.bases.len() => last = Some(e),
                Err(e) => return Err(Self::transport(&url)(e)),
            }
        }
        Err(ClientError::Transport {
            url: self.bases.join(","),
            source: Box::new(last.unwrap_or(ureq::Error::ConnectionFailed)),
        })
    }

    fn decode<T: DeserializeOwned>(
        url: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T, ClientError> {
        let status = resp.status().as_u16();
        if status >= 400 {
            let body: Option<ApiErrorBody> = resp.body_mut().read_json().ok();
            return Err(match body {
                Some(b) => ClientError::Api {
                    status,
                    code: b.code,
                    message: b.message,
                },
                None => ClientError::Api {
                    status,
                    code: "HTTP".into(),
                    message: format!("status {status}"),
                },
            });
        }
        resp.body_mut().read_json().map_err(|_| ClientError::Body {
            url: url.to_owned(),
        })
    }

    fn transport(url: &str) -> impl FnOnce(ureq::Error) -> ClientError + '_ {
        move |e| ClientError::Transport {
            url: url.to_owned(),
            source: Box::new(e),
        }
    }

    /// `GET base+path` with the bearer token, decoding JSON (any pcipool-style service: the controller,
    /// or the simulated fabric's data path).
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (url, resp) = self.send(&Send::Get, path)?;
        Self::decode(&url, resp)
    }

    /// `POST base+path` with a JSON body, decoding the JSON answer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (url, resp) = self.send_post(path, body)?;
        Self::decode(&url, resp)
    }

    fn send_post<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), ClientError> {
        self.send(&Send::Post(body), path)
    }

    /// One device in full.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn device(&self, fdid: &str) -> Result<DeviceDetail, ClientError> {
        self.get(&format!("/v1/devices/{}", path_segment(fdid)))
    }

    /// Registers an agent and its devices.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn register_agent(
        &self,
        registration: &AgentRegistration,
    ) -> Result<RegistrationReply, ClientError> {
        self.post("/v1/agents", registration)
    }

    /// An agent's heartbeat.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn agent_heartbeat(
        &self,
        node: pcipool_wire::NodeId,
        beat: &AgentHeartbeat,
    ) -> Result<HeartbeatReply, ClientError> {
        self.post(&format!("/v1/agents/{node}/heartbeat"), beat)
    }

    /// Borrows.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn borrow(&self, request: &BorrowRequest) -> Result<Vec<Granted>, ClientError> {
        let (url, resp) = self.send_post("/v1/leases", request)?;
        let status = resp.status().as_u16();
        if status >= 400 {
            return Self::decode::<()>(&url, resp).map(|()| Vec::new());
        }
        let mut resp = resp;
        resp.body_mut()
            .read_json::<Vec<Granted>>()
            .map_err(|_| ClientError::Body { url })
    }

    /// `DELETE base+path`; any 2xx is success.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let (url, resp) = self.send(&Send::Delete, path)?;
        if resp.status().as_u16() >= 400 {
            return Self::decode::<()>(&url, resp);
        }
        Ok(())
    }

    /// Releases.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn release(&self, lease: u64) -> Result<(), ClientError> {
        self.delete(&format!("/v1/leases/{lease}"))
    }

    /// Downgrades an exclusive shared-model lease to `max_sharers` sharers.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn downgrade(&self, lease: u64, max_sharers: u32) -> Result<(), ClientError> {
        self.post_no_content(
            &format!("/v1/leases/{lease}/downgrade"),
            &pcipool_wire::DowngradeRequest { max_sharers },
        )
    }

    /// Renews a lease granted with `epoch` (applications keep shared-model leases alive so).
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn renew(&self, lease: u64, epoch: u64) -> Result<(), ClientError> {
        self.post_no_content(
            &format!("/v1/leases/{lease}/heartbeat"),
            &pcipool_wire::RenewRequest { epoch },
        )
    }

    /// `POST base+path` with a JSON body, for routes that answer 204.
    fn post_no_content<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        let (url, resp) = self.send_post(path, body)?;
        if resp.status().as_u16() >= 400 {
            return Self::decode::<()>(&url, resp);
        }
        Ok(())
    }

    /// Appends a record to the audit chain (operators).
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn record(&self, target: &str, action: &str, result: &str) -> Result<(), ClientError> {
        self.post_no_content(
            "/v1/audit",
            &pcipool_wire::AuditRecord {
                target: target.to_owned(),
                action: action.to_owned(),
                result: result.to_owned(),
            },
        )
    }

    /// Lists leases.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn leases(&self) -> Result<Vec<LeaseView>, ClientError> {
        self.get("/v1/leases")
    }

    /// Lists devices.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn devices(&self) -> Result<Vec<DeviceView>, ClientError> {
        self.get("/v1/devices")
    }

    /// Lists hosts.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn hosts(&self) -> Result<Vec<HostView>, ClientError> {
        self.get("/v1/hosts")
    }

    /// The fabric's switches and links.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn topology(&self) -> Result<pcipool_wire::TopologyView, ClientError> {
        self.get("/v1/topology")
    }

    /// Up to `limit` audit records from sequence number `from` (records start at 1; 0 reads from the
    /// first), asked for in pages the API allows ([`pcipool_wire::AUDIT_LIMIT_MAX`] each).
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ClientError> {
        let page_max = usize::try_from(pcipool_wire::AUDIT_LIMIT_MAX).unwrap_or(usize::MAX);
        let mut records: Vec<AuditView> = Vec::new();
        let mut next = from.max(1);
        while records.len() < limit {
            let page = (limit - records.len()).min(page_max);
            let got: Vec<AuditView> = self.get(&format!("/v1/audit?from={next}&limit={page}"))?;
            let done = got.len() < page;
            next = got.last().map_or(next, |r| r.seq + 1);
            records.extend(got);
            if done {
                break;
            }
        }
        Ok(records)
    }

    /// A workflow journal.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn workflow(&self, id: u64) -> Result<serde_json::Value, ClientError> {
        self.get(&format!("/v1/workflows/{id}"))
    }

    /// A workflow journal once it has an outcome, waiting at most `secs` seconds (then as it stands;
    /// the API holds a long poll for at most [`pcipool_wire::WAIT_SECS_MAX`]).
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn workflow_wait(&self, id: u64, secs: u64) -> Result<serde_json::Value, ClientError> {
        let secs = secs.min(pcipool_wire::WAIT_SECS_MAX);
        let polling = self
            .clone()
            .with_timeout(self.timeout.saturating_add(Duration::from_secs(secs)));
        polling.get(&format!("/v1/workflows/{id}?wait_secs={secs}"))
    }

    /// An operator action on a device.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn device_action(
        &self,
        fdid: &str,
        action: DeviceAction,
    ) -> Result<serde_json::Value, ClientError> {
        self.post(
            &format!("/v1/devices/{}/actions", path_segment(fdid)),
            &action,
        )
    }

    /// Verifies the audit chain.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn audit_verify(&self) -> Result<AuditVerify, ClientError> {
        self.get("/v1/audit/verify")
    }
}
