//! The bandwidth budget of every fabric link. Cutting a link splits the fabric in two sides; traffic
//! crosses it one way when borrowers on one side use devices lent from the other. What can flow each
//! way is the lesser of what the lenders on the sending side can draw (every device at its own link's
//! speed) and what the hosts on the receiving side can take in (their own adapter links). A link
//! carrying less than that, in either direction, is oversubscribed: the devices behind it cannot all
//! run at their own speed at once. So a lender's adapter link is oversubscribed when its own devices
//! can draw more than it carries, and a switch uplink when the borrowers behind it can pull more than it
//! carries from the lenders in front of it. A link on a cycle is not a cut: traffic has another way
//! round, and the review does not budget it (`redundant`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pcipool_fabric::{AdapterId, Link, NodeId, Port};
use serde::Serialize;

use crate::model::System;

/// What kind of link it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// A host's NTB adapter cabled to a switch (or to another host's adapter).
    NtbLink,
    /// A switch cabled to another switch.
    SwitchUplink,
}

/// One link's budget.
#[derive(Debug, Clone, Serialize)]
pub struct LinkBudget {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Its kind.
    pub kind: LinkKind,
    /// PCIe generation.
    pub generation: u8,
    /// Lanes.
    pub width: u8,
    /// What it carries per direction, MB/s.
    pub capacity_mb_per_s: u64,
    /// What can flow across it in its busier direction, MB/s.
    pub demand_mb_per_s: u64,
    /// The devices on the sending side of that direction.
    pub devices: usize,
    /// Demand over capacity, in percent.
    pub load_pct: u64,
    /// Demand exceeds capacity.
    pub oversubscribed: bool,
    /// The link is on a cycle: not budgeted.
    pub redundant: bool,
}

/// A device's own bandwidth, once per physical function (its virtual functions share its link), and
/// how many physical functions.
fn lender_demand(host: &crate::model::HostPart) -> (u64, usize) {
    let mut by_function: BTreeMap<pcipool_pcie::Bdf, u64> = BTreeMap::new();
    for d in &host.devices {
        let own = pcipool_pool::capacity::device_mb_per_s(&d.info);
        let slot = by_function.entry(d.info.fdid.bdf).or_insert(0);
        *slot = (*slot).max(own);
    }
    (by_function.values().sum(), by_function.len())
}

/// What one side of a cut adds up to.
#[derive(Default, Clone, Copy)]
struct Side {
    /// What its lenders' devices can draw.
    send: u64,
    /// Its devices.
    devices: usize,
    /// What its hosts' adapter links can take in.
    take: u64,
}

/// Every link's budget, in the order the system lists its links.
pub fn budgets(system: &System) -> Vec<LinkBudget> {
    let mut adjacency: BTreeMap<&Port, Vec<(&Port, usize)>> = BTreeMap::new();
    for (i, link) in system.links.iter().enumerate() {
        adjacency.entry(&link.a).or_default().push((&link.b, i));
        adjacency.entry(&link.b).or_default().push((&link.a, i));
    }
    // Per host: what it sends, how many devices, what its own adapter links take in.
    let mut per_host: BTreeMap<NodeId, Side> = BTreeMap::new();
    for host in &system.hosts {
        let (send, devices) = lender_demand(host);
        per_host.insert(
            host.node,
            Side {
                send,
                devices,
                take: 0,
            },
        );
    }
    for link in &system.links {
        for end in [&link.a, &link.b] {
            if let Port::Adapter(AdapterId { node, .. }) = end
                && let Some(side) = per_host.get_mut(node)
            {
                side.take += u64::from(link.mb_per_s());
            }
        }
    }
    let total = per_host.values().fold(Side::default(), |t, s| Side {
        send: t.send + s.send,
        devices: t.devices + s.devices,
        take: t.take + s.take,
    });
    system
        .links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let reached = reach_without(&adjacency, &link.a, i);
            if reached.contains(&link.b) {
                return budget(link, None);
            }
            let hosts: BTreeSet<NodeId> = reached
                .iter()
                .filter_map(|p| match p {
                    Port::Adapter(a) => Some(a.node),
                    Port::Switch(_) => None,
                })
                .collect();
            let a = hosts
                .iter()
                .filter_map(|n| per_host.get(n))
                .fold(Side::default(), |t, s| Side {
                    send: t.send + s.send,
                    devices: t.devices + s.devices,
                    take: t.take + s.take,
                });
            let b = Side {
                send: total.send - a.send,
                devices: total.devices - a.devices,
                take: total.take - a.take,
            };
            let a_to_b = (a.send.min(b.take), a.devices);
            let b_to_a = (b.send.min(a.take), b.devices);
            budget(link, Some(a_to_b.max(b_to_a)))
        })
        .collect()
}

