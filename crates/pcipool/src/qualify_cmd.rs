//! `pcipool qualify`: gather a host's facts (read-only), judge its devices, print the report.

use std::process::ExitCode;

use anyhow::Context;
use pcipool_backend::{DeviceRecord, Inventory};
use pcipool_backend_linux::LinuxHost;
use pcipool_backend_linux::qualify_facts::{load_aliases, platform_facts};
use pcipool_describe::PciIds;
use pcipool_qualify::Verdict;
use pcipool_qualify::report::{Judging, ProfileError, Report, load_profile, parse_overrides};

use crate::cli::QualifyArgs;
use crate::{BadInput, NotFound};

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

/// Runs the command. Exit 0 when everything asked for passes, 1 on warnings with `--strict`, 2 on failures.
///
/// # Errors
/// Unreadable host, profile, policy or module list; an unknown device.
pub fn run(a: &QualifyArgs) -> anyhow::Result<ExitCode> {
    let paths = a.host.paths();
    let profile = load_profile(&a.adapter_profile).map_err(|e| match e {
        ProfileError::Unknown { .. } => anyhow::Error::new(NotFound(e.to_string())),
        other => BadInput(other.to_string()).into(),
    })?;
    let overrides = match &a.policy {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            parse_overrides(&text).map_err(|e| BadInput(format!("{}: {e}", p.display())))?
        }
        None => Vec::new(),
    };
    let aliases = match &a.borrower_modules {
        Some(p) => Some(
            load_aliases(p).with_context(|| format!("reading borrower modules {}", p.display()))?,
        ),
        None => None,
    };
    let sys = paths.sys.display().to_string();
    let inv = LinuxHost::new(paths.clone())
        .inventory()
        .with_context(|| format!("reading PCI inventory under {sys}"))?;
    let platform = platform_facts(&paths, &inv).context("reading platform facts")?;
    let chosen: Vec<&DeviceRecord> = if a.bdfs.is_empty() {
        inv.devices.iter().collect()
    } else {
        a.bdfs
            .iter()
            .map(|b| {
                inv.devices
                    .iter()
                    .find(|d| d.bdf == *b)
                    .ok_or_else(|| NotFound(format!("no PCI function {b} under {sys}")))
            })
            .collect::<Result<_, _>>()?
    };
    let judging = Judging {
        platform,
        profile,
        dma_window: a.dma_window,
        ntb_adapter: pcipool_qualify::gather::find_ntb_adapter(&inv, a.ntb_adapter),
        borrower_modules: a.borrower_modules.clone().zip(aliases.as_deref()),
        models: a.models.clone(),
        overrides: &overrides,
    };
    let ids = PciIds::system();
    let report = Report::judge(&inv, &chosen, judging, |d| {
        pcipool_describe::text::device_name(ids, &d.facts)
    });
    match a.output {
        ReportFormat::Table => crate::commands::emit(&report.table())?,
        ReportFormat::Markdown => crate::commands::emit(&report.markdown())?,
        ReportFormat::Json => crate::commands::emit_json(&report)?,
    }
    Ok(match report.worst() {
        Verdict::Fail => ExitCode::from(2),
        Verdict::Warn if a.strict => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}
