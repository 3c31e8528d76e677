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

/// A client for one server and token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
    timeout: Duration,
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
    /// A client for `base` (e.g. `http://127.0.0.1:7070`), with the [`DEFAULT_TIMEOUT`].
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
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

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
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
        let url = format!("{}{path}", self.base);
        let resp = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(Self::transport(&url))?;
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
        let url = format!("{}{path}", self.base);
        let resp = self
            .agent
            .post(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .send_json(body)
            .map_err(Self::transport(&url))?;
        Ok((url, resp))
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
        let url = format!("{}/v1/leases", self.base);
        let resp = self
            .agent
            .post(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .send_json(request)
            .map_err(Self::transport(&url))?;
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
        let url = format!("{}{path}", self.base);
        let resp = self
            .agent
            .delete(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(Self::transport(&url))?;
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

    /// Audit records.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ClientError> {
        self.get(&format!("/v1/audit?from={from}&limit={limit}"))
    }

    /// A workflow journal.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn workflow(&self, id: u64) -> Result<serde_json::Value, ClientError> {
        self.get(&format!("/v1/workflows/{id}"))
    }

    /// A workflow journal once it has an outcome, waiting at most `secs` seconds (then as it stands).
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn workflow_wait(&self, id: u64, secs: u64) -> Result<serde_json::Value, ClientError> {
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
        let url = format!("{}/v1/devices/{}/actions", self.base, path_segment(fdid));
        let resp = self
            .agent
            .post(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .send_json(action)
            .map_err(Self::transport(&url))?;
        Self::decode(&url, resp)
    }

    /// Verifies the audit chain.
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn audit_verify(&self) -> Result<AuditVerify, ClientError> {
        self.get("/v1/audit/verify")
    }
}
