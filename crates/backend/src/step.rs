//! Workflow steps as the controller hands them out: what a step is, who carries it out, what it needs,
//! what it reports back and how it fails. The semantics of each step live in the step runner
//! (`pcipool-agent`); this module is the vocabulary the controller, the agents and the fabric manager
//! share.

use pcipool_fabric::{Epoch, Fdid, LeaseId, NodeId};
use pcipool_pcie::{Bdf, ResetMethod};
use serde::{Deserialize, Serialize};

use crate::control::{DeviceError, FabricError};

/// One step of a lend or return workflow. Every step is idempotent: running it again after a crash
/// does no harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Lender: refuse if local users still hold the device (the operator must quiesce first).
    LenderQuiesceCheck,
    /// Borrower: refuse a voluntary release while programs on the borrower still use the device (an
    /// unreachable borrower passes: nothing there can use it any more).
    BorrowerQuiesceCheck,
    /// Lender: unbind the local driver.
    LenderUnbind,
    /// Lender: reset with function-level reset, or a bus reset when the function has none (refused while
    /// a sibling on the bus is in use).
    LenderReset,
    /// Lender: the escalated reset after a failed first one (a bus reset, same refusal).
    LenderResetEscalated,
    /// Fabric: map the device's BARs into the borrower (a fabric of windows).
    MapBars,
    /// Fabric: map the borrower's DMA window towards the device (a fabric of windows).
    MapDma,
    /// Fabric: attach the whole device to the borrower (a fabric that attaches devices).
    Attach,
    /// Borrower: make the device appear in the borrower's kernel; reports the address it was given.
    BorrowerHotAdd,
    /// Borrower: bind the native driver.
    BorrowerBind,
    /// Borrower: verify the device answers with its ids and is healthy.
    BorrowerVerify,
    /// Borrower: unbind the driver.
    BorrowerUnbind,
    /// Borrower: hot-remove the device.
    BorrowerHotRemove,
    /// Fabric: remove every mapping of the lease (after this a stale borrower cannot reach the device).
    Unmap,
    /// Fabric: detach the whole device from the borrower (same guarantee as [`Step::Unmap`]).
    Detach,
    /// Lender: verify config space is back to its post-reset baseline.
    LenderVerify,
    /// Lender: bind the driver that was bound before the lend, and enable the virtual functions it had,
    /// so the device is back as it was for local use.
    LenderRestore,
}

/// Who carries out a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The host the device sits in.
    Lender,
    /// The host that borrows it.
    Borrower,
    /// Whatever controls the fabric (the simulator, a hypervisor, a switch manager), never a host on
    /// the lender's behalf: a lender that stopped answering must still be cut off from its borrower.
    Fabric,
}

impl Step {
    /// Who runs the step.
    pub fn side(self) -> Side {
        match self {
            Self::LenderQuiesceCheck
            | Self::LenderUnbind
            | Self::LenderReset
            | Self::LenderResetEscalated
            | Self::LenderVerify
            | Self::LenderRestore => Side::Lender,
            Self::BorrowerQuiesceCheck
            | Self::BorrowerHotAdd
            | Self::BorrowerBind
            | Self::BorrowerVerify
            | Self::BorrowerUnbind
            | Self::BorrowerHotRemove => Side::Borrower,
            Self::MapBars | Self::MapDma | Self::Attach | Self::Unmap | Self::Detach => {
                Side::Fabric
            }
        }
    }

    /// The node that runs a host step (`None` for a fabric step).
    pub fn node(self, ctx: &StepContext) -> Option<NodeId> {
        match self.side() {
            Side::Lender => Some(ctx.lender),
            Side::Borrower => Some(ctx.borrower),
            Side::Fabric => None,
        }
    }
}

/// How long a step may take when nobody says otherwise: unbinds and resets that hang are cut off.
pub const DEFAULT_STEP_DEADLINE_MS: u64 = 30_000;

fn default_deadline() -> u64 {
    DEFAULT_STEP_DEADLINE_MS
}

// serde's skip_serializing_if hands the field by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_default_deadline(ms: &u64) -> bool {
    *ms == DEFAULT_STEP_DEADLINE_MS
}

/// What a step needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepContext {
    /// The lender.
    pub lender: NodeId,
    /// The function on the lender (a virtual function's own routing id).
    pub bdf: Bdf,
    /// The borrower.
    pub borrower: NodeId,
    /// Where the borrower's kernel placed the device, once the hot-add reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Bdf>,
    /// The lease (fabric mappings are tagged with it).
    pub lease: LeaseId,
    /// The fencing epoch the lease carries.
    pub epoch: Epoch,
    /// Memory BARs: (index, size).
    pub bars: Vec<(u8, u64)>,
    /// DMA window size.
    pub dma_window: u64,
    /// Native driver to bind on the borrower.
    pub driver: Option<String>,
    /// Driver bound on the lender before the lend (rebound by the return).
    #[serde(default)]
    pub lender_driver: Option<String>,
    /// SR-IOV virtual functions the lender had enabled (a reset of the physical function disables them;
    /// the return enables them again).
    #[serde(default)]
    pub lender_vfs: u16,
    /// The most one step may take, in milliseconds; the transport to a remote host gives up after it.
    #[serde(
        default = "default_deadline",
        skip_serializing_if = "is_default_deadline"
    )]
    pub deadline_ms: u64,
}

