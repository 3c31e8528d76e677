//! One function per command. Each prints to stdout and returns the exit code.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use pcipool_backend::Inventory;
use pcipool_backend_linux::{HostPaths, LinuxHost};
use pcipool_ids::PciIds;
use pcipool_pcie::dump::parse_dump;
use pcipool_pcie::{Bdf, DeviceFacts, ResetMethod};
use serde::Serialize;

use crate::cli::{Command, OutputFormat};
use crate::{BadInput, NotFound, bench, render};

/// Runs a validated command.
///
/// # Errors
/// Whatever the command fails with; the caller maps it to an exit code.
pub fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Inventory { sys, proc, output } => inventory(&HostPaths { sys, proc }, output),
        Command::Inspect {
            bdf,
            sys,
            proc,
            output,
        } => inspect(&HostPaths { sys, proc }, bdf, output),
        Command::Decode { file, output } => decode(&file, output),
        Command::Qualify(options) => crate::qualify_cmd::run(&options),
        Command::Dev {
            data_dir,
            listen,
            fabric,
        } => crate::dev::run(data_dir, &listen, fabric.as_deref()),
        Command::Server(options) => crate::server::run(&options),
        Command::Validate(options) => crate::validate_cmd::run(&options),
        Command::Agent(options) => crate::agent::run(&options),
        Command::SimServe(o) => crate::sim_serve::run(&o),
        Command::Client { url, token, call } => crate::client_cmd::run(&url, &token, call),
        Command::SimInventory { fabric, output } => {
            crate::sim_cmd::inventory(fabric.as_deref(), output)
        }
        Command::SimRun {
            fabric,
            seed,
            steps,
            faults,
            output,
        } => crate::sim_cmd::sim_run(fabric.as_deref(), seed, steps, &faults, output),
        Command::SystemRun {
            fabric,
            seed,
            steps,
            faults,
            mutant,
        } => crate::sim_cmd::system_run(fabric.as_deref(), seed, steps, faults, mutant),
        Command::BenchSim { fabric } => crate::sim_cmd::bench(fabric.as_deref()),
        Command::BenchDatapath { ios } => crate::bench::datapath(ios),
        Command::BenchRestart { leases, audit } => {
            crate::bench_control::bench_restart(leases, audit)
        }
        Command::BenchApi {
            fabric,
            clients,
            cycles,
        } => crate::bench_control::bench(fabric.as_deref(), clients, cycles),
        Command::BenchSchedule { fabric, decisions } => {
            crate::sim_cmd::bench_schedule(fabric.as_deref(), decisions)
        }
        Command::BenchDecode {
            dumps,
            rounds,
            keep_file,
        } => bench::decode(dumps, rounds, keep_file.as_deref()),
    }
}

pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

fn emit_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("serialising JSON")?;
    text.push('\n');
    emit(&text)
}

fn read_host(paths: &HostPaths) -> anyhow::Result<pcipool_backend::HostInventory> {
    LinuxHost::new(paths.clone())
        .inventory()
        .with_context(|| format!("reading PCI inventory under {}", paths.sys.display()))
}

fn inventory(paths: &HostPaths, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let inv = read_host(paths)?;
    match output {
        OutputFormat::Json => emit_json(&inv)?,
        OutputFormat::Table => emit(&render::inventory_table(PciIds::system(), &inv))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(paths: &HostPaths, bdf: Bdf, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let inv = read_host(paths)?;
    let device = inv.devices.iter().find(|d| d.bdf == bdf).ok_or_else(|| {
        NotFound(format!(
            "no PCI function {bdf} under {}",
            paths.sys.display()
        ))
    })?;
    match output {
        OutputFormat::Json => emit_json(device)?,
        OutputFormat::Table => {
            let mut text = String::new();
            render::record(&mut text, PciIds::system(), device);
            emit(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One device of a decoded dump, as JSON.
#[derive(Debug, Serialize)]
struct DecodedDevice<'a> {
    bdf: Bdf,
    line: usize,
    #[serde(flatten)]
    facts: Option<&'a DeviceFacts>,
    reset_methods: Vec<ResetMethod>,
    error: Option<String>,
}

/// Dumps are ASCII; a stray non-UTF-8 byte (a vendor name in Latin-1) must not fail the read.
fn text_of(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn decode(file: &Path, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let name = file.display().to_string();
    let text = if name == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        text_of(buf)
    } else {
        text_of(std::fs::read(file).with_context(|| format!("reading {name}"))?)
    };
    let devices =
        parse_dump(&text).map_err(|e| BadInput(format!("{name}:{}: {}", e.line, e.kind)))?;
    let decoded: Vec<_> = devices
        .iter()
        .map(|d| pcipool_pcie::decode(&d.bytes))
        .collect();
    let ids = PciIds::system();
    let mut failures = 0usize;
    match output {
        OutputFormat::Json => {
            let rows: Vec<DecodedDevice<'_>> = devices
                .iter()
                .zip(&decoded)
                .map(|(d, r)| DecodedDevice {
                    bdf: d.bdf,
                    line: d.line,
                    facts: r.as_ref().ok(),
                    // Bus position is unknown in a dump, so no bus reset is claimed.
                    reset_methods: r
                        .as_ref()
                        .map(|f| pcipool_pcie::derive_reset_methods(f, None))
                        .unwrap_or_default(),
                    error: r.as_ref().err().map(ToString::to_string),
                })
                .collect();
            failures = rows.iter().filter(|r| r.error.is_some()).count();
            emit_json(&rows)?;
        }
        OutputFormat::Table => {
            let mut out = String::with_capacity(devices.len() * 1024);
            for (d, r) in devices.iter().zip(&decoded) {
                match r {
                    Ok(facts) => {
                        out.push_str(&render::title(ids, d.bdf, facts));
                        out.push('\n');
                        render::facts_body(
                            &mut out,
                            ids,
                            facts,
                            &pcipool_pcie::derive_reset_methods(facts, None),
                        );
                    }
                    Err(e) => {
                        failures += 1;
                        out.push_str(&format!("{} <{name}:{}: {e}>\n", d.bdf, d.line));
                    }
                }
                out.push('\n');
            }
            emit(&out)?;
        }
    }
    if failures > 0 {
        return Err(BadInput(format!(
            "{name}: {failures} of {} devices could not be decoded",
            devices.len()
        ))
        .into());
    }
    Ok(ExitCode::SUCCESS)
}
