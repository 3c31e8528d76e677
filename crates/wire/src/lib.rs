//! The wire: every request and response body of pcipool's HTTP services (the controller's API, the
//! agents' step calls, the fabric manager), with both serde directions, and [`ErrorCode`], the stable
//! error codes that also pick each error's HTTP status. Clients build against this crate alone: it pulls
//! in no HTTP stack, no runtime and no database.
//!
//! # Layout
//! - this file: the bodies, grouped by the route that takes them.
//! - [`code`]: the [`ErrorCode`] table.
#![deny(missing_docs)]

pub mod code;

pub use code::ErrorCode;
/// The identifiers the bodies carry.
pub use pcipool_fabric::{Epoch, Fdid, LeaseId, NodeId};
use pcipool_pcie::Bdf;
use pcipool_pool::schedule::Selector;
use pcipool_qualify::AccessModel;
use serde::{Deserialize, Serialize};

/// `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BorrowRequest {
    /// What to match.
    #[serde(default)]
    pub selector: Selector,
    /// How many (a gang: all or nothing).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1024, default = 1)]
    pub count: u32,
    /// Access model.
    #[serde(default = "lend")]
    pub model: AccessModel,
    /// Borrower host.
    pub borrower: NodeId,
    /// Requested duration, seconds.
    #[serde(default)]
    pub duration_secs: Option<u64>,
    /// Shared model: how many borrowers the device may have at once (first sharer decides; default 4).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    pub max_sharers: Option<u32>,
    /// Idempotency key chosen by the client (1-128 printable ASCII characters, no space). Repeating a request with
    /// the same key while its leases are active returns those leases: retry a borrow whose answer was
    /// lost without taking a second device.
    #[serde(default)]
    #[schema(pattern = "^[!-~]{1,128}$")]
    pub request_id: Option<String>,
    /// Wait for the lends to finish (201 with the leases lent), or return as soon as the devices are
    /// assigned (202: follow each lease's `workflow` with `GET /v1/workflows/{id}?wait_secs=N`).
    #[serde(default = "yes")]
    pub wait: bool,
}

/// The most devices one borrow asks for.
pub const BORROW_COUNT_MAX: u32 = 1024;

/// The most hosts that may share one device (the controller's limit too).
pub const MAX_SHARERS: u32 = 64;

impl BorrowRequest {
    /// The request, if its fields are in the ranges the API documents.
    ///
    /// # Errors
    /// Why not, for a 400 answer.
    pub fn checked(self) -> Result<Self, String> {
        if !(1..=BORROW_COUNT_MAX).contains(&self.count) {
            return Err(format!(
                "count {} is outside 1..={BORROW_COUNT_MAX}",
                self.count
            ));
        }
        if let Some(n) = self.max_sharers
            && !(1..=MAX_SHARERS).contains(&n)
        {
            return Err(format!("max_sharers {n} is outside 1..={MAX_SHARERS}"));
        }
        if let Some(key) = &self.request_id
            && (key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(
                "request_id must be 1-128 printable ASCII characters without spaces".into(),
            );
        }
        Ok(self)
    }

    /// `count` devices of `class` lent to `borrower` (the Device Lending model, for as long as the
    /// policy allows), the answer waiting for the lends: what a script or a benchmark asks most.
    pub fn lend(class: pcipool_pool::schedule::DeviceClass, count: u32, borrower: NodeId) -> Self {
        Self {
            selector: Selector {
                class: Some(class),
                ..Selector::default()
            },
            count,
            model: AccessModel::Lend,
            borrower,
            duration_secs: None,
            max_sharers: None,
            request_id: None,
            wait: true,
        }
    }
}

/// A granted lease, as `POST /v1/leases` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Granted {
    /// Lease id.
    pub lease_id: LeaseId,
    /// Device.
    pub fdid: Fdid,
    /// Fencing epoch.
    pub epoch: Epoch,
    /// Where the borrower's kernel placed the device, as the lend's hot-add reported it (`None` for a
    /// shared lease, and for a lend that has not finished yet).
    pub attached: Option<Bdf>,
    /// Lend workflow id.
    pub workflow: u64,
}

/// `POST /v1/leases/{id}/downgrade`: the exclusive holder lets others share the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DowngradeRequest {
    /// The new limit of sharers.
    #[schema(minimum = 2, maximum = 64)]
    pub max_sharers: u32,
}

