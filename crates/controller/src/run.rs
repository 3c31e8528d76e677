//! Workflows: each journal runs step by step through an executor, saved before and after every step;
//! a failed lend step switches to the return steps, a failed reset escalates once; a finished journal's
//! outcome is applied to its device in the same transaction. A restarted controller resumes them.

use pcipool_backend::{Executor, Side, StepContext};
use pcipool_fabric::Fdid;
use pcipool_pool::workflow::{Journal, PlanKind, StepStatus, WorkflowKind, WorkflowOutcome};
use pcipool_pool::{AuditEntry, DeviceState, Event, Lease, Millis, WorkflowId};
use pcipool_store::Store;

use crate::{ControlError, Controller, Granted, json, parse_fdid};

impl<S: Store> Controller<S> {
    /// Runs the lends of one assignment. A gang is all or nothing here too: when one member's lend fails
    /// (and is compensated), the members already lent are released again.
    ///
    /// # Errors
    /// [`ControlError::LendFailed`] for the first member that failed; store errors.
    pub fn complete_lends(
        &self,
        exec: &mut impl Executor,
        lends: Vec<(Granted, Option<Journal>)>,
        now: Millis,
    ) -> Result<Vec<Granted>, ControlError> {
        let mut out = Vec::new();
        let mut lends = lends.into_iter();
        while let Some((granted, journal)) = lends.next() {
            let Some(mut journal) = journal else {
                out.push(granted);
                continue;
            };
            match self.run(exec, &mut journal, now)? {
                WorkflowOutcome::Succeeded => out.push(Granted {
                    attached: journal.ctx.attached,
                    ..granted
                }),
                WorkflowOutcome::Compensated(reason) | WorkflowOutcome::Failed(reason) => {
                    // Members not started yet never touched the hardware: finish their journals as
                    // compensated, which returns their devices to the pool in the same transaction.
                    for (_, rest) in lends.by_ref() {
                        if let Some(mut rest) = rest {
                            rest.outcome = Some(WorkflowOutcome::Compensated(format!(
                                "gang member {} failed",
                                granted.fdid
                            )));
                            self.conclude(&rest, Some(1), now)?;
                        }
                    }
                    for lent in &out {
                        let _ = self.release(exec, "controller", None, lent.lease_id, now);
                    }
                    return Err(ControlError::LendFailed {
                        fdid: granted.fdid,
                        reason,
                    });
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn context(&self, fdid: Fdid, lease: &Lease) -> Result<StepContext, ControlError> {
        let row = self
            .store
            .device(fdid)?
            .ok_or(ControlError::Conflict(fdid))?;
        let info = &row.value.info;
        Ok(StepContext {
            lender: fdid.node,
            // A VF's steps act on its own routing id, not on its PF's.
            bdf: info.function.unwrap_or(fdid.bdf),
            borrower: lease.borrower,
            attached: lease.attached,
            lease: lease.id,
            epoch: lease.epoch,
            bars: info.bars.clone(),
            dma_window: self.dma_window,
            driver: info.driver.clone(),
            lender_driver: info.local_driver.clone(),
            lender_vfs: info.local_vfs,
            deadline_ms: pcipool_backend::DEFAULT_STEP_DEADLINE_MS,
        })
    }

    pub(crate) fn save(
        &self,
        journal: &Journal,
        expected: Option<u64>,
        now: Millis,
    ) -> Result<u64, ControlError> {
        let body = json(journal);
        let target = journal.fdid.clone();
        let action = format!("workflow {} {:?}", journal.id, journal.kind);
        let result = journal
            .outcome
            .as_ref()
            .map_or_else(|| "running".to_owned(), |o| format!("{o:?}"));
        let audit = [AuditEntry {
            at: now,
            actor: "controller",
            target: &target,
            action: &action,
            before: "",
            after: &body,
            result: &result,
        }];
        Ok(self.store.put_workflow(
            journal.id,
            expected,
            &body,
            journal.outcome.is_some(),
            &audit,
        )?)
    }

    /// Runs a journal to its end, saving after every step, then applies the outcome to the device.
    pub(crate) fn run(
        &self,
        exec: &mut impl Executor,
        journal: &mut Journal,
        now: Millis,
    ) -> Result<WorkflowOutcome, ControlError> {
        let mut version = self.store.workflow(journal.id)?.map(|v| v.version);
        while let Some(i) = journal.next_pending() {
            let step = journal.steps[i].step;
            match exec.run(step, &journal.ctx) {
                Ok(output) => {
                    journal.record_output(i, output);
                    // Progress is flushed by the next durable commit; a rerun after a power loss is harmless.
                    version = Some(self.store.put_workflow_progress(
                        journal.id,
                        version,
                        &json(journal),
                    )?);
                    continue;
                }
                Err(e) if journal.returning() && step.side() == Side::Borrower => {
                    journal.steps[i].status = StepStatus::Skipped(e.message);
                    journal.steps[i].error_kind = Some(e.kind);
                    version = Some(self.store.put_workflow_progress(
                        journal.id,
                        version,
                        &json(journal),
                    )?);
                    continue;
                }
                Err(e) => {
                    let why = e.message;
                    journal.steps[i].status = StepStatus::Failed(why.clone());
                    journal.steps[i].error_kind = Some(e.kind);
                    version = Some(self.save(journal, version, now)?);
                    match (journal.kind, journal.compensating, journal.escalated) {
                        (WorkflowKind::Lend, false, _) => {
                            journal.compensating = true;
                            journal.replan(PlanKind::Return);
                        }
                        (_, _, false) if matches!(step, pcipool_backend::Step::LenderReset) => {
                            journal.escalated = true;
                            journal.replan(PlanKind::ReturnEscalated);
                            if journal.kind == WorkflowKind::Return {
                                // The device records the escalation (Returning, escalated).
                                let fdid = parse_fdid(&journal.fdid, journal.id)?;
                                let event = Event::ReturnFailed {
                                    workflow: WorkflowId(journal.id),
                                    reason: why,
                                };
                                let _ = self.transition(fdid, &event, "controller", now);
                            }
                        }
                        _ => {
                            journal.outcome = Some(WorkflowOutcome::Failed(why));
                            self.conclude(journal, version, now)?;
                            return Ok(journal
                                .outcome
                                .clone()
                                .unwrap_or(WorkflowOutcome::Failed(String::new())));
                        }
                    }
                }
            }
            version = Some(self.save(journal, version, now)?);
        }
        journal.outcome = Some(if journal.compensating {
            WorkflowOutcome::Compensated("lend step failed; device returned".into())
        } else {
            WorkflowOutcome::Succeeded
        });
        self.conclude(journal, version, now)?;
        Ok(journal
            .outcome
            .clone()
            .unwrap_or(WorkflowOutcome::Succeeded))
    }

    /// Writes a finished journal and applies its outcome to the device in one transaction.
    pub(crate) fn conclude(
        &self,
        journal: &Journal,
        version: Option<u64>,
        now: Millis,
    ) -> Result<(), ControlError> {
        let fdid = parse_fdid(&journal.fdid, journal.id)?;
        let Some(event) = Self::outcome_event(journal) else {
            self.save(journal, version, now)?;
            return Ok(());
        };
        match self.transition_with(fdid, &event, "controller", now, Some((journal, version))) {
            Ok(_) => {}
            // The device moved on (an operator, a fence): the journal still has to be finished.
            Err(ControlError::Transition(_) | ControlError::Conflict(_)) => {
                self.save(journal, version, now)?;
            }
            Err(e) => return Err(e),
        }
        if let (WorkflowKind::Lend, Some(WorkflowOutcome::Failed(why))) =
            (&journal.kind, &journal.outcome)
        {
            // Even the compensation's escalated reset failed: the device is unsafe to lend again.
            let fault = Event::Fault {
                reason: format!("reset failed while undoing a lend: {why}"),
            };
            let _ = self.transition(fdid, &fault, "controller", now);
        }
        Ok(())
    }

    /// The device event a finished journal stands for.
    pub(crate) fn outcome_event(journal: &Journal) -> Option<Event> {
        let w = WorkflowId(journal.id);
        Some(match (&journal.kind, journal.outcome.as_ref()?) {
            (WorkflowKind::Lend, WorkflowOutcome::Succeeded) => Event::LendDone {
                workflow: w,
                attached: journal.ctx.attached,
            },
            (
                WorkflowKind::Lend,
                WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why),
            ) => Event::LendFailed {
                workflow: w,
                reason: why.clone(),
            },
            (WorkflowKind::Return, WorkflowOutcome::Succeeded) => Event::ReturnDone { workflow: w },
            (
                WorkflowKind::Return,
                WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why),
            ) => Event::ReturnFailed {
                workflow: w,
                reason: why.clone(),
            },
        })
    }

    /// Applies a finished journal's outcome to the device's state (resume, after an older crash window).
    pub(crate) fn finish(&self, journal: &Journal, now: Millis) -> Result<(), ControlError> {
        let fdid = parse_fdid(&journal.fdid, journal.id)?;
        let w = WorkflowId(journal.id);
        let event = match (&journal.kind, &journal.outcome) {
            (WorkflowKind::Lend, Some(WorkflowOutcome::Succeeded)) => Event::LendDone {
                workflow: w,
                attached: journal.ctx.attached,
            },
            (WorkflowKind::Lend, Some(WorkflowOutcome::Compensated(why))) => Event::LendFailed {
                workflow: w,
                reason: why.clone(),
            },
            (WorkflowKind::Lend, Some(WorkflowOutcome::Failed(why))) => {
                // Even the compensation's escalated reset failed: the device is unsafe to lend again.
                let _ = self.transition(
                    fdid,
                    &Event::LendFailed {
                        workflow: w,
                        reason: why.clone(),
                    },
                    "controller",
                    now,
                );
                Event::Fault {
                    reason: format!("reset failed while undoing a lend: {why}"),
                }
            }
            (WorkflowKind::Return, Some(WorkflowOutcome::Succeeded)) => {
                Event::ReturnDone { workflow: w }
            }
            (
                WorkflowKind::Return,
                Some(WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why)),
            ) => Event::ReturnFailed {
                workflow: w,
                reason: why.clone(),
            },
            (_, None) => return Ok(()),
        };
        match self.transition(fdid, &event, "controller", now) {
            Ok(_) | Err(ControlError::Transition(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn run_returns(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        commands: &[pcipool_pool::Command],
        now: Millis,
    ) -> Result<(), ControlError> {
        for c in commands {
            if let pcipool_pool::Command::StartReturn {
                leases, workflow, ..
            } = c
            {
                for l in leases {
                    let ctx = self.context(fdid, l)?;
                    let mut journal = Journal::new(
                        workflow.0,
                        WorkflowKind::Return,
                        fdid.to_string(),
                        ctx,
                        self.fabric.attachment,
                    );
                    let existing = self.store.workflow(workflow.0)?.map(|v| v.version);
                    self.save(&journal, existing, now)?;
                    self.run(exec, &mut journal, now)?;
                }
            }
        }
        Ok(())
    }

    /// Resumes every unfinished workflow from its journal (after a controller restart).
    ///
    /// # Errors
    /// Store errors or unreadable journals.
    pub fn resume(&self, exec: &mut impl Executor, now: Millis) -> Result<usize, ControlError> {
        let ids = self.store.unfinished_workflows()?;
        for id in &ids {
            let body = self
                .store
                .workflow(*id)?
                .ok_or(ControlError::Journal(*id))?;
            let mut journal: Journal =
                serde_json::from_str(&body.value).map_err(|_| ControlError::Journal(*id))?;
            self.run(exec, &mut journal, now)?;
        }
        // A crash can fall between two writes: after the journal's last step but before the device's
        // transition, or after the transition but before the journal's first save. Close both gaps.
        for row in self.store.devices()? {
            let fdid = row.value.info.fdid;
            let (kind, workflow, leases) = match &row.value.state {
                DeviceState::Lending { lease, workflow } => {
                    (WorkflowKind::Lend, *workflow, vec![lease.clone()])
                }
                DeviceState::Returning {
                    leases, workflow, ..
                } => (WorkflowKind::Return, *workflow, leases.clone()),
                _ => continue,
            };
            match self.store.workflow(workflow.0)? {
                Some(body) => {
                    let journal: Journal = serde_json::from_str(&body.value)
                        .map_err(|_| ControlError::Journal(workflow.0))?;
                    if journal.outcome.is_some() {
                        self.finish(&journal, now)?;
                    }
                }
                None => {
                    for lease in &leases {
                        let ctx = self.context(fdid, lease)?;
                        let mut journal = Journal::new(
                            workflow.0,
                            kind,
                            fdid.to_string(),
                            ctx,
                            self.fabric.attachment,
                        );
                        let existing = self.store.workflow(workflow.0)?.map(|v| v.version);
                        self.save(&journal, existing, now)?;
                        self.run(exec, &mut journal, now)?;
                    }
                }
            }
        }
        Ok(ids.len())
    }
}
