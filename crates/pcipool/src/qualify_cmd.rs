//! `pcipool qualify`: gather facts (read-only), run the rules, report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use pcipool_backend::{DeviceRecord, HostInventory, Inventory};
use pcipool_backend_linux::qualify_facts::{load_aliases, platform_facts};
use pcipool_backend_linux::{HostPaths, LinuxHost};
use pcipool_ids::PciIds;
use pcipool_pcie::Bdf;
use pcipool_qualify::gather::{device_context, find_ntb_adapter};
use pcipool_qualify::{
    AccessModel, AdapterProfile, Finding, Input, ModelResult, Override, PlatformFacts, Severity,
    Verdict, qualify,
};
use serde::{Deserialize, Serialize};

use crate::{BadInput, NotFound, render};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ReportFormat {
    /// A table to read first, then the findings to fix.
    #[default]
    Table,
    /// JSON (see docs/json.md).
    Json,
    /// Markdown, for tickets and wikis.
    Markdown,
}

/// Validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifyOptions {
    /// Devices to qualify (empty = all).
    pub bdfs: Vec<Bdf>,
    /// Models (empty = all three).
    pub models: Vec<AccessModel>,
    /// Profile name or file.
    pub profile: String,
    /// Borrower module list.
    pub borrower_modules: Option<PathBuf>,
    /// DMA window in bytes.
    pub dma_window: u64,
    /// Policy file with overrides.
    pub policy: Option<PathBuf>,
    /// The lender's NTB adapter, when auto-detection cannot find it.
    pub ntb_adapter: Option<Bdf>,
    /// Host roots.
    pub paths: HostPaths,
    /// Format.
    pub output: ReportFormat,
    /// Warnings fail the run (exit 1).
    pub strict: bool,
}

/// The policy file: for now, the qualification overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(default, rename = "override")]
    overrides: Vec<Override>,
}

/// `256M`, `1G`, `4096`, `2GiB` -> bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 256M, 1G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{text}': unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

fn load_profile(spec: &str) -> anyhow::Result<AdapterProfile> {
    if let Some(p) = AdapterProfile::named(spec) {
        return Ok(p);
    }
    let path = Path::new(spec);
    if !path.exists() {
        let names: Vec<String> = AdapterProfile::builtin()
            .into_iter()
            .map(|p| p.name)
            .collect();
        return Err(NotFound(format!(
            "no adapter profile '{spec}' (built-in: {}; or give a TOML file)",
            names.join(", ")
        ))
        .into());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {spec}"))?;
    toml::from_str(&text).map_err(|e| BadInput(format!("{spec}: {e}")).into())
}

fn load_policy(path: Option<&Path>) -> anyhow::Result<Vec<Override>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy: Policy =
        toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    if let Some(o) = policy.overrides.iter().find(|o| o.reason.trim().is_empty()) {
        return Err(BadInput(format!(
            "{}: override of {} has no written reason",
            path.display(),
            o.code
        ))
        .into());
    }
    Ok(policy.overrides)
}

#[derive(Debug, Serialize)]
struct DeviceReport {
    bdf: Bdf,
    vendor_id: u16,
    device_id: u16,
    class: pcipool_pcie::ClassCode,
    name: String,
    models: Vec<ModelResult>,
}

#[derive(Debug, Serialize)]
struct Report {
    platform: PlatformFacts,
    profile: AdapterProfile,
    dma_window: u64,
    ntb_adapter: Option<Bdf>,
    borrower_modules: Option<PathBuf>,
    devices: Vec<DeviceReport>,
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
        render::human_size(report.dma_window)
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
        let mut seen: Vec<(pcipool_qualify::Code, Severity)> = Vec::new();
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
        render::human_size(report.dma_window)
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

fn describe(ids: &PciIds, d: &DeviceRecord) -> String {
    match (
        ids.vendor(d.facts.vendor_id),
        ids.device(d.facts.vendor_id, d.facts.device_id),
    ) {
        (Some(v), Some(name)) => format!("{v} {name}"),
        _ => format!(
            "{} [{:04x}:{:04x}]",
            render::class_name(ids, &d.facts),
            d.facts.vendor_id,
            d.facts.device_id
        ),
    }
}

/// Runs the command. Exit 0 when everything asked for passes, 1 on warnings with `--strict`, 2 on failures.
///
/// # Errors
/// Unreadable host, profile, policy or module list; an unknown device.
pub fn run(o: &QualifyOptions) -> anyhow::Result<ExitCode> {
    let profile = load_profile(&o.profile)?;
    let overrides = load_policy(o.policy.as_deref())?;
    let aliases = match &o.borrower_modules {
        Some(p) => Some(
            load_aliases(p).with_context(|| format!("reading borrower modules {}", p.display()))?,
        ),
        None => None,
    };
    let inv: HostInventory = LinuxHost::new(o.paths.clone())
        .inventory()
        .with_context(|| format!("reading PCI inventory under {}", o.paths.sys.display()))?;
    let platform = platform_facts(&o.paths, &inv).context("reading platform facts")?;
    let ntb = find_ntb_adapter(&inv, o.ntb_adapter);
    let models: Vec<AccessModel> = if o.models.is_empty() {
        AccessModel::ALL.to_vec()
    } else {
        o.models.clone()
    };
    let chosen: Vec<&DeviceRecord> = if o.bdfs.is_empty() {
        inv.devices.iter().collect()
    } else {
        o.bdfs
            .iter()
            .map(|b| {
                inv.devices.iter().find(|d| d.bdf == *b).ok_or_else(|| {
                    NotFound(format!(
                        "no PCI function {b} under {}",
                        o.paths.sys.display()
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let ids = PciIds::system();
    let devices: Vec<DeviceReport> = chosen
        .iter()
        .map(|d| {
            let ctx = device_context(&inv, d, ntb, aliases.as_deref());
            let input = Input {
                device: &ctx,
                platform: &platform,
                profile: &profile,
                dma_window: o.dma_window,
            };
            DeviceReport {
                bdf: d.bdf,
                vendor_id: d.facts.vendor_id,
                device_id: d.facts.device_id,
                class: d.facts.class,
                name: describe(ids, d),
                models: models
                    .iter()
                    .map(|m| qualify(&input, *m, &overrides))
                    .collect(),
            }
        })
        .collect();
    let report = Report {
        platform,
        profile,
        dma_window: o.dma_window,
        ntb_adapter: ntb,
        borrower_modules: o.borrower_modules.clone(),
        devices,
    };
    let text = match o.output {
        ReportFormat::Table => table(&report, &models),
        ReportFormat::Markdown => markdown(&report, &models),
        ReportFormat::Json => {
            let mut t = serde_json::to_string_pretty(&report).context("serialising JSON")?;
            t.push('\n');
            t
        }
    };
    crate::commands::emit(&text)?;
    let worst = report
        .devices
        .iter()
        .flat_map(|d| d.models.iter().map(|m| m.verdict))
        .max()
        .unwrap_or(Verdict::Pass);
    Ok(match worst {
        Verdict::Fail => ExitCode::from(2),
        Verdict::Warn if o.strict => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_units() {
        assert_eq!(
            (parse_size("256M"), parse_size("1GiB"), parse_size("4096")),
            (Ok(256 << 20), Ok(1 << 30), Ok(4096))
        );
    }

    #[test]
    fn parse_size_rejects_garbage() {
        assert!(
            parse_size("12Q").is_err()
                && parse_size("G").is_err()
                && parse_size("99999999999T").is_err()
        );
    }
}
