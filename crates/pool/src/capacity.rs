//! Fabric capacity for placement: whether the mappings a lease needs still fit on the adapters at both
//! ends (windows, LUT entries, aperture, requester slots) and within the bandwidth budget of every fabric
//! link on its route.
//!
//! The ledger uses the same allocator the simulated fabric uses (`pcipool_fabric::Fabric`). [`Ledger::sync`]
//! makes it hold exactly the leases the store says are granted (adding and removing only the difference),
//! so it cannot drift from the store; placement then tries the new lease on top.
//!
//! Bandwidth: a lease reserves its device's own PCIe link bandwidth (width x per-lane rate) on each fabric
//! link it crosses. A link's budget is its bandwidth times the policy's oversubscription percentage (a
//! policy choice: most traffic of pooled devices is bursty, so fabrics are commonly oversubscribed).

use std::collections::{HashMap, HashSet};

use pcipool_fabric::{Fabric, Fdid, LeaseId, MapError, NodeId, Port, Topology};

use crate::schedule::DeviceInfo;

/// Where a lease's borrower-side DMA window starts (any fixed base: only its size matters here).
const DMA_BASE: u64 = 1 << 32;

/// Why a lease does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// An adapter is out of windows, LUT entries, aperture or requester slots.
    #[error(transparent)]
    Adapter(#[from] MapError),
    /// A fabric link's bandwidth budget would be exceeded.
    #[error("link {a} - {b}: {used} + {needed} MB/s over its budget of {budget} MB/s")]
    Bandwidth {
        /// One end.
        a: Port,
        /// The other end.
        b: Port,
        /// Already reserved.
        used: u64,
        /// This lease.
        needed: u64,
        /// The budget.
        budget: u64,
    },
}

/// What the granted leases hold on the fabric.
#[derive(Debug)]
pub struct Ledger {
    fabric: Fabric,
    link_use: HashMap<(Port, Port), u64>,
    link_budget: HashMap<(Port, Port), u64>,
    dma_window: u64,
    /// Granted leases the ledger holds (see [`Self::sync`]), with what is needed to remove them.
    granted: HashMap<LeaseId, (DeviceInfo, NodeId)>,
    /// Routes' fabric links per (borrower, lender), computed once.
    routes: HashMap<(NodeId, NodeId), Vec<(Port, Port)>>,
}

/// Per-lane MB/s of a link running at `gts_x10` tenths of GT/s (the encoding overhead of each generation).
fn lane_mb_per_s(gts_x10: u16) -> u64 {
    match gts_x10 {
        0 => 0,
        1..=25 => 250,
        26..=50 => 500,
        51..=80 => 985,
        81..=160 => 1969,
        161..=320 => 3938,
        _ => 7563,
    }
}

/// The bandwidth a device can draw: its own link, width x lane rate.
pub fn device_mb_per_s(info: &DeviceInfo) -> u64 {
    u64::from(info.link_width) * lane_mb_per_s(info.link_gts_x10)
}

