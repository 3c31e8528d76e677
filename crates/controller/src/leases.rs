//! Leases after the grant: release (waiting for the borrower's users), downgrade, renewal by heartbeats
//! (the borrower's agent, or the application itself), and what a borrower's agent must carry.

use pcipool_backend::{Executor, StepContext, StepErrorKind};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::{AuditEntry, Epoch, Event, Lease, Millis, WorkflowId};
use pcipool_qualify::AccessModel;
use pcipool_store::Store;

use crate::{ControlError, Controller, RELEASE_POLL_MS};

impl<S: Store> Controller<S> {
    /// Releases a lease (tenant `None` = operator, any lease) and runs the return workflow.
    ///
    /// # Errors
    /// Unknown lease, another tenant's lease, conflicts.
    pub fn release(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        now: Millis,
    ) -> Result<(), ControlError> {
        let (fdid, held) = match self.lease_of(lease, tenant) {
            Ok(found) => found,
            Err(e) => {
                self.refused(actor, &lease.to_string(), "release", "", &e, now);
                return Err(e);
            }
        };
        // A voluntary release never yanks a device from under programs that still use it on the
        // borrower: wait a little for them to finish, then refuse and say so (the lease stays).
        if held.model != AccessModel::Shared {
            let ctx = self.context(fdid, &held)?;
            let mut waited = 0;
            loop {
                match exec.run(pcipool_backend::Step::BorrowerQuiesceCheck, &ctx) {
                    // Nothing on a borrower nobody can reach uses the device any more.
                    Ok(_) => break,
                    Err(e) if e.kind == StepErrorKind::HostDown => break,
                    Err(why) if waited >= self.release_wait_ms => {
                        let e = ControlError::Busy(format!(
                            "{why}; waited {waited} ms: stop them and release again"
                        ));
                        self.refused(actor, &lease.to_string(), "release", "", &e, now);
                        return Err(e);
                    }
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(RELEASE_POLL_MS));
                        waited += RELEASE_POLL_MS;
                    }
                }
            }
        }
        let workflow = WorkflowId(self.store.next("workflow")?);
        self.change(exec, fdid, &Event::Release { lease, workflow }, actor, now)?;
        Ok(())
    }

    /// The device and the lease `lease`, when `tenant` (None = operator) may act on it.
    pub(crate) fn lease_of(
        &self,
        lease: LeaseId,
        tenant: Option<&str>,
    ) -> Result<(Fdid, Lease), ControlError> {
        let (fdid, held) = self.find_lease(lease)?;
        if tenant.is_some_and(|t| t != held.tenant) {
            return Err(ControlError::NotYours(lease));
        }
        Ok((fdid, held))
    }

    /// Records in the audit chain what another part of the pool reports (the fabric's data path:
    /// mappings torn down and why). Short, plain fields only: `action` is `[a-z_]{1,40}`, `target` at most
    /// 100 characters, `result` at most 500.
    ///
    /// # Errors
    /// Fields out of shape, or the store failed.
    pub fn record(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        result: &str,
        now: Millis,
    ) -> Result<(), ControlError> {
        let plain_action = !action.is_empty()
            && action.len() <= 40
            && action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !plain_action
            || target.is_empty()
            || target.chars().count() > 100
            || result.chars().count() > 500
        {
            return Err(ControlError::BadRequest(
                "an audit record needs an action of a-z and _ (1-40), a target (1-100 characters) and a result (at most 500)".into(),
            ));
        }
        self.store.audit(&[AuditEntry {
            at: now,
            actor,
            target,
            action,
            before: "",
            after: "",
            result,
        }])?;
        Ok(())
    }

    /// Downgrades an exclusive shared-model lease (tenant `None` = operator): its holder has
    /// initialised the device and lets up to `max_sharers` hosts share it.
    ///
    /// # Errors
    /// Unknown lease, another tenant's lease, a lease that is not exclusive.
    pub fn downgrade(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        max_sharers: u32,
        now: Millis,
    ) -> Result<(), ControlError> {
        let result = self.lease_of(lease, tenant).and_then(|(fdid, _)| {
            self.change(
                exec,
                fdid,
                &Event::Downgrade { lease, max_sharers },
                actor,
                now,
            )
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let detail = format!("max_sharers {max_sharers}");
                self.refused(actor, &lease.to_string(), "downgrade", &detail, &e, now);
                Err(e)
            }
        }
    }

    /// Renews a lease.
    ///
    /// # Errors
    /// Unknown lease or a stale epoch.
    pub fn heartbeat(
        &self,
        exec: &mut impl Executor,
        lease: LeaseId,
        epoch: Epoch,
        now: Millis,
    ) -> Result<(), ControlError> {
        let (fdid, _) = self.find_lease(lease)?;
        self.change(exec, fdid, &Event::Heartbeat { lease, epoch }, "agent", now)
            .map(|_| ())
    }

    /// Renews `lease` for its tenant (None = operator): how an application keeps a shared-model lease
    /// alive (its host's agent carries only what its kernel holds). Nothing is written while more than
    /// half the lease is left, so frequent renewals cost nothing.
    ///
    /// # Errors
    /// Unknown lease, another tenant's lease, a stale epoch (the lease was fenced and granted anew).
    pub fn renew(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        epoch: Epoch,
        now: Millis,
    ) -> Result<(), ControlError> {
        let (fdid, held) = self.lease_of(lease, tenant)?;
        if held.epoch == epoch && held.expires_at.saturating_sub(now) > held.ttl / 2 {
            return Ok(());
        }
        self.change(exec, fdid, &Event::Heartbeat { lease, epoch }, actor, now)
            .map(|_| ())
    }

    /// What a borrower's agent carries according to the store: the step context of every lease its
    /// kernel holds (lent devices and VFs; shared-model leases are the applications' to keep alive), so
    /// a restarted agent picks up heartbeating (and, later, tearing down) what its host still has.
    ///
    /// # Errors
    /// Store errors.
    pub fn borrowed_by(&self, borrower: NodeId) -> Result<Vec<StepContext>, ControlError> {
        let mut out = Vec::new();
        for (fdid, lease, _) in self.leases()? {
            if lease.borrower == borrower && lease.model != AccessModel::Shared {
                out.push(self.context(fdid, &lease)?);
            }
        }
        Ok(out)
    }

    /// Renews the leases a borrower's agent still carries. Returns the leases renewed and those refused
    /// (unknown, fenced, stale epoch, or held by another host): the agent must tear those down.
    ///
    /// # Errors
    /// Store errors.
    pub fn borrower_heartbeat(
        &self,
        exec: &mut impl Executor,
        borrower: NodeId,
        beats: &[(LeaseId, Epoch)],
        now: Millis,
    ) -> Result<(Vec<LeaseId>, Vec<LeaseId>), ControlError> {
        let leases = self.leases()?;
        let (mut renewed, mut refused) = (Vec::new(), Vec::new());
        for &(id, epoch) in beats {
            let held = leases
                .iter()
                .find(|(_, l, _)| l.id == id && l.borrower == borrower);
            let ok = match held {
                // More than half the lease left: alive, and nothing to write (a 1 s heartbeat would
                // otherwise add an audit record per lease per second).
                Some((_, l, _))
                    if l.epoch == epoch && l.expires_at.saturating_sub(now) > l.ttl / 2 =>
                {
                    true
                }
                Some((fdid, _, _)) => match self.change(
                    exec,
                    *fdid,
                    &Event::Heartbeat { lease: id, epoch },
                    "agent",
                    now,
                ) {
                    Ok(_) => true,
                    Err(e @ ControlError::Store(_)) => return Err(e),
                    // Fenced, stale or gone: the answer is "refused", and the agent tears it down.
                    Err(_) => false,
                },
                None => false,
            };
            if ok {
                renewed.push(id);
            } else {
                refused.push(id);
            }
        }
        Ok((renewed, refused))
    }
}
