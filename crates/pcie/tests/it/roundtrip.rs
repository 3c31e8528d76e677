//! decode(build(x)) == x for the values a builder takes, and dump write/parse round trips.

use pcipool_pcie::dump::{parse_dump, write_dump};
use pcipool_pcie::{Bdf, ConfigBuilder, LinkSpeed, PcieOptions, SriovOptions, decode_with_sizes};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn built_values_decode_back(
        vendor in 0u16..0xffff,
        device in any::<u16>(),
        bar_log2 in 12u32..36,
        speed in 1u8..=6,
        width_log2 in 0u32..=4,
        total_vfs in 1u16..512,
        flr in any::<bool>(),
        rebar_sizes in proptest::collection::btree_set(20u32..=40, 1..8),
    ) {
        let size = 1u64 << bar_log2;
        let width = 1u8 << width_log2;
        let mut pcie = PcieOptions::endpoint(LinkSpeed::from_field(speed), width);
        pcie.flr = flr;
        let supported: Vec<u64> = rebar_sizes.iter().map(|l| 1u64 << l).collect();
        let current = supported[0];
        let built = ConfigBuilder::endpoint(vendor, device, 0x12_00_00)
            .bar64(0, size * 4, size, true)
            .pcie(pcie)
            .sriov(&SriovOptions {
                total_vfs,
                num_vfs: 0,
                first_vf_offset: 1,
                vf_stride: 1,
                vf_device_id: device,
                vf_bars: vec![],
            })
            .resizable_bar(&[(0, current, &supported)])
            .build();
        let facts = decode_with_sizes(&built.bytes, &built.sizes).expect("builder output decodes");
        let e = facts.pci_express().expect("PCIe");
        let rebar = &facts.resizable_bar().expect("rebar").entries[0];
        prop_assert_eq!(
            (facts.vendor_id, facts.device_id, facts.bars[0].address, facts.bars[0].size),
            (vendor, device, size * 4, Some(size))
        );
        prop_assert_eq!((e.link.speed.field(), e.link.width, e.flr_capable), (speed, width, flr));
        prop_assert_eq!(facts.sriov().map(|s| s.total_vfs), Some(total_vfs));
        prop_assert_eq!((rebar.current_size, rebar.supported_sizes.clone()), (current, supported));
        prop_assert!(facts.warnings.is_empty());
    }

    #[test]
    fn dump_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..4096), bus in any::<u8>()) {
        let bdf = Bdf::new(0, bus, 0, 0).expect("valid");
        let mut text = String::new();
        write_dump(&mut text, bdf, "Device", &bytes);
        let parsed = parse_dump(&text).expect("own output parses");
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(&parsed[0].bytes, &bytes);
        prop_assert_eq!(parsed[0].bdf, bdf);
    }
}