impl StepContext {
    /// The device as the fabric names it: the lender and the function's own address.
    pub fn device(&self) -> Fdid {
        Fdid {
            node: self.lender,
            bdf: self.bdf,
            vf: None,
        }
    }
}

/// What a step reports; the journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "output", content = "detail", rename_all = "snake_case")]
pub enum StepOutput {
    /// Done.
    Done,
    /// Found already done (a rerun after a crash): nothing changed.
    AlreadyDone,
    /// The device appeared in the borrower's kernel at this address.
    Attached(Bdf),
    /// The device was reset with this method.
    Reset(ResetMethod),
}

/// What kind of failure a step met; the controller acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepErrorKind {
    /// The host is down or its agent unreachable.
    HostDown,
    /// The device is in use (users, a busy sibling of a bus reset).
    Busy,
    /// The step did not finish within its deadline.
    Timeout,
    /// The backend cannot do it (no such reset method, no fabric control here).
    Unsupported,
    /// The step's epoch is older than one the host has seen for the device: a replaced controller.
    StaleEpoch,
    /// Anything else (a reset that did not bring the device back, a verify that failed).
    Failed,
}

impl StepErrorKind {
    /// The stable code of this kind on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Self::HostDown => "HOST_DOWN",
            Self::Busy => "BUSY",
            Self::Timeout => "TIMEOUT",
            Self::Unsupported => "UNSUPPORTED",
            Self::StaleEpoch => "STALE_EPOCH",
            Self::Failed => "STEP_FAILED",
        }
    }

    /// The kind a wire code names (unknown codes are failures).
    pub fn from_code(code: &str) -> Self {
        match code {
            "HOST_DOWN" => Self::HostDown,
            "BUSY" => Self::Busy,
            "TIMEOUT" => Self::Timeout,
            "UNSUPPORTED" => Self::Unsupported,
            "STALE_EPOCH" => Self::StaleEpoch,
            _ => Self::Failed,
        }
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct StepError {
    /// What kind of failure.
    pub kind: StepErrorKind,
    /// What happened, for the journal and the operator.
    pub message: String,
}

impl StepError {
    /// A failure of `kind`.
    pub fn new(kind: StepErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A plain failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(StepErrorKind::Failed, message)
    }
}

impl From<DeviceError> for StepError {
    fn from(e: DeviceError) -> Self {
        let kind = match &e {
            DeviceError::HostDown | DeviceError::Unreachable(_) => StepErrorKind::HostDown,
            DeviceError::Busy { .. } | DeviceError::Held { .. } => StepErrorKind::Busy,
            DeviceError::Timeout { .. } => StepErrorKind::Timeout,
            DeviceError::ResetUnsupported { .. }
            | DeviceError::Unsupported { .. }
            | DeviceError::NotHere => StepErrorKind::Unsupported,
            DeviceError::NoDevice(_)
            | DeviceError::ResetFailed { .. }
            | DeviceError::Refused { .. }
            | DeviceError::NotAllowed { .. }
            | DeviceError::NoMatchingDriver { .. }
            | DeviceError::ConfigRange { .. }
            | DeviceError::BadReply(_)
            | DeviceError::Gone(_) => StepErrorKind::Failed,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<FabricError> for StepError {
    fn from(e: FabricError) -> Self {
        let kind = match &e {
            FabricError::HostDown(_) | FabricError::Unreachable(_) => StepErrorKind::HostDown,
            FabricError::Unsupported(_) => StepErrorKind::Unsupported,
            FabricError::NoCapacity(_) | FabricError::Failed(_) => StepErrorKind::Failed,
        };
        Self::new(kind, e.to_string())
    }
}

/// Carries out workflow steps: the agents and the fabric manager over the network, or every host and
/// the fabric in one process (the simulator, a test's backend).
pub trait Executor {
    /// Runs one step.
    ///
    /// # Errors
    /// [`StepError`] with the kind the controller acts on.
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError>;
}

/// An executor that concurrent requests share: each step takes what it needs (a lock on the simulated
/// hardware, a connection to an agent), so steps of different devices interleave.
pub trait SharedExecutor: Send + Sync + std::fmt::Debug {
    /// Runs one step.
    ///
    /// # Errors
    /// [`StepError`] with the kind the controller acts on.
    fn run_step(&self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError>;
}

impl<T: SharedExecutor + ?Sized> Executor for &T {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        (**self).run_step(step, ctx)
    }
}
