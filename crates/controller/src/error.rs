//! Why the controller refused or failed, with the stable codes the API answers with.

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::TransitionError;
use pcipool_pool::policy::PolicyError;
use pcipool_pool::schedule::PlacementError;
use pcipool_store::StoreError;
use pcipool_wire::ErrorCode;

/// Why the controller refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Policy refused the request.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Nothing to place it on.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The state machine refused.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Someone else changed the device first (another borrower won). Worth trying again: the winner
    /// may have left room (a shared device) or another device may do.
    #[error("{0}: taken by a concurrent request")]
    Conflict(Fdid),
    /// The device asked for by name is held and has no room for this request (lent, held exclusively,
    /// all sharers taken). Trying again at once will not help.
    #[error("{0}: held by another borrower")]
    Held(Fdid),
    /// No such lease.
    #[error("no lease {0}")]
    NoLease(LeaseId),
    /// The lease belongs to another tenant.
    #[error("lease {0} belongs to another tenant")]
    NotYours(LeaseId),
    /// The lend workflow failed and was compensated.
    #[error("lend of {fdid} failed: {reason}")]
    LendFailed {
        /// Device.
        fdid: Fdid,
        /// Why.
        reason: String,
    },
    /// A journal row does not decode.
    #[error("workflow {0}: journal unreadable")]
    Journal(u64),
    /// No such device.
    #[error("no device {0}")]
    NoDevice(Fdid),
    /// The device's physical function or one of its virtual functions is out.
    #[error("{0}: its physical function or one of its virtual functions is lent or on its way")]
    FamilyBusy(Fdid),
    /// Devices match, but the fabric cannot carry another lease to this borrower.
    #[error("no capacity on the fabric: {0}")]
    Capacity(#[from] pcipool_pool::capacity::CapacityError),
    /// No such host in the fabric.
    #[error("no host {0} in the fabric")]
    NoHost(NodeId),
    /// The device is still in use where it would be taken from.
    #[error("{0}")]
    Busy(String),
    /// The same keyed request is still being carried out.
    #[error("request {0} is still in progress; retry it in a moment")]
    RequestInFlight(String),
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An agent's report does not make sense.
    #[error("bad report: {0}")]
    BadReport(String),
    /// This runtime does not offer the operation.
    #[error("not supported here: {0}")]
    Unsupported(String),
}

impl ControlError {
    /// The stable code the API answers with (it also picks the HTTP status).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Store(StoreError::NotLeader(_)) => ErrorCode::NotLeader,
            Self::Store(_) | Self::Journal(_) => ErrorCode::StoreError,
            Self::Policy(PolicyError::OverQuota { .. }) => ErrorCode::OverQuota,
            Self::Policy(PolicyError::UnknownTenant(_)) => ErrorCode::UnknownTenant,
            Self::Policy(_) => ErrorCode::Policy,
            Self::Placement(_) | Self::Capacity(_) => ErrorCode::NoCapacity,
            Self::Transition(TransitionError::Conflict { .. })
            | Self::Conflict(_)
            | Self::Held(_)
            | Self::FamilyBusy(_)
            | Self::RequestInFlight(_) => ErrorCode::Conflict,
            Self::Transition(TransitionError::StaleEpoch { .. }) => ErrorCode::StaleEpoch,
            Self::Transition(_) => ErrorCode::IllegalTransition,
            Self::NoLease(_) => ErrorCode::NoSuchLease,
            Self::NotYours(_) => ErrorCode::Forbidden,
            Self::LendFailed { .. } => ErrorCode::LendFailed,
            Self::NoDevice(_) => ErrorCode::NoSuchDevice,
            Self::NoHost(_) => ErrorCode::NoSuchHost,
            Self::BadReport(_) | Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Busy(_) => ErrorCode::Busy,
            Self::Unsupported(_) => ErrorCode::Unsupported,
        }
    }

    /// The stable code as the wire spells it.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }
}
