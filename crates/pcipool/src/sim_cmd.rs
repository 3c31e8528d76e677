//! `pcipool sim inventory | run | fabric-run`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pcipool_sim::run::FaultSet;
use pcipool_sim::{FabricDesc, Sim};

use crate::BadInput;
use crate::cli::OutputFormat;
use crate::commands::{emit, emit_json};

/// Loads the description (the built-in lab without one); a bad file is bad input (exit 3).
pub fn load(fabric: Option<&Path>) -> anyhow::Result<pcipool_sim::Loaded> {
    FabricDesc::load(fabric).map_err(|e| match e {
        e @ pcipool_sim::LoadError::Invalid { .. } => BadInput(e.to_string()).into(),
        e => anyhow::Error::new(e),
    })
}

fn build(desc: &FabricDesc, seed: u64) -> anyhow::Result<Sim> {
    Sim::new(desc, seed).map_err(|e| BadInput(e.to_string()).into())
}

/// `pcipool sim inventory`.
///
/// # Errors
/// Unreadable or invalid description.
pub fn inventory(fabric: Option<&Path>, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let sim = build(&load(fabric)?.desc, 0)?;
    let rows = pcipool_sim::inventory::hosts(&sim).context("simulated inventory")?;
    let links = sim.fabric.topology().links().len();
    let table = pcipool_sim::inventory::table(&rows, links)?;
    crate::commands::show(output, &rows, |_| table)
}

/// `pcipool sim fabric-run`: the fabric model alone under the seeded workload.
///
/// # Errors
/// Unreadable or invalid description.
pub fn fabric_run(
    fabric: Option<&Path>,
    seed: u64,
    steps: u64,
    faults: &FaultSet,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let loaded = load(fabric)?;
    let mut sim = build(&loaded.desc, seed)?;
    let started = Instant::now();
    let summary = pcipool_sim::run::run(&mut sim, steps, faults);
    let fabric_arg = fabric
        .map(|p| format!(" --fabric {}", p.display()))
        .unwrap_or_default();
    let replay = format!(
        "pcipool sim fabric-run{fabric_arg} --seed {seed} --steps {steps} --faults {faults}"
    );
    match output {
        OutputFormat::Json => emit_json(&summary)?,
        OutputFormat::Table => {
            emit(&summary.text(&loaded.name, faults, seed, started.elapsed(), &replay)?)?
        }
    }
    Ok(if summary.violation.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `pcipool sim run`: the whole system under the seeded workload.
///
/// # Errors
/// Bad description (exit 3); a violated invariant is exit 1 with its replay command.
pub fn system_run(
    fabric: Option<&Path>,
    seed: u64,
    steps: u64,
    faults: bool,
    mutant: pcipool_sim_system::Mutant,
) -> anyhow::Result<ExitCode> {
    let config = pcipool_sim_system::Config {
        seed,
        steps,
        desc: load(fabric)?.desc,
        faults,
        mutant,
    };
    let started = Instant::now();
    match pcipool_sim_system::run(&config) {
        Ok(summary) => {
            emit(&summary.report(started.elapsed()))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(pcipool_sim_system::RunError::Violation(v)) => {
            let fabric_arg = fabric
                .map(|p| format!(" --fabric {}", p.display()))
                .unwrap_or_default();
            emit(&config.violation_report(&v, &fabric_arg))?;
            Ok(ExitCode::from(1))
        }
        Err(e @ pcipool_sim_system::RunError::Setup(_)) => Err(BadInput(e.to_string()).into()),
    }
}
