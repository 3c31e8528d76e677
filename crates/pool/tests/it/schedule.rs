use std::collections::{BTreeMap, HashMap};

use pcipool_fabric::{AdapterProfile, Fdid, Host, Link, NodeId, Topology};
use pcipool_pool::DeviceState;
use pcipool_pool::schedule::{
    DeviceClass, DeviceInfo, PlacementIndex, PoolView, Request, RouteCache, Selector, Strategy,
    place,
};
use pcipool_qualify::AccessModel;
use proptest::prelude::*;

fn topology(hosts: u32, leaves: u32) -> Topology {
    let p = AdapterProfile::named("idt").expect("shipped");
    let port = |s: String| s.parse().expect("port");
    let mut links: Vec<Link> = (0..leaves)
        .map(|l| Link {
            a: port(format!("switch:leaf{l}")),
            b: port("switch:spine".into()),
            generation: 3,
            width: 16,
        })
        .collect();
    links.extend((1..=hosts).map(|n| Link {
        a: port(format!("n{n}/a0")),
        b: port(format!("switch:leaf{}", n % leaves)),
        generation: 3,
        width: 8,
    }));
    let mut switches: Vec<String> = (0..leaves).map(|l| format!("leaf{l}")).collect();
    switches.push("spine".into());
    Topology::new(
        (1..=hosts)
            .map(|n| Host {
                node: NodeId(n),
                name: format!("h{n}"),
                adapters: vec![p.clone()],
            })
            .collect(),
        switches,
        links,
    )
    .expect("valid")
}

const CLASSES: [u32; 4] = [0x01_08_02, 0x03_00_00, 0x02_00_00, 0x12_00_00];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn index_places_exactly_like_the_scan(
        hosts in 3u32..12,
        devs in proptest::collection::vec((1u32..12, 0usize..4, any::<bool>(), 0u32..4), 1..40),
        borrower in 1u32..12,
        count in 1u32..4,
        class in proptest::option::of(0usize..4),
        pack in any::<bool>(),
        loads in proptest::collection::vec(0u32..5, 12),
    ) {
        let topo = topology(hosts, 3);
        let mut infos = Vec::new();
        let mut states = Vec::new();
        for (i, (node, c, free, _)) in devs.iter().enumerate() {
            let node = 1 + (node - 1) % hosts;
            let bus = u8::try_from(i + 1).unwrap_or(1);
            infos.push(DeviceInfo {
                fdid: Fdid { node: NodeId(node), bdf: pcipool_pcie::Bdf::new(0, bus, 0, 0).expect("valid"), vf: None },
                class: CLASSES[*c],
                vendor_id: 1,
                device_id: 1,
                name: "d".into(),
                labels: BTreeMap::new(),
                link_width: 8,
                link_gts_x10: 80,
                largest_bar: 1 << 20,
                models: vec![AccessModel::Lend],
                bars: vec![],
                driver: None,
                function: None,
                local_driver: None,
                local_vfs: 0,
            });
            states.push(if *free { DeviceState::Available } else { DeviceState::Maintenance });
        }
        let load: HashMap<NodeId, u32> = loads.iter().enumerate().map(|(i, l)| (NodeId(u32::try_from(i + 1).unwrap_or(1)), *l)).collect();
        let request = Request {
            selector: Selector { class: class.map(|c| DeviceClass::of(CLASSES[c])), ..Selector::default() },
            count,
            model: AccessModel::Lend,
            borrower: NodeId(1 + (borrower - 1) % hosts),
            max_sharers: None,
            request_id: None,
        };
        let strategy = if pack { Strategy::Pack } else { Strategy::Spread };
        let scan = place(&request, infos.iter().zip(&states), &load, &topo, &mut RouteCache::default(), strategy);
        let indexed = PlacementIndex::new(&infos).place(&request, PoolView { devices: &infos, states: &states, lender_load: &load, topology: &topo }, &mut RouteCache::default(), strategy);
        prop_assert_eq!(scan, indexed);
    }
}
