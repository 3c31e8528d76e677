//! Hosts, adapters, switches and links, and the routes between adapters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{AdapterId, NodeId};
use crate::profile::AdapterProfile;

/// A point a link attaches to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    /// An NTB adapter.
    Adapter(AdapterId),
    /// A fabric switch, by name.
    Switch(String),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Adapter(a) => write!(f, "{a}"),
            Self::Switch(s) => write!(f, "switch:{s}"),
        }
    }
}

/// A port name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a port (expected n<node>/a<index> or switch:<name>)")]
pub struct PortError(pub String);

impl FromStr for Port {
    type Err = PortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("switch:") {
            return if name.is_empty() {
                Err(PortError(s.to_owned()))
            } else {
                Ok(Self::Switch(name.to_owned()))
            };
        }
        let (node, index) = s.split_once("/a").ok_or_else(|| PortError(s.to_owned()))?;
        Ok(Self::Adapter(AdapterId {
            node: node.parse().map_err(|_| PortError(s.to_owned()))?,
            index: index.parse().map_err(|_| PortError(s.to_owned()))?,
        }))
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A cable or on-board connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// One end.
    pub a: Port,
    /// The other end.
    pub b: Port,
    /// PCIe generation (3 = 8 GT/s).
    #[serde(default = "default_gen")]
    pub generation: u8,
    /// Lanes.
    #[serde(default = "default_width")]
    pub width: u8,
}

fn default_gen() -> u8 {
    3
}

fn default_width() -> u8 {
    8
}

impl Link {
    /// Usable bandwidth per direction, MB/s.
    pub fn mb_per_s(&self) -> u32 {
        let lane = match self.generation {
            1 => 250,
            2 => 500,
            3 => 985,
            4 => 1969,
            5 => 3938,
            6 => 7563,
            _ => 0,
        };
        lane * u32::from(self.width)
    }
}

/// A host on the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Node id.
    pub node: NodeId,
    /// Name.
    pub name: String,
    /// Adapter profiles, by adapter index.
    pub adapters: Vec<AdapterProfile>,
}

/// Why a topology is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Two hosts share a node id.
    #[error("node id {0} is used twice")]
    DuplicateNode(NodeId),
    /// A link names an adapter that does not exist.
    #[error("link end {0} names no adapter")]
    UnknownAdapter(AdapterId),
    /// A link names a switch that is not declared.
    #[error("link end switch:{0} names no switch")]
    UnknownSwitch(String),
    /// A link with both ends on the same port.
    #[error("link from {0} to itself")]
    SelfLink(Port),
}

/// A route between two adapters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Ports visited, first and last included.
    pub ports: Vec<Port>,
    /// Links crossed.
    pub hops: usize,
    /// Bandwidth of the narrowest link, MB/s.
    pub narrowest_mb_per_s: u32,
}

/// The static shape of a fabric.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    hosts: BTreeMap<NodeId, Host>,
    switches: BTreeSet<String>,
    links: Vec<Link>,
    adjacency: BTreeMap<Port, Vec<(Port, usize)>>,
}

impl Topology {
    /// Builds and checks a topology.
    ///
    /// # Errors
    /// Duplicate nodes and links to unknown ports.
    pub fn new(
        hosts: Vec<Host>,
        switches: Vec<String>,
        links: Vec<Link>,
    ) -> Result<Self, TopologyError> {
        let mut by_node = BTreeMap::new();
        for h in hosts {
            let node = h.node;
            if by_node.insert(node, h).is_some() {
                return Err(TopologyError::DuplicateNode(node));
            }
        }
        let switches: BTreeSet<String> = switches.into_iter().collect();
        let mut adjacency: BTreeMap<Port, Vec<(Port, usize)>> = BTreeMap::new();
        for (i, link) in links.iter().enumerate() {
            for end in [&link.a, &link.b] {
                match end {
                    Port::Adapter(a) => {
                        let ok = by_node
                            .get(&a.node)
                            .is_some_and(|h| usize::from(a.index) < h.adapters.len());
                        if !ok {
                            return Err(TopologyError::UnknownAdapter(*a));
                        }
                    }
                    Port::Switch(s) if !switches.contains(s) => {
                        return Err(TopologyError::UnknownSwitch(s.clone()));
                    }
                    Port::Switch(_) => {}
                }
            }
            if link.a == link.b {
                return Err(TopologyError::SelfLink(link.a.clone()));
            }
            adjacency
                .entry(link.a.clone())
                .or_default()
                .push((link.b.clone(), i));
            adjacency
                .entry(link.b.clone())
                .or_default()
                .push((link.a.clone(), i));
        }
        Ok(Self {
            hosts: by_node,
            switches,
            links,
            adjacency,
        })
    }

    /// Hosts in node order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    /// One host.
    pub fn host(&self, node: NodeId) -> Option<&Host> {
        self.hosts.get(&node)
    }

    /// Switch names.
    pub fn switches(&self) -> impl Iterator<Item = &String> {
        self.switches.iter()
    }

    /// Links.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Every adapter with its profile.
    pub fn adapters(&self) -> impl Iterator<Item = (AdapterId, &AdapterProfile)> {
        self.hosts.values().flat_map(|h| {
            h.adapters.iter().enumerate().map(move |(i, p)| {
                (
                    AdapterId {
                        node: h.node,
                        index: u8::try_from(i).unwrap_or(u8::MAX),
                    },
                    p,
                )
            })
        })
    }

