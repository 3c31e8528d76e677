use std::collections::BTreeMap;

use pcipool_fabric::{
    AdapterProfile, Fabric, Fdid, Grant, Host, LeaseId, Link, MappingKind, NodeId, Port, Topology,
};
use pcipool_pcie::Bdf;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Grant {
        borrower: usize,
        lender: usize,
        device: u8,
    },
    MapBar {
        lease: usize,
        bar: u8,
        size_log2: u32,
    },
    MapDma {
        lease: usize,
        size_log2: u32,
        base: u64,
    },
    Unmap {
        pick: usize,
    },
    Release {
        lease: usize,
    },
    HostCrash {
        node: usize,
    },
    ProbeAccess {
        node: usize,
        pick: usize,
        delta: u64,
    },
    ProbeDma {
        lease: usize,
        pick: usize,
        delta: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..8, 0usize..8, 0u8..4).prop_map(|(borrower, lender, device)| Op::Grant {
            borrower,
            lender,
            device
        }),
        (0usize..16, 0u8..6, 12u32..36).prop_map(|(lease, bar, size_log2)| Op::MapBar {
            lease,
            bar,
            size_log2
        }),
        (0usize..16, 12u32..34, any::<u32>()).prop_map(|(lease, size_log2, base)| Op::MapDma {
            lease,
            size_log2,
            base: u64::from(base) << 12
        }),
        (0usize..32).prop_map(|pick| Op::Unmap { pick }),
        (0usize..16).prop_map(|lease| Op::Release { lease }),
        (0usize..8).prop_map(|node| Op::HostCrash { node }),
        (0usize..8, 0usize..32, 0u64..(1 << 40)).prop_map(|(node, pick, delta)| Op::ProbeAccess {
            node,
            pick,
            delta
        }),
        (0usize..16, 0usize..32, 0u64..(1 << 40)).prop_map(|(lease, pick, delta)| Op::ProbeDma {
            lease,
            pick,
            delta
        }),
    ]
}

/// 2..6 hosts, each with 1 or 2 adapters of a random shipped profile, all wired to one switch or in
/// back-to-back pairs.
fn topology() -> impl Strategy<Value = Topology> {
    let profiles = AdapterProfile::builtin();
    (
        2usize..6,
        proptest::collection::vec((0usize..7, any::<bool>()), 6),
        any::<bool>(),
    )
        .prop_map(move |(n, choices, switched)| {
            let hosts: Vec<Host> = (0..n)
                .map(|i| {
                    let (p, two) = choices[i];
                    let profile = profiles[p % profiles.len()].clone();
                    let adapters = if two {
                        vec![profile.clone(), profile]
                    } else {
                        vec![profile]
                    };
                    Host {
                        node: NodeId(u32::try_from(i + 1).unwrap_or(1)),
                        name: format!("h{i}"),
                        adapters,
                    }
                })
                .collect();
            let port = |s: String| -> Port { s.parse().expect("generated port") };
            let mut links = Vec::new();
            let switches = if switched {
                vec!["sw".to_owned()]
            } else {
                vec![]
            };
            for (i, h) in hosts.iter().enumerate() {
                if switched {
                    links.push(Link {
                        a: port(format!("{}/a0", h.node)),
                        b: port("switch:sw".into()),
                        generation: 3,
                        width: 8,
                    });
                } else if i % 2 == 1 {
                    links.push(Link {
                        a: port(format!("{}/a0", hosts[i - 1].node)),
                        b: port(format!("{}/a0", h.node)),
                        generation: 3,
                        width: 8,
                    });
                }
            }
            Topology::new(hosts, switches, links).expect("generated topology is valid")
        })
}

fn lease_at(active: &BTreeMap<LeaseId, Grant>, i: usize) -> Option<(LeaseId, Grant)> {
    if active.is_empty() {
        return None;
    }
    active.iter().nth(i % active.len()).map(|(l, g)| (*l, *g))
}

