//! Time and hosts: lease expiry, a lender lost and back, and reconciling the store with the hardware.

use pcipool_backend::Executor;
use pcipool_fabric::NodeId;
use pcipool_pool::{DeviceState, Event, Millis, WorkflowId};
use pcipool_store::Store;

use crate::{ControlError, Controller};

impl<S: Store> Controller<S> {
    /// A lender stopped answering: every device it lends becomes `Lost` and its borrowers are told.
    /// Returns how many devices changed.
    ///
    /// # Errors
    /// Store errors.
    pub fn lender_lost(
        &self,
        exec: &mut impl Executor,
        lender: NodeId,
        now: Millis,
    ) -> Result<usize, ControlError> {
        let mut changed = 0;
        for row in self.store.devices()? {
            let fdid = row.value.info.fdid;
            if fdid.node != lender || matches!(row.value.state, DeviceState::Lost { .. }) {
                continue;
            }
            match self.change(exec, fdid, &Event::LenderLost, "controller", now) {
                Ok(_) => {
                    self.metrics.fault("device_lost");
                    changed += 1;
                }
                Err(e @ ControlError::Store(_)) => return Err(e),
                Err(e) => self.log_error("lender_lost", &format!("{fdid}: {e}")),
            }
        }
        Ok(changed)
    }

    /// A lost lender answers again: idle devices return to the pool, leases that were active when it
    /// vanished are fenced and returned (the borrower may have lost its mappings with the lender).
    /// Returns how many devices changed.
    ///
    /// # Errors
    /// Store errors.
    pub fn lender_back(
        &self,
        exec: &mut impl Executor,
        lender: NodeId,
        now: Millis,
    ) -> Result<usize, ControlError> {
        let mut changed = 0;
        for row in self.store.devices()? {
            let fdid = row.value.info.fdid;
            if fdid.node != lender || !matches!(row.value.state, DeviceState::Lost { .. }) {
                continue;
            }
            let workflow = WorkflowId(self.store.next("workflow")?);
            match self.change(
                exec,
                fdid,
                &Event::LenderBack { workflow },
                "controller",
                now,
            ) {
                Ok(_) => {
                    self.metrics.fault("device_back");
                    changed += 1;
                }
                Err(e @ ControlError::Store(_)) => return Err(e),
                Err(e) => self.log_error("lender_back", &format!("{fdid}: {e}")),
            }
        }
        Ok(changed)
    }

    /// Expires leases whose time is up and runs their returns. Returns how many devices had leases end.
    ///
    /// # Errors
    /// Store errors.
    pub fn tick(&self, exec: &mut impl Executor, now: Millis) -> Result<usize, ControlError> {
        let mut expired = 0;
        // The index knows which rows hold leases: a tick costs the leases, not the pool.
        let due = self.index()?.due(now);
        for fdid in due {
            let workflow = WorkflowId(self.store.next("workflow")?);
            let before = self.store.device(fdid)?.map(|r| r.value.state);
            match self.change(exec, fdid, &Event::Tick { workflow }, "controller", now) {
                // A lost device keeps its leases until its lender is back: nothing expired.
                Ok(next) if Some(&next) == before.as_ref() => {}
                Ok(_) => expired += 1,
                Err(e @ ControlError::Store(_)) => return Err(e),
                Err(e) => self.log_error("tick", &format!("{fdid}: {e}")),
            }
        }
        Ok(expired)
    }

    /// Checks every lent device against the hardware after a restart: a lease whose borrower can no
    /// longer reach its device (the lab was restarted, a host rebooted) is fenced and returned, so the store
    /// never claims a lease the fabric does not carry. Returns how many were fenced.
    ///
    /// # Errors
    /// Store errors.
    pub fn reconcile(&self, exec: &mut impl Executor, now: Millis) -> Result<usize, ControlError> {
        let mut fenced = 0;
        for row in self.store.devices()? {
            let DeviceState::Lent { lease } = &row.value.state else {
                continue;
            };
            let fdid = row.value.info.fdid;
            let ctx = self.context(fdid, lease)?;
            if exec
                .run(pcipool_backend::Step::BorrowerVerify, &ctx)
                .is_ok()
            {
                continue;
            }
            let workflow = WorkflowId(self.store.next("workflow")?);
            self.change(exec, fdid, &Event::Fence { workflow }, "controller", now)?;
            self.metrics.fault("lease_fenced");
            fenced += 1;
        }
        Ok(fenced)
    }
}
