//! Reset methods, derived the way Linux derives them (`pci_init_reset_methods` in
//! `drivers/pci/pci.c`), so pcipool agrees with what the kernel will actually do.
//!
//! The kernel probes, in order: device-specific quirk, ACPI `_RST`, PCIe FLR, AF FLR, PM (D3hot->D0),
//! bus/slot reset, CXL bus reset. The quirk and ACPI methods cannot be seen in config space; when sysfs
//! `reset_method` exists it is the authority and this derivation is the fallback and the cross-check.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::caps::CapabilityDetail;
use crate::decode::DeviceFacts;

/// A way to reset one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResetMethod {
    /// A device-specific quirk in the kernel.
    DeviceSpecific,
    /// ACPI `_RST`.
    Acpi,
    /// PCIe function level reset.
    Flr,
    /// Advanced-features FLR (conventional PCI).
    AfFlr,
    /// D3hot -> D0 transition (only when No_Soft_Reset is clear).
    Pm,
    /// Secondary bus reset at the parent bridge: resets every function below that bridge.
    Bus,
    /// CXL bus reset.
    CxlBus,
}

impl ResetMethod {
    /// The name sysfs `reset_method` uses.
    pub fn sysfs_name(self) -> &'static str {
        match self {
            Self::DeviceSpecific => "device_specific",
            Self::Acpi => "acpi",
            Self::Flr => "flr",
            Self::AfFlr => "af_flr",
            Self::Pm => "pm",
            Self::Bus => "bus",
            Self::CxlBus => "cxl_bus",
        }
    }

    /// Whether the method touches functions other than the target (a bus reset hits siblings).
    pub fn affects_siblings(self) -> bool {
        matches!(self, Self::Bus | Self::CxlBus)
    }
}

impl fmt::Display for ResetMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sysfs_name())
    }
}

/// A `reset_method` token the kernel does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reset method '{0}'")]
pub struct UnknownResetMethod(pub String);

impl FromStr for ResetMethod {
    type Err = UnknownResetMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "device_specific" => Self::DeviceSpecific,
            "acpi" => Self::Acpi,
            "flr" => Self::Flr,
            "af_flr" => Self::AfFlr,
            "pm" => Self::Pm,
            "bus" => Self::Bus,
            "cxl_bus" => Self::CxlBus,
            other => return Err(UnknownResetMethod(other.to_owned())),
        })
    }
}

impl Serialize for ResetMethod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResetMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where a function sits, for the bus-reset rule; config space alone cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BusPosition {
    /// The function sits on a root bus (no parent bridge to reset).
    pub on_root_bus: bool,
    /// Other functions share the bus: the kernel then refuses a bus reset for this function.
    pub has_siblings: bool,
}

/// Config-space-derived methods in the kernel's probe order: FLR, AF FLR, PM; then `bus` when the
/// position allows it (not on a root bus, not a bridge itself, no other function on the bus).
pub fn derive_reset_methods(
    facts: &DeviceFacts,
    position: Option<BusPosition>,
) -> Vec<ResetMethod> {
    let mut methods = Vec::new();
    if facts.pci_express().is_some_and(|e| e.flr_capable) {
        methods.push(ResetMethod::Flr);
    }
    let af_flr = facts.capabilities.iter().any(|c| {
        matches!(&c.detail, CapabilityDetail::AdvancedFeatures(af) if af.flr && af.transactions_pending)
    });
    if af_flr {
        methods.push(ResetMethod::AfFlr);
    }
    let pm_reset = facts
        .capabilities
        .iter()
        .any(|c| matches!(&c.detail, CapabilityDetail::PowerManagement(pm) if !pm.no_soft_reset));
    if pm_reset {
        methods.push(ResetMethod::Pm);
    }
    if let Some(pos) = position
        && !pos.on_root_bus
        && !pos.has_siblings
        && !facts.is_bridge()
    {
        methods.push(ResetMethod::Bus);
    }
    methods
}
