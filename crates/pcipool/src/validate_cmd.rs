//! `pcipool validate`: runs the validation suites against the simulated lab, shows progress on the
//! terminal, prints the summary and writes the JSON report.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pcipool_fabric::Fdid;
use pcipool_pool::policy::Policy;
use pcipool_validate::datapath::DataPathAccess;
use pcipool_validate::sim_target::{Breakage, SimTarget};
use pcipool_validate::{Options, Report, RunInfo, Suite};

/// Validated `pcipool validate` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidateOptions {
    /// Suites.
    pub suites: Vec<Suite>,
    /// Profile name (short, long).
    pub profile: String,
    /// Only the devices of these hosts.
    pub hosts: Vec<pcipool_fabric::NodeId>,
    /// Cycles per device and model.
    pub cycles: u32,
    /// Only these devices.
    pub devices: Vec<Fdid>,
    /// Seed.
    pub seed: u64,
    /// Fabric file.
    pub fabric: Option<PathBuf>,
    /// Policy file.
    pub policy: Option<PathBuf>,
    /// Report files (.json or .html).
    pub reports: Vec<PathBuf>,
    /// A running pool to validate instead of the embedded lab.
    pub remote: Option<Remote>,
}

/// Where a running pool is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Controller URL.
    pub url: String,
    /// Operator token.
    pub token: String,
    /// The simulated fabric (`pcipool sim serve`).
    pub fabric_url: String,
    /// A second tenant's token.
    pub intruder_token: Option<String>,
}

/// `pcipool validate`.
///
/// # Errors
/// Bad files (exit 3), setup failures.
pub fn run(o: &ValidateOptions) -> anyhow::Result<ExitCode> {
    let (fabric_name, desc) =
        crate::sim_cmd::load_or(o.fabric.as_deref(), "built-in lab-4", crate::sim_cmd::LAB_4)?;
    let (policy_name, policy) = match &o.policy {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let policy = Policy::parse(&text)
                .map_err(|e| crate::BadInput(format!("{}: {e}", p.display())))?;
            (p.display().to_string(), policy)
        }
        None => ("default".to_owned(), Policy::default()),
    };
    let dir = std::env::temp_dir().join(format!("pcipool-validate-{}", std::process::id()));
    let (target, fabric_name): (Box<dyn pcipool_validate::Target>, String) = match &o.remote {
        Some(r) => (
            Box::new(
                pcipool_validate::remote_target::RemoteTarget::connect(
                    &r.url,
                    &r.token,
                    r.intruder_token.as_deref(),
                    &r.fabric_url,
                )
                .map_err(|e| anyhow::anyhow!("connecting to the pool at {}: {e}", r.url))?,
            ),
            format!("running pool at {} (fabric {})", r.url, r.fabric_url),
        ),
        None => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let t = SimTarget::new(&desc, o.seed, policy, &dir, Breakage::None)
                .map_err(|e| crate::BadInput(e.to_string()))?;
            (Box::new(t), fabric_name)
        }
    };
    let target = target.as_ref();
    // Hosts select their devices; named devices are added to them.
    let mut devices = o.devices.clone();
    if !o.hosts.is_empty() {
        devices.extend(
            target
                .devices()
                .into_iter()
                .map(|d| d.fdid)
                .filter(|f| o.hosts.contains(&f.node)),
        );
        if devices.is_empty() {
            return Err(crate::NotFound("no pooled devices on the hosts given".into()).into());
        }
    }
    // The data-path suite speaks to a controller and a fabric over HTTP, as applications do: the
    // running pool's, or a lab like `pcipool dev`'s served from this process for the run.
    let lab_server = if o.remote.is_none() && o.suites.contains(&Suite::DataPath) {
        let lab_dir = dir.join("datapath-lab");
        std::fs::create_dir_all(&lab_dir)
            .with_context(|| format!("creating {}", lab_dir.display()))?;
        Some(crate::dev::LabServer::start(&desc, &lab_dir)?)
    } else {
        None
    };
    let data_path = match (&o.remote, &lab_server) {
        (Some(r), _) => Some(DataPathAccess {
            controller: r.url.clone(),
            fabric: r.fabric_url.clone(),
            token: r.token.clone(),
        }),
        (None, Some(l)) => Some(DataPathAccess {
            controller: l.url.clone(),
            fabric: l.url.clone(),
            token: l.token.clone(),
        }),
        (None, None) => None,
    };
    let options = Options {
        suites: o.suites.clone(),
        cycles: o.cycles,
        devices,
        data_path,
    };
    let started = std::time::Instant::now();
    let mut stderr = std::io::stderr();
    // Live progress only on a terminal; logs and pipes get the summary alone.
    let live = std::io::IsTerminal::is_terminal(&stderr);
    let checks = pcipool_validate::run(target, &options, &mut |p| {
        if !live {
            return;
        }
        let width = 30u64;
        let filled = (p.done * width).checked_div(p.total).unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let _ = write!(
            stderr,
            "\r{:<10} [{bar}] {}/{}  failed {}   ",
            p.suite.name(),
            p.done,
            p.total,
            p.failed
        );
        let _ = stderr.flush();
    });
    if live {
        let _ = writeln!(stderr);
    }
    drop(lab_server);
    let _ = std::fs::remove_dir_all(&dir);
    let report = Report::new(
        RunInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            seed: o.seed,
            fabric: fabric_name,
            policy: policy_name,
            profile: format!("{} ({} cycles per device and model)", o.profile, o.cycles),
        },
        checks,
    );
    crate::commands::emit(&report.summary_table())?;
    crate::commands::emit(&format!(
        "{} checks in {:.1} s\n",
        report.checks.len(),
        started.elapsed().as_secs_f64()
    ))?;
    for path in &o.reports {
        let body = if path.extension().and_then(|e| e.to_str()) == Some("html") {
            pcipool_validate::html::to_html(&report)
        } else {
            let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
            format!("{json}\n")
        };
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
