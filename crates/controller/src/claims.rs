//! What one controller process holds while requests are in flight: devices a placement chose, keyed
//! requests, ledger reservations. Each is given back when its guard drops; the store's compare-and-swap
//! still decides every race, also against other processes.

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::capacity::Ledger;
use pcipool_pool::schedule::DeviceInfo;

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
