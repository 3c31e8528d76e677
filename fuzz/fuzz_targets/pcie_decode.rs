//! Any byte string: the decoder must return facts or an error, never panic, loop or blow up.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(facts) = pcipool_pcie::decode(data) {
        let _ = pcipool_pcie::derive_reset_methods(&facts, None);
        assert!(facts.capabilities.len() <= pcipool_pcie::caps::MAX_CAPABILITIES);
        assert!(facts.extended_capabilities.len() <= pcipool_pcie::ecaps::MAX_EXTENDED_CAPABILITIES);
    }
});
