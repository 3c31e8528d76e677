//! Workflow plans and their journal: the lend and return sequences as ordered, idempotent steps, and the
//! record a runtime writes before and after each step so a restart resumes where it stopped.

use pcipool_backend::{Attachment, Step, StepContext, StepErrorKind, StepOutput};
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

/// The steps of one workflow for a fabric of `attachment`, in order.
///
/// Lend (`docs/background.md`, the safe order of host-side operations): lender quiesce check, unbind and
/// reset; connect the borrower (map BARs and the DMA window through an NTB's windows, or attach the whole
/// device); borrower hot-add (its kernel reports where the device appeared), bind, verify.
///
/// Return: borrower unbind and hot-remove; disconnect (unmap, or detach and the lender's unbind of the
/// device that came home: after this a stale borrower can no longer reach the device, so it comes
/// before the reset: data safety over availability); lender reset, verify and restore. The escalated return replaces the reset with the escalated one.
pub fn plan(kind: PlanKind, attachment: Attachment) -> Vec<Step> {
    let connect: &[Step] = match attachment {
        Attachment::Windows => &[Step::MapBars, Step::MapDma],
        Attachment::WholeDevice => &[Step::Attach],
    };
    // A whole device that comes home is hot-added to its lender, whose kernel binds its native driver
    // at once: the lender takes it again (held, unbound) before the reset, which refuses a bound device.
    let disconnect: &[Step] = match attachment {
        Attachment::Windows => &[Step::Unmap],
        Attachment::WholeDevice => &[Step::Detach, Step::LenderUnbind],
    };
    let reset = match kind {
        PlanKind::Lend | PlanKind::Return => Step::LenderReset,
        PlanKind::ReturnEscalated => Step::LenderResetEscalated,
    };
    match kind {
        PlanKind::Lend => [
            &[
                Step::LenderQuiesceCheck,
                Step::LenderUnbind,
                Step::LenderReset,
            ][..],
            connect,
            &[
                Step::BorrowerHotAdd,
                Step::BorrowerBind,
                Step::BorrowerVerify,
            ],
        ]
        .concat(),
        PlanKind::Return | PlanKind::ReturnEscalated => [
            &[Step::BorrowerUnbind, Step::BorrowerHotRemove][..],
            disconnect,
            &[reset, Step::LenderVerify, Step::LenderRestore],
        ]
        .concat(),
    }
}

/// Which step list [`plan`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// The lend.
    Lend,
    /// The return (also the compensation of a failed lend).
    Return,
    /// The return after a failed reset: the escalated reset replaces the first one.
    ReturnEscalated,
}

// serde's skip_serializing_if hands the field by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_windows(a: &Attachment) -> bool {
    *a == Attachment::Windows
}

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
    /// What the step reported when it finished, when it said more than "done" (where the device
    /// appeared, the reset method used, found already done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<StepOutput>,
    /// The kind of its failure, when it failed or was passed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<StepErrorKind>,
    /// How long it took, from the controller's call to the executor's answer (microseconds; the
    /// last run, for a step rerun after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us: Option<u64>,
}

impl StepRecord {
    fn pending(step: Step) -> Self {
        Self {
            step,
            status: StepStatus::Pending,
            output: None,
            error_kind: None,
            us: None,
        }
    }
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
    /// How the fabric connects the borrower (the plans follow from it).
    #[serde(default, skip_serializing_if = "is_windows")]
    pub attachment: Attachment,
    /// The steps of the plans this one replaced, as they ended (a failed lend before its
    /// compensation, a return before its escalated reset): the record keeps every step that ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<StepRecord>,
    /// Set when finished.
    pub outcome: Option<WorkflowOutcome>,
}

impl Journal {
    /// A new journal with every step of its plan pending.
    pub fn new(
        id: u64,
        kind: WorkflowKind,
        fdid: String,
        ctx: StepContext,
        attachment: Attachment,
    ) -> Self {
        let plan_kind = match kind {
            WorkflowKind::Lend => PlanKind::Lend,
            WorkflowKind::Return => PlanKind::Return,
        };
        Self {
            id,
            kind,
            fdid,
            ctx,
            steps: plan(plan_kind, attachment)
                .into_iter()
                .map(StepRecord::pending)
                .collect(),
            compensating: false,
            escalated: false,
            attachment,
            superseded: Vec::new(),
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

    /// Switches to compensation (a lend that failed: the return steps) or escalation (a return whose
    /// reset failed: the escalated return steps), for this journal's fabric.
    pub fn replan(&mut self, kind: PlanKind) {
        let replaced = std::mem::replace(
            &mut self.steps,
            plan(kind, self.attachment)
                .into_iter()
                .map(StepRecord::pending)
                .collect(),
        );
        self.superseded.extend(replaced);
    }

    /// The first step that failed, in the plans this one replaced: "attach: no free hot-plug slot".
    pub fn first_failure(&self) -> Option<String> {
        self.superseded.iter().find_map(|r| match &r.status {
            StepStatus::Failed(why) => {
                let step = serde_json::to_value(r.step)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{:?}", r.step));
                Some(format!("{step}: {why}"))
            }
            _ => None,
        })
    }

    /// Records what step `i` reported; where the device appeared goes into the context the later steps
    /// (and the return) use.
    pub fn record_output(&mut self, i: usize, output: StepOutput) {
        if let StepOutput::Attached(at) = output {
            self.ctx.attached = Some(at);
        }
        if let Some(record) = self.steps.get_mut(i) {
            record.status = StepStatus::Done;
            // A plain "done" says nothing the status does not: only outputs with content are kept, so
            // the journal (written after every step) stays small.
            record.output = (output != StepOutput::Done).then_some(output);
            record.error_kind = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lend_plan_for_windows_maps_bars_and_dma_before_the_hot_add() {
        assert_eq!(
            plan(PlanKind::Lend, Attachment::Windows),
            vec![
                Step::LenderQuiesceCheck,
                Step::LenderUnbind,
                Step::LenderReset,
                Step::MapBars,
                Step::MapDma,
                Step::BorrowerHotAdd,
                Step::BorrowerBind,
                Step::BorrowerVerify,
            ]
        );
    }

    #[test]
    fn lend_plan_for_a_whole_device_fabric_attaches_in_one_step_and_maps_nothing() {
        assert_eq!(
            plan(PlanKind::Lend, Attachment::WholeDevice),
            vec![
                Step::LenderQuiesceCheck,
                Step::LenderUnbind,
                Step::LenderReset,
                Step::Attach,
                Step::BorrowerHotAdd,
                Step::BorrowerBind,
                Step::BorrowerVerify,
            ]
        );
    }

    #[test]
    fn escalated_return_detaches_before_the_escalated_reset() {
        assert_eq!(
            plan(PlanKind::ReturnEscalated, Attachment::WholeDevice),
            vec![
                Step::BorrowerUnbind,
                Step::BorrowerHotRemove,
                Step::Detach,
                Step::LenderUnbind,
                Step::LenderResetEscalated,
                Step::LenderVerify,
                Step::LenderRestore,
            ]
        );
    }
}
