//! Device ownership: the life cycle of `docs/architecture.md` as an enum plus one pure transition function.
//!
//! ```text
//! Discovered --qualify--> Qualified | Rejected(reasons)
//! Qualified --pool add--> Available
//! Available --assign--> Lending --lent--> Lent(lease)                    (lend / vf)
//! Available --share--> Shared(leases, max sharers)                       (shared)
//! Shared(1 lease, max 1 = exclusive) --downgrade--> Shared(same lease, max n)
//! Lent/Shared --release | expiry | fence--> Returning --returned--> Available
//! Returning --reset failed--> Returning (escalated once) --failed again--> Quarantined
//! Lending --lend failed--> Available | Quarantined (the compensation's reset failed too)
//! any --fault--> Quarantined(reason)      Quarantined --clear--> Available
//! in the pool --lender lost--> Lost      Lost --lender back--> Returning (or Available when idle)
//! (quarantined, drained, rejected or unqualified devices keep their state while the lender is lost)
//! Available --drain--> Maintenance | Local   Maintenance/Local --undrain--> Available
//! ```
//! Every lease carries a fencing epoch; a command with an older epoch than the device's current one is
//! refused by agents. Epochs only grow.

use std::collections::BTreeMap;

pub use pcipool_fabric::Epoch;
use pcipool_fabric::{LeaseId, NodeId};
use pcipool_pcie::Bdf;
use pcipool_qualify::AccessModel;
use serde::{Deserialize, Serialize};

/// Milliseconds on the control plane's clock (given to [`apply`]; the core owns no clock).
pub type Millis = u64;

/// A workflow (lend or return) in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkflowId(pub u64);

/// A granted use of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Id.
    pub id: LeaseId,
    /// Who uses the device.
    pub borrower: NodeId,
    /// On whose behalf.
    pub tenant: String,
    /// How.
    pub model: AccessModel,
    /// Fencing epoch.
    pub epoch: Epoch,
    /// When it expires unless renewed by a heartbeat.
    pub expires_at: Millis,
    /// Renewal period a heartbeat grants.
    pub ttl: Millis,
    /// The client's idempotency key for the request that created it: the same key asks for the same
    /// lease again (a retry after a lost answer) instead of a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Where the borrower's kernel placed the device (known once a lend's hot-add reported it; shared
    /// leases map windows, not the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Bdf>,
}

/// Why a device is being returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnReason {
    /// The tenant or an operator released it.
    Released,
    /// The borrower stopped heartbeating past the lease.
    Expired,
    /// The control plane fenced it (borrower lost, operator force).
    Fenced,
}

/// Ownership state of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeviceState {
    /// Seen by an agent, not yet judged.
    Discovered,
    /// Passed qualification for these models.
    Qualified {
        /// Access models it may be used for.
        models: Vec<AccessModel>,
    },
    /// Failed qualification.
    Rejected {
        /// Finding codes and messages.
        reasons: Vec<String>,
    },
    /// In the pool, free.
    Available,
    /// A lend workflow is running for this lease.
    Lending {
        /// The lease being set up.
        lease: Lease,
        /// The workflow.
        workflow: WorkflowId,
    },
    /// Lent to one borrower.
    Lent {
        /// The lease.
        lease: Lease,
    },
    /// Used by several hosts at once (application-managed).
    Shared {
        /// Current leases (stored as a list: JSON object keys must be strings).
        #[serde(with = "lease_map")]
        leases: BTreeMap<LeaseId, Lease>,
        /// Most sharers allowed.
        max_sharers: u32,
    },
    /// A return workflow is running.
    Returning {
        /// The leases being ended.
        leases: Vec<Lease>,
        /// Why.
        reason: ReturnReason,
        /// The workflow.
        workflow: WorkflowId,
        /// The reset already failed once and was escalated (e.g. FLR -> bus reset).
        escalated: bool,
    },
    /// Taken out of service until an operator clears it.
    Quarantined {
        /// Why.
        reason: String,
    },
    /// The lender is gone; the device's fate is unknown. The leases that were active ended when the
    /// lender was lost: fenced, their borrowers told and cut off from the device (a device whose lender
    /// is gone cannot be returned, and a fabric that moved the whole device would otherwise leave it
    /// with a borrower no lease covers).
    Lost {
        /// The leases that ended when the lender was lost: once it is back, their return runs
        /// (teardown, reset, verify) before the device is lent again. They give no access.
        leases: Vec<Lease>,
    },
    /// Drained for maintenance.
    Maintenance,
    /// Drained back to the lender's own use.
    Local,
}