    /// Shortest route (fewest links; ties broken by port order, so deterministic) between two adapters.
    pub fn route(&self, from: AdapterId, to: AdapterId) -> Option<Route> {
        let start = Port::Adapter(from);
        let goal = Port::Adapter(to);
        if from == to {
            return Some(Route {
                ports: vec![start],
                hops: 0,
                narrowest_mb_per_s: u32::MAX,
            });
        }
        let mut previous: BTreeMap<Port, (Port, usize)> = BTreeMap::new();
        let mut queue = VecDeque::from([start.clone()]);
        let mut seen = BTreeSet::from([start.clone()]);
        while let Some(port) = queue.pop_front() {
            if port == goal {
                break;
            }
            // Traffic crosses switches, never another host's adapter.
            if port != start && matches!(port, Port::Adapter(_)) {
                continue;
            }
            for (next, link) in self.adjacency.get(&port).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    previous.insert(next.clone(), (port.clone(), *link));
                    queue.push_back(next.clone());
                }
            }
        }
        let mut ports = vec![goal.clone()];
        let mut narrowest = u32::MAX;
        let mut at = goal;
        while at != start {
            let (prev, link) = previous.get(&at)?;
            narrowest = narrowest.min(self.links[*link].mb_per_s());
            ports.push(prev.clone());
            at = prev.clone();
        }
        ports.reverse();
        Some(Route {
            hops: ports.len() - 1,
            ports,
            narrowest_mb_per_s: narrowest,
        })
    }

    /// The best adapter pair between two hosts: fewest hops, then widest.
    pub fn best_route(&self, from: NodeId, to: NodeId) -> Option<(AdapterId, AdapterId, Route)> {
        let ids = |n: NodeId| -> Vec<AdapterId> {
            self.adapters()
                .filter(|(a, _)| a.node == n)
                .map(|(a, _)| a)
                .collect()
        };
        let mut best: Option<(AdapterId, AdapterId, Route)> = None;
        for a in ids(from) {
            for b in ids(to) {
                if let Some(r) = self.route(a, b) {
                    let better = best.as_ref().is_none_or(|(_, _, cur)| {
                        (r.hops, std::cmp::Reverse(r.narrowest_mb_per_s))
                            < (cur.hops, std::cmp::Reverse(cur.narrowest_mb_per_s))
                    });
                    if better {
                        best = Some((a, b, r));
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> AdapterProfile {
        AdapterProfile::named("dolphin-pxh830-32g").expect("shipped")
    }

    fn host(n: u32) -> Host {
        Host {
            node: NodeId(n),
            name: format!("h{n}"),
            adapters: vec![profile()],
        }
    }

    fn port(s: &str) -> Port {
        s.parse().expect("port")
    }

    #[test]
    fn route_through_switch_has_two_hops() {
        let t = Topology::new(
            vec![host(1), host(2)],
            vec!["sw".into()],
            vec![
                Link {
                    a: port("n1/a0"),
                    b: port("switch:sw"),
                    generation: 3,
                    width: 16,
                },
                Link {
                    a: port("n2/a0"),
                    b: port("switch:sw"),
                    generation: 3,
                    width: 8,
                },
            ],
        )
        .expect("valid");
        let r = t
            .route(
                AdapterId {
                    node: NodeId(1),
                    index: 0,
                },
                AdapterId {
                    node: NodeId(2),
                    index: 0,
                },
            )
            .expect("route");
        assert_eq!((r.hops, r.narrowest_mb_per_s), (2, 985 * 8));
    }

    #[test]
    fn route_never_transits_another_hosts_adapter() {
        // n1 - n2 - n3 chained through n2's single adapter: n2 is not a switch, so n1 cannot reach n3.
        let t = Topology::new(
            vec![host(1), host(2), host(3)],
            vec![],
            vec![
                Link {
                    a: port("n1/a0"),
                    b: port("n2/a0"),
                    generation: 3,
                    width: 8,
                },
                Link {
                    a: port("n2/a0"),
                    b: port("n3/a0"),
                    generation: 3,
                    width: 8,
                },
            ],
        )
        .expect("valid");
        assert_eq!(
            t.route(
                AdapterId {
                    node: NodeId(1),
                    index: 0
                },
                AdapterId {
                    node: NodeId(3),
                    index: 0
                }
            ),
            None
        );
    }

    #[test]
    fn link_to_unknown_adapter_is_rejected() {
        let err = Topology::new(
            vec![host(1)],
            vec![],
            vec![Link {
                a: port("n1/a0"),
                b: port("n9/a0"),
                generation: 3,
                width: 8,
            }],
        );
        assert_eq!(
            err,
            Err(TopologyError::UnknownAdapter(AdapterId {
                node: NodeId(9),
                index: 0
            }))
        );
    }

    #[test]
    fn duplicate_node_is_rejected() {
        assert_eq!(
            Topology::new(vec![host(1), host(1)], vec![], vec![]),
            Err(TopologyError::DuplicateNode(NodeId(1)))
        );
    }
}
