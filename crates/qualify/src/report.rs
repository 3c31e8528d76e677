//! A host's qualification report: every device judged for every model asked for, as JSON, a table or
//! Markdown. Pure: the caller gathers the facts and reads the files.

use std::fmt::Write as _;
use std::path::PathBuf;

use pcipool_backend::{DeviceRecord, HostInventory};
use pcipool_describe::text::human_size;
use pcipool_pcie::Bdf;
use serde::{Deserialize, Serialize};

use crate::ModelResult;
use crate::gather::device_context;
use crate::qualify;
use crate::{
    AccessModel, AdapterProfile, Finding, Input, Override, PlatformFacts, Severity, Verdict,
};

/// A pool policy file as qualification reads it: the `[[override]]` entries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default, rename = "override")]
    overrides: Vec<Override>,
}

/// The accepted findings of a policy file's text; every override must say why.
///
/// # Errors
/// Text that does not parse, or an override without a written reason.
pub fn parse_overrides(text: &str) -> Result<Vec<Override>, String> {
    let policy: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(o) = policy.overrides.iter().find(|o| o.reason.trim().is_empty()) {
        return Err(format!("override of {} has no written reason", o.code));
    }
    Ok(policy.overrides)
}

/// Why an adapter profile could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Neither a built-in name nor an existing file.
    #[error("no adapter profile '{spec}' (built-in: {builtin}; or give a TOML file)")]
    Unknown {
        /// What was asked for.
        spec: String,
        /// The built-in names.
        builtin: String,
    },
    /// The file could not be read.
    #[error("reading {spec}: {source}")]
    Unreadable {
        /// The file.
        spec: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a profile.
    #[error("{spec}: {why}")]
    Invalid {
        /// The file.
        spec: String,
        /// What is wrong.
        why: String,
    },
}

/// A built-in adapter profile by name, or one from a TOML file.
///
/// # Errors
/// [`ProfileError`].
pub fn load_profile(spec: &str) -> Result<AdapterProfile, ProfileError> {
    if let Some(p) = AdapterProfile::named(spec) {
        return Ok(p);
    }
    let path = std::path::Path::new(spec);
    if !path.exists() {
        let names: Vec<String> = AdapterProfile::builtin()
            .into_iter()
            .map(|p| p.name)
            .collect();
        return Err(ProfileError::Unknown {
            spec: spec.to_owned(),
            builtin: names.join(", "),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Unreadable {
        spec: spec.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ProfileError::Invalid {
        spec: spec.to_owned(),
        why: e.to_string(),
    })
}

/// One device's verdicts.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Class code.
    pub class: pcipool_pcie::ClassCode,
    /// Its name in words.
    pub name: String,
    /// One result per access model judged.
    pub models: Vec<ModelResult>,
}

/// A host's qualification: what it was judged with, and every device's verdicts.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The platform's facts.
    pub platform: PlatformFacts,
    /// The NTB adapter's profile.
    pub profile: AdapterProfile,
    /// The DMA window a borrower asks for, bytes.
    pub dma_window: u64,
    /// The lender's NTB adapter.
    pub ntb_adapter: Option<Bdf>,
    /// The borrower's module list, when one was given.
    pub borrower_modules: Option<PathBuf>,
    /// The models judged, in order.
    #[serde(skip)]
    pub models: Vec<AccessModel>,
    /// Every device asked for.
    pub devices: Vec<DeviceReport>,
}

/// What a host is judged with.
#[derive(Debug, Clone)]
pub struct Judging<'a> {
    /// The platform's facts.
    pub platform: PlatformFacts,
    /// The NTB adapter's profile.
    pub profile: AdapterProfile,
    /// The DMA window a borrower asks for, bytes.
    pub dma_window: u64,
    /// The lender's NTB adapter (found or given).
    pub ntb_adapter: Option<Bdf>,
    /// The borrower's module aliases and where they came from.
    pub borrower_modules: Option<(PathBuf, &'a [crate::modalias::Alias])>,
    /// Models to judge (empty: all).
    pub models: Vec<AccessModel>,
    /// The operator's accepted findings.
    pub overrides: &'a [Override],
}

impl Report {
    /// Judges each of `chosen` (devices of `inv`) for every model; `name` says what a device is.
    #[must_use]
    pub fn judge(
        inv: &HostInventory,
        chosen: &[&DeviceRecord],
        judging: Judging<'_>,
        name: impl Fn(&DeviceRecord) -> String,
    ) -> Self {
        let models = if judging.models.is_empty() {
            AccessModel::ALL.to_vec()
        } else {
            judging.models
        };
        let aliases = judging.borrower_modules.as_ref().map(|(_, a)| *a);
        let devices = chosen
            .iter()
            .map(|d| {
                let ctx = device_context(inv, d, judging.ntb_adapter, aliases);
                let input = Input {
                    device: &ctx,
                    platform: &judging.platform,
                    profile: &judging.profile,
                    dma_window: judging.dma_window,
                };
                DeviceReport {
                    bdf: d.bdf,
                    vendor_id: d.facts.vendor_id,
                    device_id: d.facts.device_id,
                    class: d.facts.class,
                    name: name(d),
                    models: models
                        .iter()
                        .map(|m| qualify(&input, *m, judging.overrides))
                        .collect(),
                }
            })
            .collect();
        Self {
            platform: judging.platform,
            profile: judging.profile,
            dma_window: judging.dma_window,
            ntb_adapter: judging.ntb_adapter,
            borrower_modules: judging.borrower_modules.map(|(p, _)| p),
            models,
            devices,
        }
    }

    /// The worst verdict of any device and model (pass when nothing was judged).
    #[must_use]
    pub fn worst(&self) -> Verdict {
        self.devices
            .iter()
            .flat_map(|d| d.models.iter().map(|m| m.verdict))
            .max()
            .unwrap_or(Verdict::Pass)
    }

    /// A table to read first, then the findings to fix.
    #[must_use]
    pub fn table(&self) -> String {
        table(self, &self.models)
    }

    /// Markdown, for tickets and wikis.
    #[must_use]
    pub fn markdown(&self) -> String {
        markdown(self, &self.models)
    }
}

fn first_to_fix(models: &[ModelResult]) -> Option<&Finding> {
    models
        .iter()
        .flat_map(|m| m.findings.iter())
        .filter(|f| f.overridden.is_none() && f.severity > Severity::Info)
        // The first of the most severe: rules run safety first, and lend is judged first.
        .min_by_key(|f| std::cmp::Reverse(f.severity))
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
    }
}

