//! Workflow plans and their journal: the lend and return sequences as ordered, idempotent steps, and the
//! record a runtime writes before and after each step so a restart resumes where it stopped.

use pcipool_backend::{Step, StepContext};
use serde::{Deserialize, Serialize};

/// Which sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// Lend: lender quiesce, unbind, reset; map BARs and DMA; borrower hot-add, bind, verify.
    Lend,
    /// Return: borrower unbind and hot-remove; unmap (fencing); lender reset and verify.
    Return,
}

/// The lend sequence (`docs/background.md`, the safe order of host-side operations).
pub const LEND: &[Step] = &[
    Step::LenderQuiesceCheck,
    Step::LenderUnbind,
    Step::LenderReset,
    Step::MapBars,
    Step::MapDma,
    Step::BorrowerHotAdd,
    Step::BorrowerBind,
    Step::BorrowerVerify,
];

/// The return sequence: the unmap comes before the reset, so a stale borrower can no longer reach the
/// device while it is being reset (data safety over availability).
pub const RETURN: &[Step] = &[
    Step::BorrowerUnbind,
    Step::BorrowerHotRemove,
    Step::Unmap,
    Step::LenderReset,
    Step::LenderVerify,
    Step::LenderRestore,
];

/// The return sequence after a failed reset: the escalated reset replaces the first one.
pub const RETURN_ESCALATED: &[Step] = &[
    Step::BorrowerUnbind,
    Step::BorrowerHotRemove,
    Step::Unmap,
    Step::LenderResetEscalated,
    Step::LenderVerify,
    Step::LenderRestore,
];

/// A step's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "error", rename_all = "snake_case")]
pub enum StepStatus {
    /// Not run yet (or interrupted: rerun, it is idempotent).
    Pending,
    /// Finished.
    Done,
    /// Failed with this message.
    Failed(String),
    /// A borrower-side teardown step of a return that failed (borrower gone, driver stuck), passed over
    /// with the reason: the unmap that follows cuts the borrower off from the device whatever state it is
    /// in, and the borrower's agent tears its side down when the controller refuses the lease.
    Skipped(String),
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub step: Step,
    /// Its progress.
    pub status: StepStatus,
}

/// How a workflow ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum WorkflowOutcome {
    /// Every step done.
    Succeeded,
    /// A lend step failed and the compensation (a return) ran.
    Compensated(String),
    /// A return failed even after escalation.
    Failed(String),
}

/// The journal of one workflow, persisted after every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Workflow id.
    pub id: u64,
    /// Which sequence.
    pub kind: WorkflowKind,
    /// The device, as its fdid text.
    pub fdid: String,
    /// Everything the steps need.
    pub ctx: StepContext,
    /// Steps, in order.
    pub steps: Vec<StepRecord>,
    /// A failed lend is being undone with the return steps.
    pub compensating: bool,
    /// The reset was escalated.
    pub escalated: bool,
    /// Set when finished.
    pub outcome: Option<WorkflowOutcome>,
}

impl Journal {
    /// A new journal with every step pending.
    pub fn new(id: u64, kind: WorkflowKind, fdid: String, ctx: StepContext) -> Self {
        let plan = match kind {
            WorkflowKind::Lend => LEND,
            WorkflowKind::Return => RETURN,
        };
        Self {
            id,
            kind,
            fdid,
            ctx,
            steps: plan
                .iter()
                .map(|s| StepRecord {
                    step: *s,
                    status: StepStatus::Pending,
                })
                .collect(),
            compensating: false,
            escalated: false,
            outcome: None,
        }
    }

    /// The first step neither done nor skipped, if any.
    pub fn next_pending(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| !matches!(s.status, StepStatus::Done | StepStatus::Skipped(_)))
    }

    /// Whether the journal is running return steps (a return, or a lend being undone).
    pub fn returning(&self) -> bool {
        self.kind == WorkflowKind::Return || self.compensating
    }

    /// Switches to compensation (a lend that failed) or escalation (a return whose reset failed).
    pub fn replan(&mut self, steps: &[Step]) {
        self.steps = steps
            .iter()
            .map(|s| StepRecord {
                step: *s,
                status: StepStatus::Pending,
            })
            .collect();
    }
}