fn key(a: &Port, b: &Port) -> (Port, Port) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl Ledger {
    /// An empty ledger over `topology`; links may carry `oversubscription_pct` percent of their bandwidth.
    pub fn new(topology: &Topology, dma_window: u64, oversubscription_pct: u32) -> Self {
        let link_budget = topology
            .links()
            .iter()
            .map(|l| {
                (
                    key(&l.a, &l.b),
                    u64::from(l.mb_per_s()) * u64::from(oversubscription_pct) / 100,
                )
            })
            .collect();
        Self {
            fabric: Fabric::new(topology.clone()),
            link_use: HashMap::new(),
            link_budget,
            dma_window,
            granted: HashMap::new(),
            routes: HashMap::new(),
        }
    }

    /// Makes the ledger hold exactly `leases` (id, device, borrower): the ones it holds that are gone are
    /// removed, new ones added (even when they no longer fit: they hold their resources regardless).
    pub fn sync<'a>(
        &mut self,
        leases: impl IntoIterator<Item = (LeaseId, &'a DeviceInfo, NodeId)>,
    ) {
        let mut seen = HashSet::new();
        for (id, info, borrower) in leases {
            seen.insert(id);
            if !self.granted.contains_key(&id) {
                self.add_granted(id, info, borrower);
                self.granted.insert(id, (info.clone(), borrower));
            }
        }
        let gone: Vec<LeaseId> = self
            .granted
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some((info, borrower)) = self.granted.remove(&id) {
                self.remove(id, &info, borrower);
            }
        }
    }

    fn links_on_route(&mut self, borrower: NodeId, lender: NodeId) -> Vec<(Port, Port)> {
        if let Some(links) = self.routes.get(&(borrower, lender)) {
            return links.clone();
        }
        let links: Vec<(Port, Port)> = match self.fabric.topology().best_route(borrower, lender) {
            Some((_, _, route)) => route
                .ports
                .windows(2)
                .filter_map(|w| match w {
                    [a, b] => Some(key(a, b)),
                    _ => None,
                })
                .filter(|k| self.link_budget.contains_key(k))
                .collect(),
            None => Vec::new(),
        };
        self.routes.insert((borrower, lender), links.clone());
        links
    }

    /// Adds a lease's mappings and bandwidth; on failure nothing is added.
    ///
    /// # Errors
    /// [`CapacityError`] naming the adapter resource or the link that ran out.
    pub fn add(
        &mut self,
        lease: LeaseId,
        info: &DeviceInfo,
        borrower: NodeId,
    ) -> Result<(), CapacityError> {
        let needed = device_mb_per_s(info);
        let links = self.links_on_route(borrower, info.fdid.node);
        for k in &links {
            let used = self.link_use.get(k).copied().unwrap_or(0);
            let budget = self.link_budget.get(k).copied().unwrap_or(u64::MAX);
            if used.saturating_add(needed) > budget {
                return Err(CapacityError::Bandwidth {
                    a: k.0.clone(),
                    b: k.1.clone(),
                    used,
                    needed,
                    budget,
                });
            }
        }
        if let Err(e) = self.map(lease, info.fdid, &info.bars, borrower) {
            self.fabric.unmap_lease(lease);
            return Err(e.into());
        }
        for k in links {
            *self.link_use.entry(k).or_default() += needed;
        }
        Ok(())
    }

    /// Removes what [`Self::add`] added for `lease` (a gang member whose partners did not fit).
    pub fn remove(&mut self, lease: LeaseId, info: &DeviceInfo, borrower: NodeId) {
        if self.fabric.unmap_lease(lease).is_empty() {
            return;
        }
        let needed = device_mb_per_s(info);
        for k in self.links_on_route(borrower, info.fdid.node) {
            if let Some(used) = self.link_use.get_mut(&k) {
                *used = used.saturating_sub(needed);
            }
        }
    }

    /// Adds a lease that is already granted, even when it no longer fits (a tighter policy, or a lease
    /// that predates the ledger): it holds its resources whatever the ledger thinks.
    pub fn add_granted(&mut self, lease: LeaseId, info: &DeviceInfo, borrower: NodeId) {
        if self.add(lease, info, borrower).is_err() {
            let _ = self.map(lease, info.fdid, &info.bars, borrower);
            let needed = device_mb_per_s(info);
            for k in self.links_on_route(borrower, info.fdid.node) {
                *self.link_use.entry(k).or_default() += needed;
            }
        }
    }

    fn map(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        bars: &[(u8, u64)],
        borrower: NodeId,
    ) -> Result<(), MapError> {
        for &(bar, size) in bars {
            self.fabric.map_bar(lease, fdid, bar, size, borrower)?;
        }
        if self.dma_window > 0 {
            self.fabric
                .map_dma(lease, fdid, borrower, DMA_BASE, self.dma_window)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pcipool_fabric::{AdapterProfile, Host, Link};
    use pcipool_pcie::Bdf;
    use pcipool_qualify::AccessModel;

    use super::*;

    fn topology(uplink_width: u8, profile: &str) -> Topology {
        let p = AdapterProfile::named(profile).expect("shipped profile");
        let host = |n: u32, name: &str| Host {
            node: NodeId(n),
            name: name.into(),
            adapters: vec![p.clone()],
        };
        let link = |a: &str, b: &str, width: u8| Link {
            a: a.parse().expect("port"),
            b: b.parse().expect("port"),
            generation: 3,
            width,
        };
        Topology::new(
            vec![host(1, "lender"), host(2, "borrower")],
            vec!["sw0".into(), "sw1".into()],
            vec![
                link("n1/a0", "switch:sw0", 16),
                link("switch:sw0", "switch:sw1", uplink_width),
                link("n2/a0", "switch:sw1", 16),
            ],
        )
        .expect("valid topology")
    }

    fn nvme(bus: u8, width: u8) -> DeviceInfo {
        DeviceInfo {
            fdid: Fdid {
                node: NodeId(1),
                bdf: Bdf::new(0, bus, 0, 0).expect("bdf"),
                vf: None,
            },
            class: 0x01_08_02,
            vendor_id: 0x144d,
            device_id: 0xa808,
            name: "nvme".into(),
            labels: BTreeMap::new(),
            link_width: width,
            link_gts_x10: 80,
            largest_bar: 0x4000,
            models: vec![AccessModel::Lend],
            bars: vec![(0, 0x4000)],
            driver: Some("nvme".into()),
            function: None,
            local_driver: None,
            local_vfs: 0,
        }
    }

    #[test]
    fn the_uplink_budget_bounds_how_many_leases_cross_it() {
        // x4 uplink at gen3 = 3,940 MB/s, 100 %: one x4 NVMe drive (3,940 MB/s) fits, a second does not.
        let mut ledger = Ledger::new(&topology(4, "dolphin-pxh830-32g"), 1 << 20, 100);
        let first = ledger.add(LeaseId(1), &nvme(3, 4), NodeId(2));
        let second = ledger.add(LeaseId(2), &nvme(4, 4), NodeId(2));
        // With 200 % oversubscription both fit.
        let mut loose = Ledger::new(&topology(4, "dolphin-pxh830-32g"), 1 << 20, 200);
        let both = (
            loose.add(LeaseId(1), &nvme(3, 4), NodeId(2)),
            loose.add(LeaseId(2), &nvme(4, 4), NodeId(2)),
        );
        assert_eq!(
            (
                first.is_ok(),
                matches!(second, Err(CapacityError::Bandwidth { .. })),
                both
            ),
            (true, true, (Ok(()), Ok(())))
        );
    }

    #[test]
    fn adapter_windows_run_out_and_a_refusal_leaves_nothing_behind() {
        // Switchtec direct windows: 2 per adapter. Each lease takes one BAR window on the borrower's
        // adapter and one DMA window on the lender's.
        let mut ledger = Ledger::new(&topology(16, "switchtec-direct"), 1 << 20, 1000);
        let a = ledger.add(LeaseId(1), &nvme(3, 4), NodeId(2));
        let b = ledger.add(LeaseId(2), &nvme(4, 4), NodeId(2));
        let c = ledger.add(LeaseId(3), &nvme(5, 4), NodeId(2));
        let mappings_after = ledger.fabric.mappings().count();
        assert_eq!(
            (
                a,
                b,
                matches!(c, Err(CapacityError::Adapter(_))),
                mappings_after
            ),
            (Ok(()), Ok(()), true, 4)
        );
    }
}