fn table(report: &Report, models: &[AccessModel]) -> String {
    let mut rows: Vec<Vec<String>> = vec![{
        let mut h = vec!["BDF".to_owned(), "DEVICE".to_owned()];
        h.extend(models.iter().map(|m| m.as_str().to_uppercase()));
        h.push("FIX FIRST".to_owned());
        h
    }];
    for d in &report.devices {
        let mut row = vec![d.bdf.to_string(), d.name.clone()];
        row.extend(d.models.iter().map(|m| verdict_word(m.verdict).to_owned()));
        row.push(
            first_to_fix(&d.models)
                .map_or_else(|| "-".to_owned(), |f| format!("{}: {}", f.code, f.remedy)),
        );
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols - 1)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            match widths.get(c) {
                Some(w) => {
                    let _ = write!(line, "{cell:<w$}  ");
                }
                None => line.push_str(cell),
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "\nprofile {} | IOMMU {:?} ({}) | DMA window {}",
        report.profile.name,
        report.platform.iommu,
        report.platform.iommu_evidence,
        human_size(report.dma_window)
    );
    for d in &report.devices {
        let notable: Vec<(&AccessModel, &Finding)> = d
            .models
            .iter()
            .flat_map(|m| m.findings.iter().map(move |f| (&m.model, f)))
            .filter(|(_, f)| f.severity > Severity::Info)
            .collect();
        if notable.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{} {}", d.bdf, d.name);
        let mut seen: Vec<(crate::Code, Severity)> = Vec::new();
        for (_, f) in &notable {
            if seen.contains(&(f.code, f.severity)) {
                continue;
            }
            seen.push((f.code, f.severity));
            let which: Vec<&str> = notable
                .iter()
                .filter(|(_, g)| g.code == f.code && g.severity == f.severity)
                .map(|(m, _)| m.as_str())
                .collect();
            let sev = match f.severity {
                Severity::Fail => "FAIL",
                Severity::Warn => "warn",
                Severity::Info => "info",
            };
            let evidence: Vec<String> =
                f.evidence.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let accepted = f
                .overridden
                .as_ref()
                .map(|r| format!(" [accepted: {r}]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {sev} {} ({}): {}{accepted}",
                f.code,
                which.join(","),
                f.message
            );
            if !evidence.is_empty() {
                let _ = writeln!(out, "       evidence: {}", evidence.join("; "));
            }
            let _ = writeln!(out, "       fix: {}", f.remedy);
        }
    }
    out
}

fn markdown(report: &Report, models: &[AccessModel]) -> String {
    let mut out = String::from("# pcipool qualification\n\n");
    let _ = writeln!(
        out,
        "Profile `{}`, IOMMU {:?}, DMA window {}.\n",
        report.profile.name,
        report.platform.iommu,
        human_size(report.dma_window)
    );
    let heads: Vec<String> = models.iter().map(|m| m.as_str().to_owned()).collect();
    let _ = writeln!(out, "| BDF | device | {} | fix first |", heads.join(" | "));
    let _ = writeln!(out, "|---|---|{}---|", "---|".repeat(models.len()));
    for d in &report.devices {
        let verdicts: Vec<&str> = d.models.iter().map(|m| verdict_word(m.verdict)).collect();
        let fix = first_to_fix(&d.models)
            .map_or_else(|| "-".to_owned(), |f| format!("`{}`: {}", f.code, f.remedy));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {fix} |",
            d.bdf,
            d.name,
            verdicts.join(" | ")
        );
    }
    for d in &report.devices {
        let _ = writeln!(out, "\n## {} {}\n", d.bdf, d.name);
        for m in &d.models {
            let _ = writeln!(out, "- **{}**: {}", m.model, verdict_word(m.verdict));
            for f in &m.findings {
                let evidence: Vec<String> =
                    f.evidence.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    out,
                    "  - `{}` ({:?}): {} — {} {}",
                    f.code,
                    f.severity,
                    f.message,
                    f.remedy,
                    if evidence.is_empty() {
                        String::new()
                    } else {
                        format!("[{}]", evidence.join("; "))
                    }
                );
            }
        }
    }
    out
}
