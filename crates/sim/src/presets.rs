//! Device presets by name, from `pcipool_pcie::presets`, with the drivers that match them on a simulated
//! host.

use pcipool_pcie::{BuiltConfig, presets};

/// Preset names a description may use.
pub const NAMES: &[&str] = &[
    "nvme",
    "gpu",
    "sriov-nic",
    "fpga",
    "ntb",
    "every-capability",
];

/// Whether a preset exists.
pub fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

/// Builds a preset.
pub fn build(name: &str) -> Option<BuiltConfig> {
    let b = match name {
        "nvme" => presets::nvme_ssd(),
        "gpu" => presets::gpu(),
        "sriov-nic" => presets::sriov_nic(),
        "fpga" => presets::fpga(),
        "ntb" => presets::ntb_adapter(),
        "every-capability" => presets::every_capability(),
        _ => return None,
    };
    Some(b.build())
}

/// Drivers every simulated host has: (name, modalias glob, probe ms, remove ms). Patterns follow the real
/// modules' aliases (class-based for nvme, vendor/device for the rest).
pub const DRIVERS: &[(&str, &str, u64, u64)] = &[
    ("nvme", "pci:v*d*sv*sd*bc01sc08i02*", 30, 10),
    (
        "mlx5_core",
        "pci:v000015B3d0000101[78]sv*sd*bc*sc*i*",
        200,
        50,
    ),
    ("nouveau", "pci:v000010DEd*sv*sd*bc03sc*i*", 500, 100),
    ("xdma", "pci:v000010EEd*sv*sd*bc*sc*i*", 20, 10),
    ("ntb_hw_plx", "pci:v000010B5d000087B0sv*sd*bc*sc*i*", 10, 10),
];

/// The simulated hosts' driver aliases, in the form qualification matches against.
pub fn driver_aliases() -> Vec<pcipool_qualify::modalias::Alias> {
    DRIVERS
        .iter()
        .map(|(name, pattern, ..)| pcipool_qualify::modalias::Alias {
            pattern: (*pattern).to_owned(),
            module: (*name).to_owned(),
        })
        .collect()
}
