//! Borrowing: admission, placement over what the fabric can still carry, and the durable assignment of
//! each device (to `Lending` with its journal, or to its sharers), all or nothing for a gang.

use std::sync::atomic::Ordering;

use pcipool_backend::Executor;
use pcipool_fabric::{Fdid, LeaseId};
use pcipool_pool::capacity::{CapacityError, Ledger};
use pcipool_pool::schedule::{DeviceClass, PlacementError, Request};
use pcipool_pool::workflow::{Journal, WorkflowKind, WorkflowOutcome};
use pcipool_pool::{
    AuditEntry, DeviceState, Epoch, Event, Lease, Millis, TransitionError, WorkflowId,
};
use pcipool_qualify::AccessModel;
use pcipool_store::Store;

use crate::claims::{Claim, RequestClaim, Reservation, clash};
use crate::{
    Assigned, ControlError, Controller, DEFAULT_MAX_SHARERS, Granted, MAX_SHARERS, json, lock,
};

impl<S: Store> Controller<S> {
    /// Grants `request` to `tenant` and runs the lend workflows. Gang requests are all or nothing.
    /// Requests run concurrently: when another request takes a chosen device first, placement runs
    /// again on what is left (a few times), unless the request named that one device.
    ///
    /// # Errors
    /// Policy, placement, conflict (another request won the device) or a failed lend.
    pub fn borrow(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: &str,
        request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Vec<Granted>, ControlError> {
        match self.assign(exec, actor, tenant, request, duration_secs, now)? {
            Assigned::Replayed(granted) => Ok(granted),
            Assigned::New(lends) => self.complete_lends(exec, lends, now),
        }
    }

    /// The first half of a borrow: admission, placement and the durable assignment (each device goes to
    /// `Lending` with its journal, or joins its sharers). Nothing has touched the hardware yet; the lends
    /// run with [`Self::complete_lends`], now or from a background worker (the API's `wait: false`), and
    /// a controller that dies in between resumes them from their journals.
    ///
    /// # Errors
    /// As [`Self::borrow`], except failed lends.
    pub fn assign(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: &str,
        request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Assigned, ControlError> {
        let detail = json(&request);
        let result = self.assign_inner(exec, actor, tenant, request, duration_secs, now);
        if let Err(e) = &result {
            self.refused(
                actor,
                &format!("tenant {tenant}"),
                "borrow",
                &detail,
                e,
                now,
            );
        }
        result
    }

    /// Records a refused request in the audit log (granted ones are recorded by their transitions).
    /// Store failures are not recorded: the store is what failed.
    pub(crate) fn refused(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        detail: &str,
        error: &ControlError,
        now: Millis,
    ) {
        if matches!(error, ControlError::Store(_)) {
            return;
        }
        let result = format!("refused {}: {error}", error.code());
        let recorded = self.store.audit(&[AuditEntry {
            at: now,
            actor,
            target,
            action,
            before: "",
            after: detail,
            result: &result,
        }]);
        if let Err(e) = recorded {
            self.log_error("audit_refusal", &format!("{action} {target}: {e}"));
        }
    }

    pub(crate) fn assign_inner(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: &str,
        request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Assigned, ControlError> {
        const ATTEMPTS: usize = 8;
        const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
        let _in_flight = match &request.request_id {
            Some(key) => {
                if key.is_empty() || key.len() > 128 || key.chars().any(char::is_whitespace) {
                    return Err(ControlError::BadRequest(
                        "request_id must be 1-128 characters without whitespace".into(),
                    ));
                }
                let replay = self.granted_for(tenant, key)?;
                if !replay.is_empty() {
                    return Ok(Assigned::Replayed(replay));
                }
                Some(self.claim_request(tenant, key)?)
            }
            None => None,
        };
        if let Some(n) = request.max_sharers
            && !(1..=MAX_SHARERS).contains(&n)
        {
            return Err(ControlError::BadRequest(format!(
                "max_sharers {n} is outside 1..={MAX_SHARERS}"
            )));
        }
        let named_share = request.selector.fdid.is_some() && request.model == AccessModel::Shared;
        let deadline = std::time::Instant::now() + CLAIM_WAIT;
        let mut attempt = 1;
        loop {
            match self.assign_once(exec, actor, tenant, request.clone(), duration_secs, now) {
                // Another device may do: try again at once on the state the winner left.
                Err(ControlError::Conflict(_) | ControlError::FamilyBusy(_))
                    if request.selector.fdid.is_none() && attempt < ATTEMPTS =>
                {
                    attempt += 1;
                }
                // A named shared device another request has claimed: its winner may leave room. Wait
                // for the winner's commit, bounded in time rather than tries (a durable commit is slow
                // on a busy disk). A device that is simply held (`Held`) is refused at once.
                Err(ControlError::Conflict(_) | ControlError::FamilyBusy(_))
                    if named_share && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2 << attempt.min(5)));
                    attempt += 1;
                }
                other => return other.map(Assigned::New),
            }
        }
    }

