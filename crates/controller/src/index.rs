//! The devices as placement sees them, in memory: every row read once from the store when first
//! needed, then kept current by every write this controller commits (one controller writes a store
//! at a time: SQLite's lock, or etcd's leadership). A borrow then costs the same at any pool size: it
//! looks at the nearest lenders' devices of the class asked for, and at counters kept as rows change
//! (leases per lender, per tenant and class, which rows hold leases, which families are in use),
//! instead of reading and decoding every row. The store's compare-and-swap still decides every race.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pcipool_fabric::{Fdid, LeaseId, NodeId, Topology};
use pcipool_pcie::Bdf;
use pcipool_pool::DeviceState;
use pcipool_pool::schedule::{
    DeviceClass, DeviceInfo, PlacementError, PlacementIndex, PoolView, Request, RouteCache,
    Strategy,
};

/// Devices with their current states and the counters placement and admission read.
#[derive(Debug, Default)]
pub(crate) struct DeviceIndex {
    /// Whether the store's rows were read (the index is built on first use).
    pub(crate) loaded: bool,
    infos: Vec<DeviceInfo>,
    states: Vec<DeviceState>,
    /// Each row's store version: a write seen late (two writers of one row finishing out of order)
    /// never replaces a newer state.
    versions: Vec<u64>,
    at: HashMap<Fdid, usize>,
    /// Rebuilt when a device was added since (registrations come in bursts).
    placement: Option<PlacementIndex>,
    /// Active leases per lender.
    load: HashMap<NodeId, u32>,
    /// tenant -> class -> active leases.
    usage: HashMap<String, BTreeMap<DeviceClass, u32>>,
    /// Rows that hold leases.
    leased: BTreeSet<usize>,
    /// (lender, PF address) -> the PF and its VFs.
    families: HashMap<(NodeId, Bdf), Vec<usize>>,
}

impl DeviceIndex {
    /// Fills the index with the store's rows (once).
    pub(crate) fn load(&mut self, rows: impl IntoIterator<Item = (DeviceInfo, DeviceState, u64)>) {
        for (info, state, version) in rows {
            self.put(info, state, version);
        }
        self.loaded = true;
    }

    /// A row written (or first seen) at `version`: its state now, unless a newer one is known.
    pub(crate) fn put(&mut self, info: DeviceInfo, state: DeviceState, version: u64) {
        let i = match self.at.get(&info.fdid) {
            Some(&i) if self.versions[i] >= version => return,
            Some(&i) => {
                self.count(i, false);
                self.states[i] = state;
                self.versions[i] = version;
                i
            }
            None => {
                let i = self.infos.len();
                self.at.insert(info.fdid, i);
                self.families
                    .entry((info.fdid.node, info.fdid.bdf))
                    .or_default()
                    .push(i);
                self.infos.push(info);
                self.states.push(state);
                self.versions.push(version);
                self.placement = None;
                i
            }
        };
        self.count(i, true);
    }

    /// Adds (or takes away) row `i`'s leases to the counters.
    fn count(&mut self, i: usize, add: bool) {
        let (info, state) = (&self.infos[i], &self.states[i]);
        let leases = state.leases();
        if leases.is_empty() {
            self.leased.remove(&i);
            return;
        }
        if add {
            self.leased.insert(i);
        } else {
            self.leased.remove(&i);
        }
        let class = DeviceClass::of(info.class);
        for l in leases {
            let load = self.load.entry(info.fdid.node).or_default();
            let usage = self
                .usage
                .entry(l.tenant.clone())
                .or_default()
                .entry(class)
                .or_default();
            if add {
                *load += 1;
                *usage += 1;
            } else {
                *load = load.saturating_sub(1);
                *usage = usage.saturating_sub(1);
            }
        }
    }