fn mapping_at(fabric: &Fabric, i: usize) -> Option<pcipool_fabric::Mapping> {
    let all: Vec<_> = fabric.mappings().cloned().collect();
    if all.is_empty() {
        None
    } else {
        Some(all[i % all.len()].clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn isolation_holds_and_nothing_leaks(topo in topology(), ops in proptest::collection::vec(op(), 1..120)) {
        let nodes: Vec<NodeId> = topo.hosts().map(|h| h.node).collect();
        let mut fabric = Fabric::new(topo);
        let mut active: BTreeMap<LeaseId, Grant> = BTreeMap::new();
        let mut next_lease = 1u64;
        for op in ops {
            match op {
                Op::Grant { borrower, lender, device } => {
                    let (b, l) = (nodes[borrower % nodes.len()], nodes[lender % nodes.len()]);
                    if b != l {
                        let bdf = Bdf::new(0, device + 1, 0, 0).expect("valid");
                        active.insert(LeaseId(next_lease), Grant { fdid: Fdid { node: l, bdf, vf: None }, borrower: b });
                        next_lease += 1;
                    }
                }
                Op::MapBar { lease, bar, size_log2 } => {
                    if let Some((id, g)) = lease_at(&active, lease) {
                        let _ = fabric.map_bar(id, g.fdid, bar, 1u64 << size_log2, g.borrower);
                    }
                }
                Op::MapDma { lease, size_log2, base } => {
                    if let Some((id, g)) = lease_at(&active, lease) {
                        let _ = fabric.map_dma(id, g.fdid, g.borrower, base, 1u64 << size_log2);
                    }
                }
                Op::Unmap { pick } => {
                    if let Some(m) = mapping_at(&fabric, pick) {
                        prop_assert!(fabric.unmap(m.id).is_some());
                        prop_assert!(fabric.unmap(m.id).is_none());
                    }
                }
                Op::Release { lease } => {
                    if let Some((id, _)) = lease_at(&active, lease) {
                        fabric.unmap_lease(id);
                        active.remove(&id);
                    }
                }
                Op::HostCrash { node } => {
                    // The control plane fences every lease touching the lost host, then the fabric drops them.
                    let lost = nodes[node % nodes.len()];
                    fabric.unmap_node(lost);
                    active.retain(|_, g| g.borrower != lost && g.fdid.node != lost);
                }
                Op::ProbeAccess { node, pick, delta } => {
                    let host = nodes[node % nodes.len()];
                    let addr = mapping_at(&fabric, pick).map_or(delta, |m| m.host_addr.wrapping_add(delta % (m.size * 2)));
                    if let Ok(t) = fabric.translate_access(host, addr) {
                        // Reachable only from a host holding an active lease for that device.
                        prop_assert!(active.values().any(|g| g.borrower == host && g.fdid == t.fdid));
                    }
                }
                Op::ProbeDma { lease, pick, delta } => {
                    if let Some((_, g)) = lease_at(&active, lease) {
                        let addr = mapping_at(&fabric, pick).map_or(delta, |m| m.host_addr.wrapping_add(delta % (m.size * 2)));
                        if let Ok(t) = fabric.translate_dma(g.fdid, addr) {
                            // DMA reaches only memory a current borrower mapped for this very device.
                            let m = fabric.mappings().find(|m| m.id == t.mapping).cloned();
                            let owner_ok = matches!(m.map(|m| m.kind), Some(MappingKind::Dma { fdid, .. }) if fdid == g.fdid);
                            prop_assert!(owner_ok, "DMA reached a window of another device");
                            prop_assert!(active.values().any(|a| a.fdid == g.fdid && a.borrower == t.borrower));
                        }
                    }
                }
            }
            prop_assert_eq!(fabric.check_isolation(&active), Ok(()));
        }
        let leases: Vec<LeaseId> = active.keys().copied().collect();
        for l in leases {
            fabric.unmap_lease(l);
        }
        prop_assert!(fabric.is_idle());
    }
}

#[test]
fn check_isolation_catches_an_unfenced_mapping() {
    let topo = Topology::new(
        vec![
            Host {
                node: NodeId(1),
                name: "a".into(),
                adapters: vec![AdapterProfile::named("idt").expect("shipped")],
            },
            Host {
                node: NodeId(2),
                name: "b".into(),
                adapters: vec![AdapterProfile::named("idt").expect("shipped")],
            },
        ],
        vec![],
        vec![Link {
            a: "n1/a0".parse().expect("port"),
            b: "n2/a0".parse().expect("port"),
            generation: 3,
            width: 8,
        }],
    )
    .expect("valid");
    let mut fabric = Fabric::new(topo);
    let fdid: Fdid = "n2:0000:03:00.0".parse().expect("fdid");
    let id = fabric
        .map_bar(LeaseId(7), fdid, 0, 1 << 14, NodeId(1))
        .expect("maps");
    // The lease ended but nobody tore the mapping down.
    let no_leases = BTreeMap::new();
    assert_eq!(
        fabric.check_isolation(&no_leases),
        Err(pcipool_fabric::IsolationViolation::MappingWithoutLease {
            mapping: id,
            lease: LeaseId(7)
        })
    );
}

#[test]
fn access_after_unmap_faults() {
    let topo = Topology::new(
        vec![
            Host {
                node: NodeId(1),
                name: "a".into(),
                adapters: vec![AdapterProfile::named("idt").expect("shipped")],
            },
            Host {
                node: NodeId(2),
                name: "b".into(),
                adapters: vec![AdapterProfile::named("idt").expect("shipped")],
            },
        ],
        vec![],
        vec![Link {
            a: "n1/a0".parse().expect("port"),
            b: "n2/a0".parse().expect("port"),
            generation: 3,
            width: 8,
        }],
    )
    .expect("valid");
    let mut fabric = Fabric::new(topo);
    let fdid: Fdid = "n2:0000:03:00.0".parse().expect("fdid");
    let id = fabric
        .map_bar(LeaseId(1), fdid, 0, 1 << 14, NodeId(1))
        .expect("maps");
    let addr = fabric
        .mappings()
        .next()
        .map(|m| m.host_addr)
        .expect("one mapping");
    let before = fabric
        .translate_access(NodeId(1), addr + 8)
        .map(|t| t.offset);
    fabric.unmap(id);
    assert_eq!(
        (before, fabric.translate_access(NodeId(1), addr + 8)),
        (
            Ok(8),
            Err(pcipool_fabric::AccessFault::Unmapped {
                node: NodeId(1),
                addr: addr + 8
            })
        )
    );
}

#[test]
fn requester_slots_run_out() {
    let pxh = AdapterProfile::named("dolphin-pxh830-32g").expect("shipped");
    let topo = Topology::new(
        vec![
            Host {
                node: NodeId(1),
                name: "a".into(),
                adapters: vec![pxh.clone()],
            },
            Host {
                node: NodeId(2),
                name: "b".into(),
                adapters: vec![pxh],
            },
        ],
        vec![],
        vec![Link {
            a: "n1/a0".parse().expect("port"),
            b: "n2/a0".parse().expect("port"),
            generation: 3,
            width: 8,
        }],
    )
    .expect("valid");
    let mut fabric = Fabric::new(topo);
    // 30 usable requester entries on a PXH830 (32 minus 2 for CPUs).
    for d in 0..30u8 {
        let fdid = Fdid {
            node: NodeId(2),
            bdf: Bdf::new(0, d + 1, 0, 0).expect("valid"),
            vf: None,
        };
        fabric
            .map_bar(LeaseId(u64::from(d)), fdid, 0, 4096, NodeId(1))
            .expect("fits");
    }
    let fdid = Fdid {
        node: NodeId(2),
        bdf: Bdf::new(0, 200, 0, 0).expect("valid"),
        vf: None,
    };
    let err = fabric.map_bar(LeaseId(99), fdid, 0, 4096, NodeId(1));
    assert!(matches!(
        err,
        Err(pcipool_fabric::MapError::RequesterSlots { slots: 30, .. })
    ));
}

#[test]
fn second_device_cannot_dma_into_first_devices_window() {
    let topo = Topology::new(
        vec![
            Host {
                node: NodeId(1),
                name: "a".into(),
                adapters: vec![AdapterProfile::named("idt").expect("shipped")],
            },
            Host {
                node: NodeId(2),
                name: "b".into(),
                adapters: vec![AdapterProfile::named("idt").expect("shipped")],
            },
        ],
        vec![],
        vec![Link {
            a: "n1/a0".parse().expect("port"),
            b: "n2/a0".parse().expect("port"),
            generation: 3,
            width: 8,
        }],
    )
    .expect("valid");
    let mut fabric = Fabric::new(topo);
    let first: Fdid = "n2:0000:03:00.0".parse().expect("fdid");
    let second: Fdid = "n2:0000:04:00.0".parse().expect("fdid");
    fabric
        .map_dma(LeaseId(1), first, NodeId(1), 0x1_0000_0000, 1 << 20)
        .expect("maps");
    let addr = fabric
        .mappings()
        .next()
        .map(|m| m.host_addr)
        .expect("one mapping");
    assert_eq!(
        fabric.translate_dma(second, addr),
        Err(pcipool_fabric::AccessFault::NotForThisDevice {
            fdid: second,
            addr,
            owner: first
        })
    );
}
