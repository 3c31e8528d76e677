//! Findings, verdicts and access models.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a device would be used.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AccessModel {
    /// Exclusive: hot-added on one borrower, native driver.
    Lend,
    /// One SR-IOV virtual function lent; different VFs to different borrowers.
    Vf,
    /// Application-managed: several hosts map BARs and DMA segments and coordinate themselves.
    Shared,
}

impl AccessModel {
    /// Every model, in report order.
    pub const ALL: [AccessModel; 3] = [Self::Lend, Self::Vf, Self::Shared];

    /// The CLI and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lend => "lend",
            Self::Vf => "vf",
            Self::Shared => "shared",
        }
    }
}

impl fmt::Display for AccessModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An access model name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown access model '{0}' (expected lend, vf or shared)")]
pub struct UnknownModel(pub String);

impl FromStr for AccessModel {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lend" => Ok(Self::Lend),
            "vf" => Ok(Self::Vf),
            "shared" => Ok(Self::Shared),
            other => Err(UnknownModel(other.to_owned())),
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; does not affect the verdict.
    Info,
    /// Poolable, with a risk the operator should accept knowingly.
    Warn,
    /// Not poolable for this model until fixed.
    Fail,
}

/// The outcome for one device and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No warnings or failures.
    Pass,
    /// Warnings only.
    Warn,
    /// At least one failure.
    Fail,
}

/// Stable finding codes. Their string forms are an interface (policy files and scripts use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// Backs the root filesystem.
    BacksRootFs,
    /// Backs another mounted filesystem.
    BacksMountedFs,
    /// Carries the default route.
    BacksDefaultRoute,
    /// The lender's own NTB adapter or a bridge above it.
    FabricPathDevice,
    /// A bridge, not an endpoint.
    NotAnEndpoint,
    /// No reset method at all.
    ResetNone,
    /// Only a secondary bus reset, which also resets everything else under the bridge.
    ResetBusOnly,
    /// A bus reset would hit siblings that are in use.
    BusResetSiblingsBusy,
    /// Reset methods derived from config space; the kernel's list was not available.
    ResetMethodsDerived,
    /// The lender has no IOMMU.
    IommuOff,
    /// The IOMMU is in pass-through mode.
    IommuPassthrough,
    /// Other endpoints share the device's IOMMU group.
    IommuGroupShared,
    /// No driver for the device on the borrower.
    NoNativeDriver,
    /// The borrower's drivers were not checked.
    NativeDriverUnknown,
    /// `driver_override` is missing, so binding cannot be steered per device.
    DriverOverrideUnsupported,
    /// Legacy INTx only: cannot be delivered across an NTB.
    IntxOnly,
    /// No SR-IOV capability (for the `vf` model).
    SriovAbsent,
    /// The kernel exposes no SR-IOV controls.
    SriovUnsupportedKernel,
    /// P2P between device and NTB goes through a switch (good).
    P2pViaSwitch,
    /// P2P crosses a root complex the kernel trusts for P2P.
    P2pThroughTrustedRc,
    /// P2P crosses a root complex not known to forward P2P.
    P2pThroughUntrustedRc,
    /// ACS request redirect on the path sends P2P up to the root complex.
    AcsRedirectForcesRc,
    /// A BAR does not fit the adapter's windows.
    BarExceedsWindow,
    /// The requested DMA window does not fit the adapter's windows.
    DmaWindowExceeds,
    /// A local driver is bound and will be unbound when the device is made available.
    LocalDriverBound,
}

impl Code {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [Code; 25] = [
        Self::BacksRootFs,
        Self::BacksMountedFs,
        Self::BacksDefaultRoute,
        Self::FabricPathDevice,
        Self::NotAnEndpoint,
        Self::ResetNone,
        Self::ResetBusOnly,
        Self::BusResetSiblingsBusy,
        Self::ResetMethodsDerived,
        Self::IommuOff,
        Self::IommuPassthrough,
        Self::IommuGroupShared,
        Self::NoNativeDriver,
        Self::NativeDriverUnknown,
        Self::DriverOverrideUnsupported,
        Self::IntxOnly,
        Self::SriovAbsent,
        Self::SriovUnsupportedKernel,
        Self::P2pViaSwitch,
        Self::P2pThroughTrustedRc,
        Self::P2pThroughUntrustedRc,
        Self::AcsRedirectForcesRc,
        Self::BarExceedsWindow,
        Self::DmaWindowExceeds,
        Self::LocalDriverBound,
    ];

    /// Codes no policy override can silence.
    pub fn overridable(self) -> bool {
        !matches!(self, Self::BacksRootFs)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name is the stable string.
        let name = format!("{self:?}");
        let mut out = String::with_capacity(name.len() + 4);
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        f.write_str(&out)
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code.
    pub code: Code,
    /// Severity before any override.
    pub severity: Severity,
    /// What was found, in a sentence.
    pub message: String,
    /// The facts used, by name.
    pub evidence: BTreeMap<String, String>,
    /// What to do about it.
    pub remedy: String,
    /// The operator's written justification, when a policy override accepted this finding.
    pub overridden: Option<String>,
}

impl Finding {
    /// A finding with no evidence yet.
    pub fn new(
        code: Code,
        severity: Severity,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self {
            code,
            severity,
            message: message.into(),
            evidence: BTreeMap::new(),
            remedy: remedy.into(),
            overridden: None,
        }
    }

    /// Adds one piece of evidence.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.evidence.insert(key.to_owned(), value.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_display_is_screaming_snake() {
        assert_eq!(
            Code::BusResetSiblingsBusy.to_string(),
            "BUS_RESET_SIBLINGS_BUSY"
        );
    }

    #[test]
    fn code_display_keeps_p2p_together() {
        assert_eq!(
            Code::P2pThroughUntrustedRc.to_string(),
            "P2P_THROUGH_UNTRUSTED_RC"
        );
    }

    #[test]
    fn code_display_matches_serde_name() {
        let mismatched: Vec<String> = Code::ALL
            .iter()
            .filter(|c| serde_json::to_string(c).ok() != Some(format!("\"{c}\"")))
            .map(ToString::to_string)
            .collect();
        assert_eq!(mismatched, Vec::<String>::new());
    }

    #[test]
    fn root_fs_is_never_overridable() {
        assert!(!Code::BacksRootFs.overridable());
    }
}
