//! What one controller process holds while requests are in flight: devices a placement chose, keyed
//! requests, ledger reservations. Each is given back when its guard drops; the store's compare-and-swap
//! still decides every race, also against other processes.

use std::collections::HashMap;

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pcie::Bdf;
use pcipool_pool::DeviceState;
use pcipool_pool::capacity::Ledger;
use pcipool_pool::schedule::DeviceInfo;
use pcipool_store::DeviceRow;

use crate::lock;

/// Capacity a request reserved in the ledger; given back when the request is done (its leases, if any,
/// are in the store by then and the next sync counts them).
pub(crate) struct Reservation<'a> {
    pub(crate) ledger: &'a std::sync::Mutex<Option<Ledger>>,
    pub(crate) held: Vec<(LeaseId, DeviceInfo, NodeId)>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if let Some(ledger) = lock(self.ledger).as_mut() {
            for (id, info, borrower) in self.held.drain(..) {
                ledger.remove(id, &info, borrower);
            }
        }
    }
}

/// A keyed request in flight; released when the request returns.
pub(crate) struct RequestClaim<'a> {
    pub(crate) requests: &'a std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    pub(crate) id: (String, String),
}

impl Drop for RequestClaim<'_> {
    fn drop(&mut self) {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A physical function and its virtual functions exclude each other: the PF cannot be lent (or reset)
/// while any of its VFs is out, and no VF can go while the PF is held, draining or being returned.
/// Built once per placement (one pass over the rows) so the check per device is a lookup.
#[derive(Debug, Default)]
pub(crate) struct Families {
    /// (node, PF address) -> (the PF is busy for its VFs, some VF of it is out).
    busy: HashMap<(NodeId, Bdf), (bool, bool)>,
}

impl Families {
    pub(crate) fn of(rows: &[pcipool_store::Versioned<DeviceRow>]) -> Self {
        let mut busy: HashMap<(NodeId, Bdf), (bool, bool)> = HashMap::new();
        for r in rows {
            let f = r.value.info.fdid;
            let state = &r.value.state;
            let entry = busy.entry((f.node, f.bdf)).or_default();
            match f.vf {
                None => {
                    entry.0 = !matches!(
                        state,
                        DeviceState::Available
                            | DeviceState::Rejected { .. }
                            | DeviceState::Qualified { .. }
                    );
                }
                Some(_) => {
                    entry.1 |= !state.leases().is_empty()
                        || matches!(
                            state,
                            DeviceState::Lending { .. } | DeviceState::Returning { .. }
                        );
                }
            }
        }
        Self { busy }
    }

    /// Whether `fdid` is held back by its family.
    pub(crate) fn blocks(&self, fdid: Fdid) -> bool {
        let (pf_busy, vf_out) = self
            .busy
            .get(&(fdid.node, fdid.bdf))
            .copied()
            .unwrap_or_default();
        match fdid.vf {
            None => vf_out,
            Some(_) => pf_busy,
        }
    }
}

/// Two claims clash when they are the same device, or a PF and one of its VFs.
pub(crate) fn clash(a: &Fdid, b: &Fdid) -> bool {
    a == b || (a.node == b.node && a.bdf == b.bdf && a.vf.is_none() != b.vf.is_none())
}

/// Devices one request has claimed; released when the request is done with placement.
pub(crate) struct Claim<'a> {
    pub(crate) claims: &'a std::sync::Mutex<std::collections::BTreeSet<Fdid>>,
    pub(crate) held: Vec<Fdid>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for f in &self.held {
            claims.remove(f);
        }
    }
}
