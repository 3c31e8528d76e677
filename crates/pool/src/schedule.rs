//! Placement: which devices satisfy a request, and which of them to pick.
//!
//! Pure: candidates and the route table come in, a choice (or a typed refusal) goes out. Gang requests
//! are all-or-nothing: either every device of the request is chosen or none is.

use std::collections::{BTreeMap, HashMap};

use pcipool_fabric::{Fdid, NodeId, Topology};
use pcipool_qualify::AccessModel;
use serde::{Deserialize, Serialize};

use crate::state::DeviceState;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Class name shorthand (`nvme`, `gpu`, `nic`, `fpga`) or none.
    #[serde(default)]
    pub class: Option<DeviceClass>,
    /// Vendor id.
    #[serde(default)]
    pub vendor_id: Option<u16>,
    /// Device id.
    #[serde(default)]
    pub device_id: Option<u16>,
    /// Model name (substring, case-insensitive).
    #[serde(default)]
    pub model_name: Option<String>,
    /// Labels the device must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Minimum negotiated link width.
    #[serde(default)]
    pub min_link_width: Option<u8>,
    /// Minimum link speed in GT/s x10 (80 = 8 GT/s).
    #[serde(default)]
    pub min_link_gts_x10: Option<u16>,
    /// Minimum size of the largest memory BAR, bytes.
    #[serde(default)]
    pub min_bar: Option<u64>,
    /// One specific device.
    #[serde(default)]
    pub fdid: Option<Fdid>,
}

/// Coarse device classes people ask for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    /// NVMe storage (class 01:08).
    Nvme,
    /// Display / 3D controllers (class 03).
    Gpu,
    /// Network controllers (class 02).
    Nic,
    /// Processing accelerators and FPGAs (class 12, 0b:40).
    Fpga,
    /// Anything else.
    Other,
}

impl DeviceClass {
    /// The class of a 24-bit class code.
    pub fn of(class: u32) -> Self {
        let base = (class >> 16) & 0xff;
        let sub = (class >> 8) & 0xff;
        match (base, sub) {
            (0x01, 0x08) => Self::Nvme,
            (0x03, _) => Self::Gpu,
            (0x02, _) => Self::Nic,
            (0x12, _) | (0x0b, 0x40) => Self::Fpga,
            _ => Self::Other,
        }
    }
}

impl std::str::FromStr for DeviceClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nvme" => Ok(Self::Nvme),
            "gpu" => Ok(Self::Gpu),
            "nic" => Ok(Self::Nic),
            "fpga" => Ok(Self::Fpga),
            "other" => Ok(Self::Other),
            other => Err(format!(
                "unknown device class '{other}' (nvme, gpu, nic, fpga, other)"
            )),
        }
    }
}

/// Static facts about a pooled device the scheduler matches on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    /// Id.
    pub fdid: Fdid,
    /// 24-bit class code.
    pub class: u32,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Model name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Negotiated link width.
    pub link_width: u8,
    /// Link speed in GT/s x10.
    pub link_gts_x10: u16,
    /// Largest memory BAR.
    pub largest_bar: u64,
    /// Models it qualified for.
    pub models: Vec<AccessModel>,
    /// Memory BARs to map when lent: (index, size).
    #[serde(default)]
    pub bars: Vec<(u8, u64)>,
    /// Native driver the borrower binds.
    #[serde(default)]
    pub driver: Option<String>,
    /// The function's own address when the fdid does not give it: a virtual function's fdid names its
    /// physical function and VF index, the steps act on the VF's routing id.
    #[serde(default)]
    pub function: Option<pcipool_pcie::Bdf>,
    /// The driver bound on the lender when the device was registered: a return binds it again.
    #[serde(default)]
    pub local_driver: Option<String>,
    /// SR-IOV virtual functions enabled on the lender when it registered (a return enables them again).
    #[serde(default)]
    pub local_vfs: u16,
}