impl DowngradeRequest {
    /// The request, if `max_sharers` is in 2..=[`MAX_SHARERS`].
    ///
    /// # Errors
    /// Why not, for a 400 answer.
    pub fn checked(self) -> Result<Self, String> {
        if (2..=MAX_SHARERS).contains(&self.max_sharers) {
            Ok(self)
        } else {
            Err(format!(
                "max_sharers {} is outside 2..={MAX_SHARERS}",
                self.max_sharers
            ))
        }
    }
}

/// `POST /v1/leases/{id}/heartbeat`: the holder keeps its lease alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The fencing epoch the lease was granted with.
    pub epoch: u64,
}

/// `POST /v1/audit`: a record another part of the pool reports (the fabric's data path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// What it concerns (`lease 12`).
    #[schema(min_length = 1, max_length = 100)]
    pub target: String,
    /// What happened (`datapath_teardown`).
    #[schema(pattern = "^[a-z_]{1,40}$")]
    pub action: String,
    /// Details.
    #[schema(max_length = 500)]
    pub result: String,
}

impl AuditRecord {
    /// The record, if it has an action of `a-z` and `_` (1-40), a target of 1-100 characters and a
    /// result of at most 500.
    ///
    /// # Errors
    /// Why not, for a 400 answer.
    pub fn checked(self) -> Result<Self, String> {
        let plain_action = (1..=40).contains(&self.action.len())
            && self
                .action
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
        let target = self.target.chars().count();
        if !plain_action || !(1..=100).contains(&target) || self.result.chars().count() > 500 {
            return Err("an audit record needs an action of a-z and _ (1-40), a target (1-100 characters) and a result (at most 500)".into());
        }
        Ok(self)
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn lend() -> AccessModel {
    AccessModel::Lend
}

/// A lease as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The answer to `POST /v1/devices/{fdid}/actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceActionReply {
    /// The device.
    pub fdid: Fdid,
    /// Its state after the action.
    pub state: String,
}

/// The most records one `GET /v1/audit` returns.
pub const AUDIT_LIMIT_MAX: u32 = 10_000;

/// `GET /v1/audit?from=&limit=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The first record's sequence number (default 1).
    #[param(minimum = 1)]
    pub from: Option<u64>,
    /// How many records at most (default 100, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// The query, if its numbers are in range.
    ///
    /// # Errors
    /// Why not, for a 400 answer.
    pub fn checked(self) -> Result<Self, String> {
        if self.from == Some(0) {
            return Err("from starts at 1".into());
        }
        match self.limit {
            Some(n) if n == 0 || n > AUDIT_LIMIT_MAX => {
                Err(format!("limit {n} is outside 1..={AUDIT_LIMIT_MAX}"))
            }
            _ => Ok(self),
        }
    }
}

/// The longest a long poll of `GET /v1/workflows/{id}` waits, seconds.
pub const WAIT_SECS_MAX: u64 = 300;

/// `GET /v1/workflows/{id}?wait_secs=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Hold the answer until the workflow has an outcome or this many seconds passed (0..=300,
    /// default 0: answer at once).
    #[param(minimum = 0, maximum = 300)]
    pub wait_secs: Option<u64>,
}

impl WaitQuery {
    /// How long to wait, if in range.
    ///
    /// # Errors
    /// Why not, for a 400 answer.
    pub fn checked(self) -> Result<std::time::Duration, String> {
        match self.wait_secs {
            Some(n) if n > WAIT_SECS_MAX => {
                Err(format!("wait_secs {n} is outside 0..={WAIT_SECS_MAX}"))
            }
            n => Ok(std::time::Duration::from_secs(n.unwrap_or(0))),
        }
    }
}

/// Result of `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerify {
    /// Records checked.
    pub records: u64,
    /// Chain intact.
    pub ok: bool,
    /// First problem, if any.
    pub error: Option<String>,
}

/// Result of `GET /v1/controller` on `pcipool server` with an etcd store: whether this controller
/// leads the pool, and which one does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControllerView {
    /// `leader` or `follower`.
    pub role: String,
    /// The controller that leads (`HOSTNAME:PID URL`), if any does.
    pub leader: Option<String>,
    /// This controller (`HOSTNAME:PID URL`).
    pub this: String,
}

/// Result of `GET /v1/whoami`: the principal a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// Its name (a tenant's name is the tenant).
    pub name: String,
    /// `tenant`, `agent`, `operator` or `admin`.
    pub role: String,
}

/// An error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    /// Node id.
    pub node: NodeId,
    /// Name.
    pub name: String,
    /// Adapter profiles.
    pub adapters: Vec<String>,
    /// Devices it lends.
    pub devices: usize,
    /// Its agent: `up`, `lost`, `none` (never registered), or `in-process` (`pcipool dev`).
    #[serde(default)]
    pub agent: String,
}