    /// Devices per state name and active leases per access model.
    pub(crate) fn census(&self) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
        let mut devices: BTreeMap<String, i64> = BTreeMap::new();
        let mut leases: BTreeMap<String, i64> = BTreeMap::new();
        for state in &self.states {
            *devices.entry(state.name().to_owned()).or_default() += 1;
        }
        for &i in &self.leased {
            for l in self.states[i].leases() {
                *leases.entry(l.model.to_string()).or_default() += 1;
            }
        }
        (devices, leases)
    }

    /// A device's facts.
    pub(crate) fn info(&self, fdid: Fdid) -> Option<&DeviceInfo> {
        self.at.get(&fdid).map(|&i| &self.infos[i])
    }

    /// Whether a device holds a lease.
    pub(crate) fn is_held(&self, fdid: Fdid) -> bool {
        self.at
            .get(&fdid)
            .is_some_and(|&i| !self.states[i].leases().is_empty())
    }

    /// A tenant's active leases per class.
    pub(crate) fn usage(&self, tenant: &str) -> BTreeMap<DeviceClass, u32> {
        self.usage.get(tenant).cloned().unwrap_or_default()
    }

    /// Every active lease with its device and borrower (what the capacity ledger holds).
    pub(crate) fn leases(&self) -> impl Iterator<Item = (LeaseId, &DeviceInfo, NodeId)> {
        self.leased.iter().flat_map(move |&i| {
            self.states[i]
                .leases()
                .into_iter()
                .map(move |l| (l.id, &self.infos[i], l.borrower))
        })
    }

    /// Devices with a lease whose time is up.
    pub(crate) fn due(&self, now: pcipool_pool::Millis) -> Vec<Fdid> {
        self.leased
            .iter()
            .filter(|&&i| self.states[i].leases().iter().any(|l| l.expires_at <= now))
            .map(|&i| self.infos[i].fdid)
            .collect()
    }

    /// Whether `fdid` is held back by its family: a PF while any of its VFs is out; a VF while its PF
    /// is held, draining or being returned.
    pub(crate) fn family_blocks(&self, fdid: Fdid) -> bool {
        let Some(members) = self.families.get(&(fdid.node, fdid.bdf)) else {
            return false;
        };
        members.iter().any(|&m| {
            let (other, state) = (&self.infos[m], &self.states[m]);
            match (fdid.vf, other.fdid.vf) {
                // A PF: blocked by a VF of it that is out.
                (None, Some(_)) => {
                    !state.leases().is_empty()
                        || matches!(
                            state,
                            DeviceState::Lending { .. } | DeviceState::Returning { .. }
                        )
                }
                // A VF: blocked by its PF unless the PF is idle in the pool.
                (Some(_), None) => !matches!(
                    state,
                    DeviceState::Available
                        | DeviceState::Rejected { .. }
                        | DeviceState::Qualified { .. }
                ),
                _ => false,
            }
        })
    }

    /// Places `request` among the devices `usable` accepts whose family does not hold them back,
    /// nearest lenders first (see [`PlacementIndex`]); a request for one named device looks at that
    /// device alone.
    ///
    /// # Errors
    /// As [`pcipool_pool::schedule::place`].
    pub(crate) fn place(
        &mut self,
        request: &Request,
        topology: &Topology,
        routes: &mut RouteCache,
        strategy: Strategy,
        usable: impl Fn(&DeviceInfo) -> bool,
    ) -> Result<Vec<Fdid>, PlacementError> {
        if let Some(f) = request.selector.fdid {
            let one = self
                .at
                .get(&f)
                .map(|&i| (&self.infos[i], &self.states[i]))
                .filter(|(info, _)| usable(info) && !self.family_blocks(info.fdid));
            return pcipool_pool::schedule::place(
                request, one, &self.load, topology, routes, strategy,
            );
        }
        let mut placement = self
            .placement
            .take()
            .unwrap_or_else(|| PlacementIndex::new(&self.infos));
        let placed = placement.place_where(
            request,
            PoolView {
                devices: &self.infos,
                states: &self.states,
                lender_load: &self.load,
                topology,
            },
            routes,
            strategy,
            |info| usable(info) && !self.family_blocks(info.fdid),
        );
        self.placement = Some(placement);
        placed
    }
}
