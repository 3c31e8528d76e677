//! Any text: the dump parser must return devices or a line-numbered error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(devices) = pcipool_pcie::dump::parse_dump(&text) {
        for d in devices {
            let _ = pcipool_pcie::decode(&d.bytes);
        }
    }
});