impl DeviceState {
    /// Short name, for errors and tables.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Qualified { .. } => "qualified",
            Self::Rejected { .. } => "rejected",
            Self::Available => "available",
            Self::Lending { .. } => "lending",
            Self::Lent { .. } => "lent",
            Self::Shared { .. } => "shared",
            Self::Returning { .. } => "returning",
            Self::Quarantined { .. } => "quarantined",
            Self::Lost { .. } => "lost",
            Self::Maintenance => "maintenance",
            Self::Local => "local",
        }
    }

    /// Leases that currently give a borrower access (or are being set up or torn down).
    pub fn leases(&self) -> Vec<&Lease> {
        match self {
            Self::Lending { lease, .. } | Self::Lent { lease } => vec![lease],
            Self::Shared { leases, .. } => leases.values().collect(),
            Self::Returning { leases, .. } => leases.iter().collect(),
            Self::Discovered
            | Self::Lost { .. }
            | Self::Qualified { .. }
            | Self::Rejected { .. }
            | Self::Available
            | Self::Quarantined { .. }
            | Self::Maintenance
            | Self::Local => Vec::new(),
        }
    }

    /// A state nothing more happens in without outside input (what a quiet pool must settle into).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Self::Available | Self::Quarantined { .. } | Self::Lost { .. }
        )
    }
}

mod lease_map {
    use std::collections::BTreeMap;

    use pcipool_fabric::LeaseId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Lease;

    pub fn serialize<S: Serializer>(
        leases: &BTreeMap<LeaseId, Lease>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        leases.values().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<LeaseId, Lease>, D::Error> {
        Ok(Vec::<Lease>::deserialize(d)?
            .into_iter()
            .map(|l| (l.id, l))
            .collect())
    }
}

/// What happens to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Qualification finished.
    Qualified {
        /// Models passed (empty = rejected).
        models: Vec<AccessModel>,
        /// Failure reasons, when rejected.
        reasons: Vec<String>,
    },
    /// An operator adds the device to the pool.
    AddToPool,
    /// The scheduler grants an exclusive lease (lend or vf).
    Assign {
        /// The lease.
        lease: Lease,
        /// The lend workflow to run.
        workflow: WorkflowId,
    },
    /// The lend workflow finished: the borrower's driver is bound.
    LendDone {
        /// The workflow.
        workflow: WorkflowId,
        /// Where the borrower's kernel placed the device, as its hot-add reported.
        #[serde(default)]
        attached: Option<Bdf>,
    },
    /// The lend workflow failed and compensated (device untouched or reset); when even the
    /// compensation's escalated reset failed, the device goes to quarantine in the same transition.
    LendFailed {
        /// The workflow.
        workflow: WorkflowId,
        /// Why.
        reason: String,
        /// The device could not be reset: unsafe to lend again.
        #[serde(default)]
        quarantine: bool,
    },
    /// The scheduler grants a shared lease.
    Share {
        /// The lease.
        lease: Lease,
        /// Most sharers.
        max_sharers: u32,
    },
    /// The only holder of a device borrowed shared with one sharer (exclusive) lets others in: it has
    /// initialised the device and raises the limit.
    Downgrade {
        /// The exclusive lease.
        lease: LeaseId,
        /// The new limit (at least 2).
        max_sharers: u32,
    },
    /// A lease is released by its tenant or an operator.
    Release {
        /// The lease.
        lease: LeaseId,
        /// The return workflow to run when the device becomes free.
        workflow: WorkflowId,
    },
    /// The borrower heartbeats: renew the lease.
    Heartbeat {
        /// The lease.
        lease: LeaseId,
        /// The epoch the borrower holds (a stale epoch is refused).
        epoch: Epoch,
    },
    /// Time passes: expire leases whose time is up.
    Tick {
        /// Return workflow to use if something expires.
        workflow: WorkflowId,
    },
    /// An operator or the failure detector fences every lease (borrower lost, forced return).
    Fence {
        /// Return workflow.
        workflow: WorkflowId,
    },
    /// The return workflow finished: device reset, verified, back in the pool.
    ReturnDone {
        /// The workflow.
        workflow: WorkflowId,
    },
    /// The return workflow failed (its reset, or the verify after it).
    ReturnFailed {
        /// The workflow.
        workflow: WorkflowId,
        /// Why.
        reason: String,
        /// The workflow had already escalated its reset: there is nothing left to try.
        #[serde(default)]
        escalated: bool,
    },
    /// A device fault (hang, surprise removal, IOMMU fault storm).
    Fault {
        /// Why.
        reason: String,
    },
    /// The lender stopped answering.
    LenderLost,
    /// The lender is back.
    LenderBack {
        /// Return workflow to fence leases that were active.
        workflow: WorkflowId,
    },
    /// Take the device out of the pool.
    Drain {
        /// Back to the lender's own use rather than maintenance.
        to_local: bool,
    },
    /// Put a drained device back.
    Undrain,
    /// An operator clears a quarantine after fixing the cause.
    ClearQuarantine,
}

