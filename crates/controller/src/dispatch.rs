//! Every command the sans-IO core returns, carried out by one exhaustive match: a new command is a
//! compile error here until someone decides what it means.

use pcipool_backend::{Attachment, Executor, Step};
use pcipool_fabric::Fdid;
use pcipool_pool::workflow::{Journal, PlanKind, WorkflowKind};
use pcipool_pool::{Command, Lease, Millis, WorkflowId};
use pcipool_store::Store;

use crate::{ControlError, Controller};

impl<S: Store> Controller<S> {
    /// Carries out `commands`, which a transition of `fdid` returned.
    ///
    /// # Errors
    /// Store errors and unreadable journals; a step that fails is the workflow's business (journalled,
    /// compensated, escalated), and a teardown that fails is logged and counted.
    pub(crate) fn carry_out(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        commands: Vec<Command>,
        now: Millis,
    ) -> Result<(), ControlError> {
        for command in commands {
            match command {
                // The lend's journal was written in the same transaction as the assignment: the
                // request runs it (`complete_lends`, now or from the lend worker), and a restarted
                // controller resumes it from the store. Nothing more to start here.
                Command::StartLend { lease, workflow } => {
                    tracing::debug!(lease = lease.id.0, workflow = workflow.0, %fdid, "lend journalled");
                }
                Command::StartReturn {
                    leases,
                    reason,
                    workflow,
                    escalate,
                } => {
                    tracing::info!(%fdid, workflow = workflow.0, ?reason, escalate, "return");
                    self.start_return(exec, fdid, &leases, workflow, escalate, now)?;
                }
                // One sharer leaves a device others still share: cut its mappings only.
                Command::UnmapSharer { lease } => self.disconnect(exec, fdid, &lease)?,
                // A faulted device goes to quarantine: cut every borrower off, reset nothing (an
                // operator decides what happens to it).
                Command::Unmap { leases } => {
                    for lease in &leases {
                        self.disconnect(exec, fdid, lease)?;
                    }
                }
                // Borrowers learn it at their next renewal, which the controller refuses: an agent then
                // tears the device down on its host, an application's borrow ends.
                Command::NotifyBorrower {
                    lease,
                    borrower,
                    what,
                } => {
                    tracing::info!(lease = lease.0, %borrower, %fdid, %what, "borrower told");
                    self.notified
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Runs the return of `leases` (the escalated plan when `escalate`), journalled as `workflow`.
    fn start_return(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        leases: &[Lease],
        workflow: WorkflowId,
        escalate: bool,
        now: Millis,
    ) -> Result<(), ControlError> {
        for lease in leases {
            let ctx = self.context(fdid, lease)?;
            let mut journal = Journal::new(
                workflow.0,
                WorkflowKind::Return,
                fdid.to_string(),
                ctx,
                self.fabric.attachment,
            );
            if escalate {
                journal.escalated = true;
                journal.replan(PlanKind::ReturnEscalated);
            }
            let existing = self.store.workflow(workflow.0)?.map(|v| v.version);
            self.save(&journal, existing, now)?;
            self.run(exec, &mut journal, now)?;
        }
        Ok(())
    }

    /// Cuts one lease's borrower off the device through the fabric (nothing mapped is success).
    fn disconnect(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        lease: &Lease,
    ) -> Result<(), ControlError> {
        let step = match self.fabric.attachment {
            Attachment::Windows => Step::Unmap,
            Attachment::WholeDevice => Step::Detach,
        };
        let ctx = self.context(fdid, lease)?;
        if let Err(e) = exec.run(step, &ctx) {
            self.log_error("disconnect", &format!("{fdid} lease {}: {e}", lease.id.0));
        }
        Ok(())
    }
}
