//! Workflows: each journal runs step by step through an executor, saved before and after every step;
//! a failed lend step switches to the return steps, a failed reset escalates once; a finished journal's
//! outcome is applied to its device in the same transaction. A restarted controller resumes them.

use pcipool_backend::{Executor, Side, Step, StepContext};
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
                            self.conclude(exec, &rest, Some(1), now)?;
                        }
                    }
                    for lent in &out {
                        if let Err(e) = self.release(exec, "controller", None, lent.lease_id, now) {
                            self.log_error(
                                "gang_release",
                                &format!("lease {} of a failed gang: {e}", lent.lease_id.0),
                            );
                        }
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
        let version = self.timed("write_journal", || {
            self.store.put_workflow(
                journal.id,
                expected,
                &body,
                journal.outcome.is_some(),
                &audit,
            )
        })?;
        self.committed();
        Ok(version)
    }

    /// Runs a journal to its end, saving after every step, then applies the outcome to the device.
    ///
    /// A failed lend step switches the journal to the return steps (compensation), whose failed reset
    /// escalates once within the journal; the device learns how the lend ended from the outcome
    /// (quarantined when even the escalated reset failed). A failed return ends its journal, and the
    /// device's decision runs the escalated return once, then quarantines.
    pub(crate) fn run(
        &self,
        exec: &mut impl Executor,
        journal: &mut Journal,
        now: Millis,
    ) -> Result<WorkflowOutcome, ControlError> {
        let span = tracing::info_span!(
            "workflow",
            workflow = journal.id,
            kind = ?journal.kind,
            fdid = %journal.fdid,
            lease = journal.ctx.lease.0,
            epoch = journal.ctx.epoch.0,
        );
        let _entered = span.enter();
        let began = std::time::Instant::now();
        let kind = match journal.kind {
            WorkflowKind::Lend => "lend",
            WorkflowKind::Return => "return",
        };
        let concluded = |outcome: &WorkflowOutcome| {
            let name = match outcome {
                WorkflowOutcome::Succeeded => "succeeded",
                WorkflowOutcome::Compensated(_) => "compensated",
                WorkflowOutcome::Failed(_) => "failed",
            };
            self.metrics
                .workflow_done(kind, name, began.elapsed().as_secs_f64());
        };
        let mut version = self.store.workflow(journal.id)?.map(|v| v.version);
        while let Some(i) = journal.next_pending() {
            let step = journal.steps[i].step;
            let started = std::time::Instant::now();
            let ran = exec.run(step, &journal.ctx);
            let step_name = serde_json::to_value(step)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{step:?}"));
            let step_outcome = match &ran {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.kind.code().to_lowercase(),
            };
            self.metrics
                .step_done(&step_name, &step_outcome, started.elapsed().as_secs_f64());
            if self.step_times {
                journal.steps[i].us =
                    Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            match ran {
                Ok(output) => {
                    tracing::debug!(?step, ?output, "step done");
                    journal.record_output(i, output);
                    // Progress is flushed by the next durable commit; a rerun after a power loss is harmless.
                    version = Some(self.timed("write_journal", || {
                        self.store
                            .put_workflow_progress(journal.id, version, &json(journal))
                    })?);
                    self.committed();
                    continue;
                }
                // The fabric's disconnect that follows cuts the borrower off whatever state it is in.
                Err(e) if journal.returning() && step.side() == Side::Borrower => {
                    tracing::info!(?step, kind = ?e.kind, error = %e.message, "borrower-side teardown passed over");
                    journal.steps[i].status = StepStatus::Skipped(e.message);
                    journal.steps[i].error_kind = Some(e.kind);
                    version = Some(self.store.put_workflow_progress(
                        journal.id,
                        version,
                        &json(journal),
                    )?);
                    self.committed();
                    continue;
                }
                Err(e) => {
                    tracing::info!(?step, kind = ?e.kind, error = %e.message, "step failed");
                    let why = e.message;
                    journal.steps[i].status = StepStatus::Failed(why.clone());
                    journal.steps[i].error_kind = Some(e.kind);
                    version = Some(self.save(journal, version, now)?);
                    match (journal.kind, journal.compensating, journal.escalated) {
                        (WorkflowKind::Lend, false, _) => {
                            journal.compensating = true;
                            journal.replan(PlanKind::Return);
                        }
                        // The compensation of a lend escalates within its journal: the device is
                        // still `Lending`, and learns the end from the outcome. A return's failure
                        // goes to the device instead (`ReturnFailed`), whose decision escalates it
                        // once and then quarantines.
                        (WorkflowKind::Lend, true, false) if step == Step::LenderReset => {
                            journal.escalated = true;
                            journal.replan(PlanKind::ReturnEscalated);
                        }
                        _ => {
                            let outcome = WorkflowOutcome::Failed(why);
                            journal.outcome = Some(outcome.clone());
                            self.conclude(exec, journal, version, now)?;
                            concluded(&outcome);
                            return Ok(outcome);
                        }
                    }
                }
            }
            version = Some(self.save(journal, version, now)?);
        }
        let outcome = if journal.compensating {
            WorkflowOutcome::Compensated(format!(
                "{}; device returned",
                journal
                    .first_failure()
                    .unwrap_or_else(|| "a lend step failed".into())
            ))
        } else {
            WorkflowOutcome::Succeeded
        };
        journal.outcome = Some(outcome.clone());
        self.conclude(exec, journal, version, now)?;
        concluded(&outcome);
        Ok(outcome)
    }

    /// Writes a finished journal and applies its outcome to the device in one transaction, then carries
    /// out what the decision commands (an escalated return, telling the borrower).
    pub(crate) fn conclude(
        &self,
        exec: &mut impl Executor,
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
            Ok((_, commands, _)) => self.carry_out(exec, fdid, commands, now),
            // The device moved on (an operator, a fence): the journal still has to be finished.
            Err(e @ (ControlError::Transition(_) | ControlError::Conflict(_))) => {
                self.log_error("conclude", &format!("workflow {}: {e}", journal.id));
                self.save(journal, version, now)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The device event a finished journal stands for.
    fn outcome_event(journal: &Journal) -> Option<Event> {
        let w = WorkflowId(journal.id);
        Some(match (&journal.kind, journal.outcome.as_ref()?) {
            (WorkflowKind::Lend, WorkflowOutcome::Succeeded) => Event::LendDone {
                workflow: w,
                attached: journal.ctx.attached,
            },
            (WorkflowKind::Lend, WorkflowOutcome::Compensated(why)) => Event::LendFailed {
                workflow: w,
                reason: why.clone(),
                quarantine: false,
            },
            // Even the compensation's escalated reset failed: the device is unsafe to lend again.
            (WorkflowKind::Lend, WorkflowOutcome::Failed(why)) => Event::LendFailed {
                workflow: w,
                reason: why.clone(),
                quarantine: true,
            },
            (WorkflowKind::Return, WorkflowOutcome::Succeeded) => Event::ReturnDone { workflow: w },
            (
                WorkflowKind::Return,
                WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why),
            ) => Event::ReturnFailed {
                workflow: w,
                reason: why.clone(),
                escalated: journal.escalated,
            },
        })
    }

    /// Applies a finished journal's outcome to its device (resume, after a crash between the journal's
    /// last write and the device's transition).
    fn finish(
        &self,
        exec: &mut impl Executor,
        journal: &Journal,
        now: Millis,
    ) -> Result<(), ControlError> {
        let fdid = parse_fdid(&journal.fdid, journal.id)?;
        let Some(event) = Self::outcome_event(journal) else {
            return Ok(());
        };
        match self.change(exec, fdid, &event, "controller", now) {
            Ok(_) => Ok(()),
            Err(e @ ControlError::Transition(_)) => {
                self.log_error("resume", &format!("workflow {}: {e}", journal.id));
                Ok(())
            }
            Err(e) => Err(e),
        }
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
                        self.finish(exec, &journal, now)?;
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
