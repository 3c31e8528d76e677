//! Qualification: may this device be pooled, for which access model, and why (not).
//!
//! The seed's first step is "Prepare": qualify the device, driver, reset behaviour, lender-side
//! peer-to-peer capability, NTB mapping size, IOMMU policy and platform support for the selected access
//! model. This crate is that step as pure rules over gathered facts ([`DeviceContext`],
//! [`PlatformFacts`]): no I/O, so every rule is tested on constructed facts, and the Linux backend and
//! the simulator only have to gather.
//!
//! Each finding has a stable [`Code`], a [`Severity`], the evidence it used and a remedy. An operator
//! may accept a finding in the pool policy with a written reason ([`Override`]); `BACKS_ROOT_FS` cannot
//! be overridden.
//!
//! # Layout
//! - [`facts`]: the input model.
//! - [`finding`]: codes, severities, verdicts, access models.
//! - [`gather`]: rule input from any backend's inventory.
//! - [`modalias`]: native-driver matching against a borrower's module lists.
//! - [`profile`]: NTB adapter profiles and mapping fit.
//! - [`rules`]: the rule table.
#![deny(missing_docs)]

pub mod facts;
pub mod finding;
pub mod gather;
pub mod modalias;
pub mod report;
/// Adapter profiles live in the fabric model; re-exported here because rules speak of them.
pub use pcipool_fabric::profile;
pub mod rules;

use serde::{Deserialize, Serialize};

pub use facts::{DeviceContext, IommuMode, NativeDriver, Neighbour, PathHop, PlatformFacts};
pub use finding::{AccessModel, Code, Finding, Severity, Verdict};
pub use profile::AdapterProfile;
pub use rules::{Input, RULES};

/// An operator's acceptance of a finding, from the pool policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// The finding accepted.
    pub code: Code,
    /// Device it applies to (`None` = every device).
    pub bdf: Option<pcipool_pcie::Bdf>,
    /// Model it applies to (`None` = every model).
    pub model: Option<AccessModel>,
    /// Why it is acceptable. Required: an override without a reason is rejected when the policy loads.
    pub reason: String,
}

/// The result for one device and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelResult {
    /// The model.
    pub model: AccessModel,
    /// The verdict after overrides.
    pub verdict: Verdict,
    /// Findings, failures first.
    pub findings: Vec<Finding>,
}

/// Runs every rule for one model and applies overrides.
pub fn qualify(input: &Input<'_>, model: AccessModel, overrides: &[Override]) -> ModelResult {
    let mut findings: Vec<Finding> = RULES.iter().flat_map(|r| (r.check)(input, model)).collect();
    for f in &mut findings {
        let accepted = overrides.iter().find(|o| {
            o.code == f.code
                && o.bdf.is_none_or(|b| b == input.device.bdf)
                && o.model.is_none_or(|m| m == model)
        });
        if let Some(o) = accepted
            && f.code.overridable()
            && !o.reason.trim().is_empty()
        {
            f.overridden = Some(o.reason.clone());
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let worst = findings
        .iter()
        .filter(|f| f.overridden.is_none())
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Info);
    let verdict = match worst {
        Severity::Fail => Verdict::Fail,
        Severity::Warn => Verdict::Warn,
        Severity::Info => Verdict::Pass,
    };
    ModelResult {
        model,
        verdict,
        findings,
    }
}