/// A request for devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// What to match.
    pub selector: Selector,
    /// How many (a gang: all or nothing).
    pub count: u32,
    /// Access model.
    pub model: AccessModel,
    /// Who will use them.
    pub borrower: NodeId,
    /// Shared model: how many borrowers the device may have at once (when this request is the first;
    /// later sharers join under the limit the first one set). None = 4.
    #[serde(default)]
    pub max_sharers: Option<u32>,
    /// Idempotency key: a request repeated with the same key (by the same tenant) while its leases are
    /// active gets those leases back instead of new ones.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Spread leases across lenders, or pack them onto few.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Fewest active leases on the lender first.
    #[default]
    Spread,
    /// Most active leases on the lender first (keeps other lenders idle).
    Pack,
}

/// Why nothing was placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum PlacementError {
    /// Not enough free devices match.
    #[error("{wanted} device(s) wanted, {found} free and matching")]
    NoCapacity {
        /// Asked for.
        wanted: u32,
        /// Found.
        found: u32,
    },
    /// A zero-device request.
    #[error("count must be at least 1")]
    ZeroCount,
}

/// Hop counts between hosts, computed once per pair and cached.
#[derive(Debug, Default)]
pub struct RouteCache {
    hops: HashMap<(NodeId, NodeId), Option<usize>>,
}

impl RouteCache {
    /// Hops from borrower to lender through the best adapter pair (None = unreachable).
    pub fn hops(&mut self, topology: &Topology, from: NodeId, to: NodeId) -> Option<usize> {
        *self
            .hops
            .entry((from, to))
            .or_insert_with(|| topology.best_route(from, to).map(|(_, _, r)| r.hops))
    }
}

/// Whether a request with `max_sharers` asks for the device to itself (a shared-model borrow that
/// admits no other sharer: SISCI's exclusive borrow, which a holder may later downgrade).
pub fn exclusive(max_sharers: Option<u32>) -> bool {
    max_sharers == Some(1)
}

fn free_for(state: &DeviceState, model: AccessModel, max_sharers: Option<u32>) -> bool {
    match (state, model) {
        (DeviceState::Available, _) => true,
        (
            DeviceState::Shared {
                leases,
                max_sharers: limit,
            },
            AccessModel::Shared,
        ) => {
            !exclusive(max_sharers) && leases.len() < usize::try_from(*limit).unwrap_or(usize::MAX)
        }
        (
            DeviceState::Discovered
            | DeviceState::Qualified { .. }
            | DeviceState::Rejected { .. }
            | DeviceState::Lending { .. }
            | DeviceState::Lent { .. }
            | DeviceState::Shared { .. }
            | DeviceState::Returning { .. }
            | DeviceState::Quarantined { .. }
            | DeviceState::Lost { .. }
            | DeviceState::Maintenance
            | DeviceState::Local,
            _,
        ) => false,
    }
}

/// Whether a device matches a selector.
pub fn matches(info: &DeviceInfo, s: &Selector) -> bool {
    s.fdid.is_none_or(|f| f == info.fdid)
        && s.class.is_none_or(|c| c == DeviceClass::of(info.class))
        && s.vendor_id.is_none_or(|v| v == info.vendor_id)
        && s.device_id.is_none_or(|d| d == info.device_id)
        && s.model_name
            .as_ref()
            .is_none_or(|n| info.name.to_lowercase().contains(&n.to_lowercase()))
        && s.labels.iter().all(|(k, v)| info.labels.get(k) == Some(v))
        && s.min_link_width.is_none_or(|w| info.link_width >= w)
        && s.min_link_gts_x10.is_none_or(|g| info.link_gts_x10 >= g)
        && s.min_bar.is_none_or(|b| info.largest_bar >= b)
}

