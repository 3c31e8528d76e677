//! What must hold after every step of the whole-system simulation, checked against the store and the
//! simulated hardware side by side.

use std::collections::{BTreeMap, BTreeSet};

use pcipool_fabric::{Epoch, Fdid, LeaseId, NodeId};
use pcipool_pool::audit::record_hash;
use pcipool_pool::{DeviceState, Lease};
use pcipool_qualify::AccessModel;
use pcipool_sim::Sim;
use pcipool_store::{MemStore, Store};

/// The checks' memory between steps.
#[derive(Debug, Default)]
pub struct Checker {
    /// The highest epoch each device has had.
    max_epoch: BTreeMap<Fdid, Epoch>,
    /// Leases already seen (their epoch checked).
    seen: BTreeSet<LeaseId>,
    /// Leases a fault touched since their grant (a borrower that crashed loses its borrowed devices;
    /// the controller learns it only when the lease expires): exempt from "the hardware carries what
    /// the store says", never from "nothing is mapped without a lease".
    disturbed: BTreeSet<LeaseId>,
    /// The audit chain verified so far: last sequence number and hash.
    audit_seq: u64,
    audit_hash: String,
}

/// The audit chain's genesis hash.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The function a device's fabric mappings and borrowed copies are named after (a VF's own address).
fn function_of(fdid: Fdid, function: Option<pcipool_pcie::Bdf>) -> Fdid {
    Fdid {
        node: fdid.node,
        bdf: function.unwrap_or(fdid.bdf),
        vf: None,
    }
}

impl Checker {
    /// A checker for a fresh store.
    pub fn new() -> Self {
        Self {
            audit_hash: GENESIS.to_owned(),
            ..Self::default()
        }
    }

    /// Every live lease touching `node` is exempt from the hardware-carries-it check from now on.
    pub fn disturb_node(&mut self, store: &MemStore, node: NodeId) {
        for row in store.devices().unwrap_or_default() {
            for lease in row.value.state.leases() {
                if lease.borrower == node || row.value.info.fdid.node == node {
                    self.disturbed.insert(lease.id);
                }
            }
        }
    }

    /// Every invariant, or the first that does not hold.
    ///
    /// # Errors
    /// What does not hold, in words.
    pub fn check(&mut self, store: &MemStore, sim: &Sim) -> Result<(), String> {
        let rows = store.devices().map_err(|e| format!("store: {e}"))?;
        // Live leases and which function each is for.
        let mut live: BTreeMap<LeaseId, (Lease, Fdid)> = BTreeMap::new();
        for row in &rows {
            let fdid = row.value.info.fdid;
            let state = &row.value.state;
            if matches!(
                state,
                DeviceState::Lending { .. } | DeviceState::Returning { .. }
            ) {
                return Err(format!(
                    "{fdid} is still {} after the step: a workflow did not settle",
                    state.name()
                ));
            }
            for lease in state.leases() {
                if self.seen.insert(lease.id) {
                    let max = self.max_epoch.entry(fdid).or_default();
                    if lease.epoch <= *max {
                        return Err(format!(
                            "{fdid}: {} has epoch {}, not above the device's earlier {}",
                            lease.id, lease.epoch, max
                        ));
                    }
                    *max = lease.epoch;
                }
                live.insert(
                    lease.id,
                    (lease.clone(), function_of(fdid, row.value.info.function)),
                );
            }
            if matches!(state, DeviceState::Available) {
                let lender_up = sim.host(fdid.node).is_some_and(|h| h.up);
                let function = function_of(fdid, row.value.info.function);
                let healthy = sim
                    .device(function.node, function.bdf)
                    .is_some_and(|d| !d.dev.hung);
                if lender_up && !healthy {
                    return Err(format!(
                        "{fdid} is available in the store but the hardware has it absent or hung (a failed reset that was not quarantined)"
                    ));
                }
            }
        }
        let unfinished = store
            .unfinished_workflows()
            .map_err(|e| format!("store: {e}"))?;
        if !unfinished.is_empty() {
            return Err(format!("workflows left unfinished: {unfinished:?}"));
        }
        // Nothing mapped without a live lease, and a device reached by one borrower at most.
        let mut reached: BTreeMap<Fdid, BTreeSet<NodeId>> = BTreeMap::new();
        for m in sim.fabric.mappings() {
            let Some((lease, function)) = live.get(&m.lease) else {
                return Err(format!(
                    "{} maps {} for {}, a lease the store no longer holds",
                    m.kind.borrower(),
                    m.kind.fdid(),
                    m.lease
                ));
            };
            if m.kind.fdid() != *function || m.kind.borrower() != lease.borrower {
                return Err(format!(
                    "{} maps {} to {}, but the lease is {}'s on {function}",
                    m.lease,
                    m.kind.fdid(),
                    m.kind.borrower(),
                    lease.borrower
                ));
            }
            reached
                .entry(m.kind.fdid())
                .or_default()
                .insert(m.kind.borrower());
        }
        if let Some((fdid, borrowers)) = reached.iter().find(|(_, b)| b.len() > 1) {
            return Err(format!("{fdid} is reached by {borrowers:?} at once"));
        }
        // The hardware carries every lent lease no fault has touched.
        for (id, (lease, function)) in &live {
            if lease.model == AccessModel::Shared || self.disturbed.contains(id) {
                continue;
            }
            let lent = rows
                .iter()
                .any(|r| matches!(&r.value.state, DeviceState::Lent { lease: l } if l.id == *id));
            if !lent {
                continue;
            }
            if !sim.fabric.mappings().any(|m| m.lease == *id) {
                return Err(format!(
                    "{id} is lent in the store but the fabric maps nothing for it"
                ));
            }
            let attached = lease.attached.and_then(|at| {
                sim.device(lease.borrower, at)
                    .filter(|d| d.remote == Some(*function))
            });
            if attached.is_none() {
                return Err(format!(
                    "{id} is lent to {} at {:?} in the store, but {function} is not there",
                    lease.borrower, lease.attached
                ));
            }
        }
        self.check_audit(store)
    }

    /// The audit records appended since the last check chain onto the ones before.
    fn check_audit(&mut self, store: &MemStore) -> Result<(), String> {
        let records = store
            .audit_records(self.audit_seq + 1, usize::MAX)
            .map_err(|e| format!("store: {e}"))?;
        for r in records {
            if r.seq != self.audit_seq + 1 {
                return Err(format!("audit record {} follows {}", r.seq, self.audit_seq));
            }
            if r.prev_hash != self.audit_hash || record_hash(&r) != r.hash {
                return Err(format!("audit record {} breaks the hash chain", r.seq));
            }
            self.audit_seq = r.seq;
            self.audit_hash = r.hash;
        }
        Ok(())
    }

    /// The last verified audit record: its sequence number and hash.
    pub fn audit_head(&self) -> (u64, &str) {
        (self.audit_seq, &self.audit_hash)
    }
}
