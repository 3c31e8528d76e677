//! A controller that does not lead the pool (`pcipool server` on etcd while another controller leads):
//! it answers the reads from the store and refuses every write with `NOT_LEADER`. The process in front
//! of it passes writes to the leader before they get here (see `pcipool_serve::seat`); what reaches
//! this refusal is a write made while no controller leads.

use pcipool_controller::{ControlError, Controller};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_store::{Store, StoreError};
use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, AuditVerify, AuditView, BorrowRequest, DeviceAction,
    DeviceDetail, DeviceView, Granted, HeartbeatReply, HostView, LeaseView, RegistrationReply,
};

use crate::reads;
use crate::server::PoolApi;

/// Reads from the store; writes refused.
pub struct Follower<S> {
    controller: Controller<S>,
    /// Never changes: a long poll on a follower re-reads the store every second instead.
    changes: tokio::sync::watch::Sender<u64>,
}

impl<S: Store> Follower<S> {
    /// A follower reading through `controller` (which it never asks to write).
    pub fn new(controller: Controller<S>) -> Self {
        Self {
            controller,
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Wakes the follower's waiters (long polls, event streams) when the pool changed: the seat
    /// calls it when the audit chain grew, as every committed change appends to it.
    pub fn poke(&self) {
        self.changes
            .send_modify(|n| *n = n.wrapping_add(1) % u64::MAX);
    }

    /// Ends the follower's event streams (the process is stopping).
    pub fn close(&self) {
        self.changes.send_replace(u64::MAX);
    }

    /// The audit chain's length in the store (what [`Self::poke`]'s caller watches).
    ///
    /// # Errors
    /// Store errors.
    pub fn audit_len(&self) -> Result<u64, ControlError> {
        Ok(self.controller.store().audit_len()?)
    }

    fn refused<T>(&self) -> Result<T, ControlError> {
        Err(ControlError::Store(StoreError::NotLeader(
            "another controller (this one follows)".into(),
        )))
    }
}

impl<S: Store + Send + Sync + 'static> PoolApi for Follower<S> {
    fn borrow(&self, _: &str, _: &str, _: BorrowRequest) -> Result<Vec<Granted>, ControlError> {
        self.refused()
    }

    fn release(&self, _: &str, _: Option<&str>, _: LeaseId) -> Result<(), ControlError> {
        self.refused()
    }

    fn downgrade(&self, _: &str, _: Option<&str>, _: LeaseId, _: u32) -> Result<(), ControlError> {
        self.refused()
    }

    fn renew(&self, _: &str, _: Option<&str>, _: LeaseId, _: u64) -> Result<(), ControlError> {
        self.refused()
    }

    fn record(&self, _: &str, _: &str, _: &str, _: &str) -> Result<(), ControlError> {
        self.refused()
    }

    fn leases(&self) -> Result<Vec<LeaseView>, ControlError> {
        reads::leases(&self.controller)
    }

    fn devices(&self) -> Result<Vec<DeviceView>, ControlError> {
        reads::devices(&self.controller)
    }

    fn audit_verify(&self) -> Result<AuditVerify, ControlError> {
        reads::audit_verify(&self.controller)
    }

    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ControlError> {
        reads::audit(&self.controller, from, limit)
    }

    /// Which agents are alive is the leader's knowledge: refused here (and passed to the leader).
    fn hosts(&self) -> Result<Vec<HostView>, ControlError> {
        self.refused()
    }

    fn topology(&self) -> Result<pcipool_wire::TopologyView, ControlError> {
        Ok(reads::topology(&self.controller))
    }

    fn device_action(&self, _: &str, _: Fdid, _: DeviceAction) -> Result<String, ControlError> {
        self.refused()
    }

    fn workflow(&self, id: u64) -> Result<Option<serde_json::Value>, ControlError> {
        reads::workflow(&self.controller, id)
    }

    fn device(&self, fdid: Fdid) -> Result<DeviceDetail, ControlError> {
        reads::device(&self.controller, fdid)
    }

    fn register_agent(
        &self,
        _: &str,
        _: AgentRegistration,
    ) -> Result<RegistrationReply, ControlError> {
        self.refused()
    }

    fn agent_heartbeat(
        &self,
        _: NodeId,
        _: AgentHeartbeat,
    ) -> Result<HeartbeatReply, ControlError> {
        self.refused()
    }

    fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The leader's to answer (a follower passes `/metrics` on).
    fn metrics_text(&self) -> Result<String, ControlError> {
        self.refused()
    }

    /// Not counted here: a follower answers only the store's reads and passes the rest on, so the
    /// leader counts the refusals it makes.
    fn count_refusal(&self, _: &str) {}
}
