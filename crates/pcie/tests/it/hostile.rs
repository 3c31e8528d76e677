//! Hostile config spaces: random bytes, random corruption of realistic ones. The decoder must return
//! (facts or error) without panicking, and stay within its iteration bounds.

use pcipool_pcie::caps::MAX_CAPABILITIES;
use pcipool_pcie::ecaps::MAX_EXTENDED_CAPABILITIES;
use pcipool_pcie::{decode, derive_reset_methods, dump, presets};
use proptest::prelude::*;

fn preset_bytes() -> Vec<Vec<u8>> {
    presets::all()
        .into_iter()
        .map(|(_, b)| b.build().bytes)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4200)) {
        if let Ok(facts) = decode(&bytes) {
            prop_assert!(facts.capabilities.len() <= MAX_CAPABILITIES);
            prop_assert!(facts.extended_capabilities.len() <= MAX_EXTENDED_CAPABILITIES);
            let _ = derive_reset_methods(&facts, None);
        }
    }

    #[test]
    fn corrupted_presets_never_panic(
        which in 0usize..9,
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..64),
        len in prop_oneof![Just(64usize), Just(256usize), Just(4096usize), 64usize..4096],
    ) {
        let mut bytes = preset_bytes()[which].clone();
        for (at, value) in edits {
            bytes[at] = value;
        }
        bytes.truncate(len);
        if let Ok(facts) = decode(&bytes) {
            prop_assert!(facts.capabilities.len() <= MAX_CAPABILITIES);
            prop_assert!(facts.extended_capabilities.len() <= MAX_EXTENDED_CAPABILITIES);
        }
    }

    #[test]
    fn random_dump_text_never_panics(text in "[0-9a-fA-F:. \\t\\nxz-]{0,400}") {
        if let Ok(devices) = dump::parse_dump(&text) {
            for d in devices {
                prop_assert!(d.bytes.len() <= 4096);
                let _ = decode(&d.bytes);
            }
        }
    }
}