/// `GET /v1/topology`: the fabric's switches and links (hosts and their adapters are `GET /v1/hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopologyView {
    /// Fabric switches.
    pub switches: Vec<String>,
    /// Links: `n3/a0` (a host's adapter) or `switch:sw0` at each end.
    pub links: Vec<LinkView>,
}

/// One fabric link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkView {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// PCIe generation.
    pub generation: u8,
    /// Lanes.
    pub width: u8,
    /// Usable bandwidth per direction, MB/s.
    pub mb_per_s: u32,
}

/// An operator action on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// What the decision left, as JSON text (empty when nothing): a device's new state, or a
    /// workflow's journal with every step, its status and what it reported.
    #[serde(default)]
    pub after: String,
}

/// One device an agent reports, with its qualification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportedDevice {
    /// What the scheduler needs to know about it (ids, class, link, BARs, models it qualified for).
    pub info: pcipool_pool::schedule::DeviceInfo,
    /// Why it failed qualification for the models it did not get.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// `POST /v1/agents`: an agent announces itself and its host's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistration {
    /// The host the agent runs on.
    pub node: NodeId,
    /// Where the controller reaches the agent (`http://host:port`).
    pub url: String,
    /// The bearer secret the agent expects on the controller's step calls (generated at its start).
    pub secret: String,
    /// The host's devices.
    #[serde(default)]
    pub devices: Vec<ReportedDevice>,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct RegistrationReply {
    /// The leases the controller grants to this host as a borrower, with their step contexts: a
    /// restarted agent heartbeats these and removes any other borrowed device it finds on its host.
    pub borrowed: Vec<pcipool_backend::StepContext>,
}

/// A lease the borrower's agent still carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseBeat {
    /// Lease.
    pub lease_id: LeaseId,
    /// The fencing epoch the agent holds for it.
    pub epoch: pcipool_fabric::Epoch,
}

/// `POST /v1/agents/{node}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentHeartbeat {
    /// Leases the host carries as a borrower.
    #[serde(default)]
    pub leases: Vec<LeaseBeat>,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct HeartbeatReply {
    /// Leases renewed.
    pub renewed: Vec<LeaseId>,
    /// Leases the controller no longer grants (fenced, expired, unknown): tear them down.
    pub refused: Vec<LeaseId>,
    /// The controller does not know this agent (it restarted): register again.
    pub register: bool,
}

/// `GET /v1/devices/{fdid}`: one device in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceDetail {
    /// What the agent reported.
    pub info: pcipool_pool::schedule::DeviceInfo,
    /// State name.
    pub state: String,
    /// The full ownership state (leases, workflow, quarantine reason, qualification reasons).
    pub detail: serde_json::Value,
    /// Row version (the compare-and-swap revision).
    pub version: u64,
    /// Active leases.
    pub leases: Vec<LeaseView>,
}

/// `GET /v1/stats` on an agent or a fabric manager: the steps it ran and where their time went,
/// since it started (what `pcipool bench lab` reads before and after each lend and return).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorStats {
    /// Steps answered.
    pub steps: u64,
    /// Time spent in them, from request to answer (microseconds).
    pub step_us: u64,
    /// Of that, time spent waiting on the machine: the kernel's writes and enumeration, the
    /// hypervisor's QMP answers (microseconds).
    pub waited_us: u64,
    /// CPU time of an agent's process in its own code since it started (microseconds, at the
    /// kernel's 10 ms tick; zero where not measured: a fabric manager shares its process).
    #[serde(default)]
    pub cpu_user_us: u64,
    /// CPU time the kernel spent on an agent's system calls (its sysfs and procfs reads and writes).
    #[serde(default)]
    pub cpu_system_us: u64,
    /// The same per step (by the step's name), where the executor counts them.
    #[serde(default)]
    pub by_step: std::collections::BTreeMap<String, StepTotals>,
}

/// One step's counts on an executor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTotals {
    /// Times it ran.
    pub steps: u64,
    /// Time in it (microseconds).
    pub step_us: u64,
    /// Of that, waiting on the machine (microseconds).
    pub waited_us: u64,
    /// The executor process's CPU time (user and system) while it ran (microseconds, at the kernel's
    /// 10 ms tick; zero where not measured).
    pub cpu_us: u64,
}

/// `POST /steps` on an agent or the simulated fabric: run one workflow step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// The step.
    pub step: pcipool_backend::Step,
    /// Its context (carries the lease's fencing epoch).
    pub ctx: pcipool_backend::StepContext,
}
