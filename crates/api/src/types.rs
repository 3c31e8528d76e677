//! Bodies of requests and responses.

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::schedule::Selector;
use pcipool_qualify::AccessModel;
use serde::{Deserialize, Serialize};

/// `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BorrowRequest {
    /// What to match.
    #[serde(default)]
    pub selector: Selector,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
    /// Access model.
    #[serde(default = "lend")]
    pub model: AccessModel,
    /// Borrower host.
    pub borrower: NodeId,
    /// Requested duration, seconds.
    #[serde(default)]
    pub duration_secs: Option<u64>,
}

fn one() -> u32 {
    1
}

fn lend() -> AccessModel {
    AccessModel::Lend
}

/// A lease as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Lease id.
    pub lease_id: LeaseId,
    /// Device.
    pub fdid: Fdid,
    /// Borrower.
    pub borrower: NodeId,
    /// Tenant.
    pub tenant: String,
    /// Model.
    pub model: AccessModel,
    /// Fencing epoch.
    pub epoch: u64,
    /// Expiry (controller clock, ms).
    pub expires_at: u64,
    /// Device state.
    pub state: String,
}

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Device.
    pub fdid: Fdid,
    /// Name.
    pub name: String,
    /// Class code.
    pub class: u32,
    /// State.
    pub state: String,
    /// Active leases.
    pub leases: Vec<LeaseId>,
}

/// Result of `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerify {
    /// Records checked.
    pub records: u64,
    /// Chain intact.
    pub ok: bool,
    /// First problem, if any.
    pub error: Option<String>,
}

/// An error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// Node id.
    pub node: NodeId,
    /// Name.
    pub name: String,
    /// Adapter profiles.
    pub adapters: Vec<String>,
    /// Devices it lends.
    pub devices: usize,
}

/// An operator action on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAction {
    /// Take it out of the pool for maintenance.
    Drain,
    /// Give it back to the lender's own use.
    DrainLocal,
    /// Put it back into the pool.
    Undrain,
    /// Clear a quarantine.
    ClearQuarantine,
}

/// An audit record as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// Sequence.
    pub seq: u64,
    /// Time (ms).
    pub at: u64,
    /// Actor.
    pub actor: String,
    /// Target.
    pub target: String,
    /// Action.
    pub action: String,
    /// Result.
    pub result: String,
}