/// Chooses `request.count` devices, or none.
///
/// Candidates must be free for the model, qualified for it, matching, on another host and reachable.
/// Among them: fewest hops first, then the lender load the strategy prefers, then device id (so the
/// choice is deterministic).
///
/// # Errors
/// [`PlacementError::NoCapacity`] when fewer than `count` qualify; [`PlacementError::ZeroCount`].
pub fn place<'a>(
    request: &Request,
    devices: impl IntoIterator<Item = (&'a DeviceInfo, &'a DeviceState)>,
    lender_load: &HashMap<NodeId, u32>,
    topology: &Topology,
    routes: &mut RouteCache,
    strategy: Strategy,
) -> Result<Vec<Fdid>, PlacementError> {
    if request.count == 0 {
        return Err(PlacementError::ZeroCount);
    }
    let mut scored: Vec<(usize, i64, Fdid)> = Vec::new();
    for (info, state) in devices {
        if info.fdid.node == request.borrower
            || !free_for(state, request.model, request.max_sharers)
            || !info.models.contains(&request.model)
            || !matches(info, &request.selector)
        {
            continue;
        }
        let Some(hops) = routes.hops(topology, request.borrower, info.fdid.node) else {
            continue;
        };
        let load = i64::from(lender_load.get(&info.fdid.node).copied().unwrap_or(0));
        let load_key = match strategy {
            Strategy::Spread => load,
            Strategy::Pack => -load,
        };
        scored.push((hops, load_key, info.fdid));
    }
    let wanted = usize::try_from(request.count).unwrap_or(usize::MAX);
    if scored.len() < wanted {
        return Err(PlacementError::NoCapacity {
            wanted: request.count,
            found: u32::try_from(scored.len()).unwrap_or(u32::MAX),
        });
    }
    if scored.len() > wanted {
        scored.select_nth_unstable(wanted - 1);
        scored.truncate(wanted);
    }
    scored.sort();
    Ok(scored.into_iter().map(|(_, _, f)| f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcipool_fabric::{AdapterProfile, Host, Link};

    fn topo() -> Topology {
        let p = AdapterProfile::named("idt").expect("shipped");
        let host = |n: u32| Host {
            node: NodeId(n),
            name: format!("h{n}"),
            adapters: vec![p.clone()],
        };
        let port = |s: &str| s.parse().expect("port");
        Topology::new(
            vec![host(1), host(2), host(3)],
            vec!["near".into(), "far".into()],
            vec![
                Link {
                    a: port("n1/a0"),
                    b: port("switch:near"),
                    generation: 3,
                    width: 8,
                },
                Link {
                    a: port("n2/a0"),
                    b: port("switch:near"),
                    generation: 3,
                    width: 8,
                },
                Link {
                    a: port("switch:near"),
                    b: port("switch:far"),
                    generation: 3,
                    width: 8,
                },
                Link {
                    a: port("n3/a0"),
                    b: port("switch:far"),
                    generation: 3,
                    width: 8,
                },
            ],
        )
        .expect("valid")
    }

    fn nvme(node: u32, bus: u8) -> DeviceInfo {
        DeviceInfo {
            fdid: format!("n{node}:0000:{bus:02x}:00.0")
                .parse()
                .expect("fdid"),
            class: 0x01_08_02,
            vendor_id: 0x144d,
            device_id: 0xa808,
            name: "NVMe SSD".into(),
            labels: BTreeMap::new(),
            link_width: 4,
            link_gts_x10: 80,
            largest_bar: 0x4000,
            models: vec![AccessModel::Lend, AccessModel::Shared],
            bars: vec![(0, 0x4000)],
            driver: Some("nvme".into()),
            function: None,
            local_driver: None,
            local_vfs: 0,
        }
    }

    fn request(count: u32) -> Request {
        Request {
            selector: Selector {
                class: Some(DeviceClass::Nvme),
                ..Selector::default()
            },
            count,
            model: AccessModel::Lend,
            borrower: NodeId(1),
            max_sharers: None,
            request_id: None,
        }
    }

    #[test]
    fn nearer_lender_wins() {
        let devs = [nvme(3, 1), nvme(2, 1)];
        let states = [DeviceState::Available, DeviceState::Available];
        let got = place(
            &request(1),
            devs.iter().zip(&states),
            &HashMap::new(),
            &topo(),
            &mut RouteCache::default(),
            Strategy::Spread,
        );
        assert_eq!(got, Ok(vec![devs[1].fdid]));
    }

    #[test]
    fn gang_is_all_or_nothing() {
        let devs = [nvme(2, 1), nvme(3, 1)];
        let states = [DeviceState::Available, DeviceState::Maintenance];
        let got = place(
            &request(2),
            devs.iter().zip(&states),
            &HashMap::new(),
            &topo(),
            &mut RouteCache::default(),
            Strategy::Spread,
        );
        assert_eq!(
            got,
            Err(PlacementError::NoCapacity {
                wanted: 2,
                found: 1
            })
        );
    }

    #[test]
    fn own_devices_are_not_borrowed() {
        let devs = [nvme(1, 1)];
        let states = [DeviceState::Available];
        let got = place(
            &request(1),
            devs.iter().zip(&states),
            &HashMap::new(),
            &topo(),
            &mut RouteCache::default(),
            Strategy::Spread,
        );
        assert_eq!(
            got,
            Err(PlacementError::NoCapacity {
                wanted: 1,
                found: 0
            })
        );
    }

    #[test]
    fn hops_decide_before_load() {
        let devs = [nvme(2, 1), nvme(2, 2)];
        let mut load = HashMap::new();
        load.insert(NodeId(2), 3);
        load.insert(NodeId(3), 0);
        let devs = [devs[0].clone(), nvme(3, 1)];
        let states = [DeviceState::Available, DeviceState::Available];
        let r = request(1);
        let spread = place(
            &r,
            devs.iter().zip(&states),
            &load,
            &topo(),
            &mut RouteCache::default(),
            Strategy::Spread,
        );
        let pack = place(
            &r,
            devs.iter().zip(&states),
            &load,
            &topo(),
            &mut RouteCache::default(),
            Strategy::Pack,
        );
        // n2 is nearer (2 hops vs 3), so hops decide first under both strategies.
        assert_eq!(
            (spread, pack),
            (Ok(vec![devs[0].fdid]), Ok(vec![devs[0].fdid]))
        );
    }

    #[test]
    fn pack_prefers_the_busy_lender_at_equal_distance() {
        let devs = [nvme(2, 1), nvme(3, 1)];
        let mut load = HashMap::new();
        load.insert(NodeId(3), 5);
        let states = [DeviceState::Available, DeviceState::Available];
        let flat = {
            let p = pcipool_fabric::AdapterProfile::named("idt").expect("shipped");
            let host = |n: u32| Host {
                node: NodeId(n),
                name: format!("h{n}"),
                adapters: vec![p.clone()],
            };
            let port = |s: &str| s.parse().expect("port");
            Topology::new(
                vec![host(1), host(2), host(3)],
                vec!["sw".into()],
                (1..=3)
                    .map(|n| Link {
                        a: port(&format!("n{n}/a0")),
                        b: port("switch:sw"),
                        generation: 3,
                        width: 8,
                    })
                    .collect(),
            )
            .expect("valid")
        };
        let pack = place(
            &request(1),
            devs.iter().zip(&states),
            &load,
            &flat,
            &mut RouteCache::default(),
            Strategy::Pack,
        );
        let spread = place(
            &request(1),
            devs.iter().zip(&states),
            &load,
            &flat,
            &mut RouteCache::default(),
            Strategy::Spread,
        );
        assert_eq!(
            (pack, spread),
            (Ok(vec![devs[1].fdid]), Ok(vec![devs[0].fdid]))
        );
    }

    #[test]
    fn selector_filters_on_link_and_bar() {
        let dev = nvme(2, 1);
        let s = Selector {
            min_link_width: Some(8),
            ..Selector::default()
        };
        let t = Selector {
            min_bar: Some(0x4000),
            ..Selector::default()
        };
        assert_eq!((matches(&dev, &s), matches(&dev, &t)), (false, true));
    }

    #[test]
    fn zero_count_is_refused() {
        let got = place(
            &request(0),
            std::iter::empty(),
            &HashMap::new(),
            &topo(),
            &mut RouteCache::default(),
            Strategy::Spread,
        );
        assert_eq!(got, Err(PlacementError::ZeroCount));
    }
}

/// The pool as placement sees it: static device facts, their current states (same order) and lender load.
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'a> {
    /// Devices.
    pub devices: &'a [DeviceInfo],
    /// Their states, index for index.
    pub states: &'a [DeviceState],
    /// Active leases per lender.
    pub lender_load: &'a HashMap<NodeId, u32>,
    /// The fabric.
    pub topology: &'a Topology,
}

/// An index for placement at scale: devices grouped by class and lender, lenders ranked by distance per
/// borrower. [`PlacementIndex::place`] returns exactly what [`place`] would (a property test checks it)
/// while looking only at the nearest lenders that can satisfy the request.
#[derive(Debug, Default)]
pub struct PlacementIndex {
    /// class -> lender -> device indices (into the caller's device slice).
    by_class: HashMap<DeviceClass, BTreeMap<NodeId, Vec<usize>>>,
    /// lender -> all its device indices.
    by_lender: BTreeMap<NodeId, Vec<usize>>,
    /// borrower -> lenders grouped by hop count, nearest first.
    tiers: HashMap<NodeId, Vec<(usize, Vec<NodeId>)>>,
}

impl PlacementIndex {
    /// Indexes devices (their static facts; state is looked up at placement time).
    pub fn new(devices: &[DeviceInfo]) -> Self {
        let mut index = Self::default();
        for (i, d) in devices.iter().enumerate() {
            index
                .by_class
                .entry(DeviceClass::of(d.class))
                .or_default()
                .entry(d.fdid.node)
                .or_default()
                .push(i);
            index.by_lender.entry(d.fdid.node).or_default().push(i);
        }
        index
    }

    fn tiers(
        &mut self,
        topology: &Topology,
        routes: &mut RouteCache,
        borrower: NodeId,
    ) -> &[(usize, Vec<NodeId>)] {
        let lenders: Vec<NodeId> = self.by_lender.keys().copied().collect();
        self.tiers.entry(borrower).or_insert_with(|| {
            let mut by_hops: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
            for l in lenders {
                if l == borrower {
                    continue;
                }
                if let Some(h) = routes.hops(topology, borrower, l) {
                    by_hops.entry(h).or_default().push(l);
                }
            }
            by_hops.into_iter().collect()
        })
    }

    /// Same contract as [`place`], over the indexed devices and their current states.
    ///
    /// # Errors
    /// As [`place`].
    pub fn place(
        &mut self,
        request: &Request,
        view: PoolView<'_>,
        routes: &mut RouteCache,
        strategy: Strategy,
    ) -> Result<Vec<Fdid>, PlacementError> {
        self.place_where(request, view, routes, strategy, |_| true)
    }

    /// As [`PlacementIndex::place`], among the devices `usable` accepts (the caller's own exclusions:
    /// devices other requests claimed, maintenance windows, families in use).
    ///
    /// # Errors
    /// As [`place`].
    pub fn place_where(
        &mut self,
        request: &Request,
        view: PoolView<'_>,
        routes: &mut RouteCache,
        strategy: Strategy,
        usable: impl Fn(&DeviceInfo) -> bool,
    ) -> Result<Vec<Fdid>, PlacementError> {
        if request.count == 0 {
            return Err(PlacementError::ZeroCount);
        }
        let wanted = usize::try_from(request.count).unwrap_or(usize::MAX);
        let PoolView {
            devices,
            states,
            lender_load,
            topology,
        } = view;
        let tiers = self.tiers(topology, routes, request.borrower).to_vec();
        let mut chosen: Vec<(usize, i64, Fdid)> = Vec::new();
        for (hops, lenders) in tiers {
            let mut tier: Vec<(usize, i64, Fdid)> = Vec::new();
            for lender in lenders {
                let list = match request.selector.class {
                    Some(c) => self.by_class.get(&c).and_then(|m| m.get(&lender)),
                    None => self.by_lender.get(&lender),
                };
                let load = i64::from(lender_load.get(&lender).copied().unwrap_or(0));
                let load_key = match strategy {
                    Strategy::Spread => load,
                    Strategy::Pack => -load,
                };
                for &i in list.into_iter().flatten() {
                    let (Some(info), Some(state)) = (devices.get(i), states.get(i)) else {
                        continue;
                    };
                    if free_for(state, request.model, request.max_sharers)
                        && info.models.contains(&request.model)
                        && matches(info, &request.selector)
                        && usable(info)
                    {
                        tier.push((hops, load_key, info.fdid));
                    }
                }
            }
            tier.sort();
            let need = wanted - chosen.len();
            chosen.extend(tier.into_iter().take(need));
            if chosen.len() == wanted {
                return Ok(chosen.into_iter().map(|(_, _, f)| f).collect());
            }
        }
        Err(PlacementError::NoCapacity {
            wanted: request.count,
            found: u32::try_from(chosen.len()).unwrap_or(u32::MAX),
        })
    }
}