fn budget(link: &Link, flow: Option<(u64, usize)>) -> LinkBudget {
    let capacity = u64::from(link.mb_per_s());
    let kind = if matches!((&link.a, &link.b), (Port::Switch(_), Port::Switch(_))) {
        LinkKind::SwitchUplink
    } else {
        LinkKind::NtbLink
    };
    let (demand, devices) = flow.unwrap_or((0, 0));
    LinkBudget {
        a: link.a.to_string(),
        b: link.b.to_string(),
        kind,
        generation: link.generation,
        width: link.width,
        capacity_mb_per_s: capacity,
        demand_mb_per_s: demand,
        devices,
        load_pct: demand
            .saturating_mul(100)
            .checked_div(capacity)
            .unwrap_or(0),
        oversubscribed: demand > capacity,
        redundant: flow.is_none(),
    }
}

/// The ports reachable from `start` without crossing link `cut`.
fn reach_without<'a>(
    adjacency: &BTreeMap<&'a Port, Vec<(&'a Port, usize)>>,
    start: &'a Port,
    cut: usize,
) -> BTreeSet<&'a Port> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(port) = queue.pop_front() {
        for (next, link) in adjacency.get(port).into_iter().flatten() {
            if *link != cut && seen.insert(*next) {
                queue.push_back(*next);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use crate::fabric;

    /// Two lenders with one NVMe drive each (x4 Gen3, 3940 MB/s) behind `sw0`, two borrowers behind
    /// `sw1`, and the uplink between the switches `uplink` lanes wide.
    fn two_by_two(uplink: u8) -> String {
        format!(
            r#"
[[switch]]
name = "sw0"
[[switch]]
name = "sw1"
[[host]]
name = "lender-{{i}}"
node = 1
count = 2
adapters = ["dolphin-pxh830-32g"]
links = ["switch:sw0"]
[[host.device]]
bdf = "0000:10:00.0"
preset = "nvme"
driver = "nvme"
[[host]]
name = "borrower-{{i}}"
node = 11
count = 2
adapters = ["dolphin-pxh830-32g"]
links = ["switch:sw1"]
[[link]]
a = "switch:sw1"
b = "switch:sw0"
width = {uplink}
"#
        )
    }

    fn oversubscribed(text: &str) -> Vec<(String, String, u64, u64)> {
        let desc = pcipool_sim::FabricDesc::parse(text).expect("a valid fabric");
        let review = crate::review(fabric::system(&desc, "test").expect("builds"));
        review
            .links
            .into_iter()
            .filter(|l| l.oversubscribed)
            .map(|l| (l.a, l.b, l.demand_mb_per_s, l.capacity_mb_per_s))
            .collect()
    }

    #[test]
    fn an_uplink_narrower_than_the_devices_behind_it_is_named_and_a_wide_one_is_not() {
        // Both drives (2 x 3940 MB/s) fit a x16 uplink (15760 MB/s) and each lender's x8 link.
        assert_eq!(oversubscribed(&two_by_two(16)), vec![]);
        // A x1 uplink (985 MB/s) carries less than the two drives can push across it.
        assert_eq!(
            oversubscribed(&two_by_two(1)),
            vec![("switch:sw1".to_owned(), "switch:sw0".to_owned(), 7880, 985)]
        );
    }

    #[test]
    fn the_rack_names_its_uplinks() {
        let names: Vec<(String, String)> = oversubscribed(pcipool_sim::RACK_64)
            .into_iter()
            .map(|(a, b, ..)| (a, b))
            .filter(|(a, b)| a.starts_with("switch:") && b.starts_with("switch:"))
            .collect();
        assert_eq!(
            names,
            vec![
                ("switch:sw1".to_owned(), "switch:sw0".to_owned()),
                ("switch:sw2".to_owned(), "switch:sw0".to_owned())
            ]
        );
    }

    #[test]
    fn a_link_on_a_cycle_is_not_budgeted() {
        let ring = two_by_two(16).replace(
            "[[link]]",
            "[[link]]\na = \"switch:sw0\"\nb = \"switch:sw1\"\nwidth = 1\n\n[[link]]",
        );
        let desc = pcipool_sim::FabricDesc::parse(&ring).expect("a valid fabric");
        let review = crate::review(fabric::system(&desc, "test").expect("builds"));
        let redundant: Vec<bool> = review
            .links
            .iter()
            .filter(|l| l.a.starts_with("switch:") && l.b.starts_with("switch:"))
            .map(|l| l.redundant)
            .collect();
        assert_eq!(redundant, vec![true, true]);
    }
}