    pub(crate) fn assign_once(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: &str,
        mut request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Vec<(Granted, Option<Journal>)>, ControlError> {
        let mut index = self.index()?;
        let usage = index.usage(tenant);
        let admission = self
            .policy
            .admit(tenant, &mut request, &usage, duration_secs)?;
        let claimed = self.claimed();
        if let Some(f) = request.selector.fdid {
            if claimed.contains(&f) {
                return Err(ControlError::Conflict(f));
            }
            if index.family_blocks(f) {
                return Err(ControlError::FamilyBusy(f));
            }
        }
        // What granted leases hold on adapters and links; placement only picks devices that still fit.
        // The devices chosen stay reserved in the ledger until this request is done, so concurrent
        // requests cannot jointly overrun an adapter or a link.
        // Declared before the ledger's guard, so it is dropped after it (its drop takes the lock).
        let mut reservation = Reservation {
            ledger: &self.ledger,
            held: Vec::new(),
        };
        let mut ledger_slot = lock(&self.ledger);
        let ledger = ledger_slot.get_or_insert_with(|| {
            Ledger::new(
                &self.topology,
                self.dma_window,
                self.policy.link_oversubscription_pct,
            )
        });
        ledger.sync(index.leases());
        let mut unfit: std::collections::BTreeSet<Fdid> = std::collections::BTreeSet::new();
        let mut why_unfit: Option<CapacityError> = None;
        let chosen = loop {
            let placed = index.place(
                &request,
                &self.topology,
                &mut lock(&self.routes),
                self.policy.strategy,
                |info| {
                    let f = info.fdid;
                    !claimed.iter().any(|c| clash(c, &f))
                        && !unfit.contains(&f)
                        && !self.policy.in_maintenance(f, now)
                },
            );
            let chosen = match placed {
                Ok(c) => c,
                Err(e) => {
                    if let Some(why) = why_unfit {
                        return Err(ControlError::Capacity(why));
                    }
                    // A request for one named device that someone holds is a conflict, not a capacity problem.
                    let held = request.selector.fdid.filter(|f| index.is_held(*f));
                    return Err(match (e, held) {
                        (PlacementError::NoCapacity { .. }, Some(f)) => ControlError::Held(f),
                        (e, _) => e.into(),
                    });
                }
            };
            // Reserve the whole gang; if one does not fit, give back what this round reserved.
            let mut misfit = None;
            let before = reservation.held.len();
            for fdid in &chosen {
                let Some(info) = index.info(*fdid) else {
                    continue;
                };
                let id = LeaseId(self.reservations.fetch_sub(1, Ordering::Relaxed));
                match ledger.add(id, info, request.borrower) {
                    Ok(()) => reservation.held.push((id, info.clone(), request.borrower)),
                    Err(e) => {
                        misfit = Some((*fdid, e));
                        break;
                    }
                }
            }
            match misfit {
                None => break chosen,
                Some((fdid, e)) => {
                    for (id, info, borrower) in reservation.held.drain(before..) {
                        ledger.remove(id, &info, borrower);
                    }
                    unfit.insert(fdid);
                    why_unfit = Some(e);
                }
            }
        };
        drop(ledger_slot);
        let classes: Vec<DeviceClass> = chosen
            .iter()
            .filter_map(|f| index.info(*f))
            .map(|info| DeviceClass::of(info.class))
            .collect();
        drop(index);
        self.policy.check_placed(tenant, &usage, &classes)?;
        let _claim = self.claim(&chosen)?;
        // Claimed: no other request of this controller can take a PF or VF of these devices now, but
        // one may have finished between the placement and the claim. The index has every write this
        // controller committed: check the families there again.
        {
            let index = self.index()?;
            if let Some(f) = chosen.iter().find(|f| index.family_blocks(**f)) {
                return Err(ControlError::FamilyBusy(*f));
            }
        }
        let mut granted: Vec<(Lease, u64, Fdid, Option<Journal>)> = Vec::new();
        for fdid in &chosen {
            let [lease_no, epoch_no, workflow] =
                self.store.next_many(&["lease", "epoch", "workflow"])?[..]
            else {
                return Err(ControlError::Journal(0));
            };
            let lease = Lease {
                id: LeaseId(lease_no),
                borrower: request.borrower,
                tenant: tenant.to_owned(),
                model: request.model,
                epoch: Epoch(epoch_no),
                expires_at: now.saturating_add(admission.ttl_ms),
                ttl: admission.ttl_ms,
                request: request.request_id.clone(),
                attached: None,
            };
            let (event, journal) = if request.model == AccessModel::Shared {
                (
                    Event::Share {
                        lease: lease.clone(),
                        max_sharers: request.max_sharers.unwrap_or(DEFAULT_MAX_SHARERS),
                    },
                    None,
                )
            } else {
                // The lend journal is created in the same transaction as the assignment.
                let ctx = self.context(*fdid, &lease)?;
                (
                    Event::Assign {
                        lease: lease.clone(),
                        workflow: WorkflowId(workflow),
                    },
                    Some(Journal::new(
                        workflow,
                        WorkflowKind::Lend,
                        fdid.to_string(),
                        ctx,
                        self.fabric.attachment,
                    )),
                )
            };
            match self.transition_with(
                *fdid,
                &event,
                actor,
                now,
                journal.as_ref().map(|j| (j, None)),
            ) {
                Ok((_, commands, _)) => {
                    self.carry_out(exec, *fdid, commands, now)?;
                    granted.push((lease, workflow, *fdid, journal));
                }
                Err(e) => {
                    // All or nothing: undo the devices this gang already took, finishing their journals
                    // (a lend that never touched the hardware is compensated as it stands).
                    for (l, w, f, j) in &mut granted {
                        let undone = match j {
                            Some(journal) => {
                                journal.outcome =
                                    Some(WorkflowOutcome::Compensated("gang incomplete".into()));
                                self.conclude(exec, journal, Some(1), now)
                            }
                            None => {
                                let undo = Event::Release {
                                    lease: l.id,
                                    workflow: WorkflowId(*w),
                                };
                                self.change(exec, *f, &undo, actor, now).map(|_| ())
                            }
                        };
                        if let Err(e) = undone {
                            self.log_error("gang_undo", &format!("{f} lease {}: {e}", l.id.0));
                        }
                    }
                    return Err(match e {
                        ControlError::Transition(TransitionError::Conflict { .. }) => {
                            ControlError::Conflict(*fdid)
                        }
                        other => other,
                    });
                }
            }
        }
        Ok(granted
            .into_iter()
            .map(|(lease, workflow, fdid, journal)| {
                (
                    Granted {
                        lease_id: lease.id,
                        fdid,
                        epoch: lease.epoch,
                        attached: None,
                        workflow,
                    },
                    journal,
                )
            })
            .collect())
    }

    /// The active leases a tenant's earlier request with this idempotency key was granted.
    pub(crate) fn granted_for(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Vec<Granted>, ControlError> {
        let mut out = Vec::new();
        for row in self.store.devices()? {
            let workflow = match &row.value.state {
                DeviceState::Lending { workflow, .. } => workflow.0,
                _ => 0,
            };
            for l in row.value.state.leases() {
                if l.tenant == tenant && l.request.as_deref() == Some(key) {
                    out.push(Granted {
                        lease_id: l.id,
                        fdid: row.value.info.fdid,
                        epoch: l.epoch,
                        attached: l.attached,
                        workflow,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Marks a tenant's keyed request as in flight; the same key again meanwhile is a conflict.
    pub(crate) fn claim_request(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<RequestClaim<'_>, ControlError> {
        let id = (tenant.to_owned(), key.to_owned());
        let mut in_flight = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !in_flight.insert(id.clone()) {
            return Err(ControlError::RequestInFlight(key.to_owned()));
        }
        Ok(RequestClaim {
            requests: &self.requests,
            id,
        })
    }

    pub(crate) fn claimed(&self) -> std::collections::BTreeSet<Fdid> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Claims `chosen` for this request; a device another request claimed meanwhile is a conflict.
    pub(crate) fn claim(&self, chosen: &[Fdid]) -> Result<Claim<'_>, ControlError> {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = chosen.iter().find(|f| claims.iter().any(|c| clash(c, f))) {
            return Err(ControlError::Conflict(*f));
        }
        claims.extend(chosen.iter().copied());
        Ok(Claim {
            claims: &self.claims,
            held: chosen.to_vec(),
        })
    }
}