impl Event {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Qualified { .. } => "qualified",
            Self::AddToPool => "add_to_pool",
            Self::Assign { .. } => "assign",
            Self::LendDone { .. } => "lend_done",
            Self::LendFailed { .. } => "lend_failed",
            Self::Share { .. } => "share",
            Self::Downgrade { .. } => "downgrade",
            Self::Release { .. } => "release",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Tick { .. } => "tick",
            Self::Fence { .. } => "fence",
            Self::ReturnDone { .. } => "return_done",
            Self::ReturnFailed { .. } => "return_failed",
            Self::Fault { .. } => "fault",
            Self::LenderLost => "lender_lost",
            Self::LenderBack { .. } => "lender_back",
            Self::Drain { .. } => "drain",
            Self::Undrain => "undrain",
            Self::ClearQuarantine => "clear_quarantine",
        }
    }
}

/// What the runtime must do because of a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Run the lend workflow for a lease.
    StartLend {
        /// Lease.
        lease: Lease,
        /// Workflow.
        workflow: WorkflowId,
    },
    /// Run the return workflow: unmap first (fencing), then reset and verify.
    StartReturn {
        /// Leases being ended.
        leases: Vec<Lease>,
        /// Why.
        reason: ReturnReason,
        /// Workflow.
        workflow: WorkflowId,
        /// Use the escalated reset (e.g. bus reset after a failed FLR).
        escalate: bool,
    },
    /// Tear down one sharer's mappings (the device stays shared by the others).
    UnmapSharer {
        /// The lease that ends.
        lease: Lease,
    },
    /// Tear down every mapping of these leases without resetting: the device is faulted (it goes to
    /// quarantine, and an operator decides what happens to it) or its lender is lost.
    Unmap {
        /// The leases.
        leases: Vec<Lease>,
    },
    /// Tell a borrower its lease ended or the device is gone.
    NotifyBorrower {
        /// Lease.
        lease: LeaseId,
        /// Borrower.
        borrower: NodeId,
        /// What happened.
        what: String,
    },
}

/// A transition that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event makes no sense in this state.
    #[error("{event} is not allowed while {state}")]
    Illegal {
        /// State name.
        state: &'static str,
        /// Event name.
        event: &'static str,
    },
    /// An exclusive lease is requested while someone holds the device.
    #[error("device is held ({state})")]
    Conflict {
        /// State name.
        state: &'static str,
    },
    /// A stale epoch (a fenced borrower still talking).
    #[error("stale epoch {got} (current {current})")]
    StaleEpoch {
        /// Epoch presented.
        got: Epoch,
        /// Current epoch.
        current: Epoch,
    },
    /// The lease or workflow named is not this device's.
    #[error("unknown {what}")]
    Unknown {
        /// What.
        what: &'static str,
    },
    /// The shared device is full.
    #[error("all {max} sharers taken")]
    SharersFull {
        /// Maximum.
        max: u32,
    },
    /// The model asked for is not one the device qualified for.
    #[error("device is not qualified for {0}")]
    NotQualified(AccessModel),
}

pub use crate::transition::{Outcome, apply};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_state_round_trips_through_json() {
        let lease = Lease {
            id: LeaseId(7),
            borrower: NodeId(2),
            tenant: "t".into(),
            model: AccessModel::Shared,
            epoch: Epoch(1),
            expires_at: 10,
            ttl: 10,
            request: None,
            attached: None,
        };
        let state = DeviceState::Shared {
            leases: BTreeMap::from([(lease.id, lease)]),
            max_sharers: 2,
        };
        let text = serde_json::to_string(&state).expect("serialises");
        assert_eq!(serde_json::from_str::<DeviceState>(&text).ok(), Some(state));
    }
}
