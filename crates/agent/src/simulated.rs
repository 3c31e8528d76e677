//! A host whose hardware is the simulated fabric's process (`pcipool sim serve`): its kernel's
//! primitives are calls to `/v1/hosts/{node}/control`, its qualified devices come from
//! `/v1/hosts/{node}/devices`. A Linux host's agent uses the Linux backend instead.

use std::time::Duration;

use pcipool_backend::DeviceError;
use pcipool_backend::remote::{HostLink, HostOp, HostReply};
use pcipool_fabric::NodeId;
use pcipool_wire::ReportedDevice;

use crate::runtime::Reporter;

/// The link from one host's agent to the simulated fabric's process.
#[derive(Debug, Clone)]
pub struct SimulatedHost {
    http: ureq::Agent,
    url: String,
    node: NodeId,
}

impl SimulatedHost {
    /// Host `node` of the simulated fabric at `url`.
    pub fn new(url: &str, node: NodeId) -> Self {
        Self {
            http: pcipool_client::http_agent(Duration::from_secs(30)),
            url: url.trim_end_matches('/').to_owned(),
            node,
        }
    }
}

impl HostLink for SimulatedHost {
    fn call(&self, op: &HostOp) -> HostReply {
        let url = format!("{}/v1/hosts/{}/control", self.url, self.node);
        let mut resp = self
            .http
            .post(&url)
            .send_json(op)
            .map_err(|e| DeviceError::Unreachable(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(DeviceError::Unreachable(format!(
                "{url}: HTTP {}",
                resp.status()
            )));
        }
        resp.body_mut()
            .read_json::<HostReply>()
            .map_err(|e| DeviceError::BadReply(format!("{url}: {e}")))?
    }
}

impl Reporter for SimulatedHost {
    fn devices(&self) -> Result<Vec<ReportedDevice>, String> {
        let url = format!("{}/v1/hosts/{}/devices", self.url, self.node);
        let mut resp = self
            .http
            .get(&url)
            .call()
            .map_err(|e| format!("cannot reach the fabric at {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        resp.body_mut()
            .read_json()
            .map_err(|e| format!("{url}: unexpected body: {e}"))
    }
}
