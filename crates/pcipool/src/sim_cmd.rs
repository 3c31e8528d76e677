//! `pcipool sim ...` and `pcipool bench sim`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use pcipool_backend::Inventory;
use pcipool_sim::run::{FaultSet, run};
use pcipool_sim::{FabricDesc, HostView, Sim};
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::commands::emit;
use crate::{BadInput, render};

/// The built-in 4-host lab (the default for `pcipool dev` once it exists).
pub const LAB_4: &str = include_str!("../../../fabrics/lab-4.toml");

/// The 64-host rack (the API benchmark's default).
pub const RACK_64: &str = include_str!("../../../fabrics/rack-64.toml");

fn load(fabric: Option<&Path>) -> anyhow::Result<(String, FabricDesc)> {
    load_or(fabric, "built-in lab-4", LAB_4)
}

/// Reads and parses a fabric description, or the built-in `default` when no file is given. A bad file
/// is bad input (exit 3) and names itself.
///
/// # Errors
/// Unreadable file, or a description that does not parse.
pub fn load_or(
    fabric: Option<&Path>,
    default_name: &str,
    default: &str,
) -> anyhow::Result<(String, FabricDesc)> {
    let (name, text) = match fabric {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => (default_name.to_owned(), default.to_owned()),
    };
    let desc = FabricDesc::parse(&text).map_err(|e| BadInput(format!("{name}: {e}")))?;
    Ok((name, desc))
}

fn build(desc: &FabricDesc, seed: u64) -> anyhow::Result<Sim> {
    Sim::new(desc, seed).map_err(|e| BadInput(e.to_string()).into())
}

#[derive(Serialize)]
struct HostRow {
    node: pcipool_fabric::NodeId,
    name: String,
    adapters: Vec<String>,
    devices: Vec<pcipool_backend::DeviceRecord>,
}

/// `pcipool sim inventory`.
///
/// # Errors
/// Unreadable or invalid description.
pub fn inventory(fabric: Option<&Path>, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let (_, desc) = load(fabric)?;
    let sim = build(&desc, 0)?;
    let mut rows = Vec::new();
    for host in sim.hosts() {
        let inv = HostView {
            sim: &sim,
            node: host.node,
        }
        .inventory()
        .context("simulated inventory")?;
        let adapters = sim
            .fabric
            .topology()
            .host(host.node)
            .map(|h| h.adapters.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default();
        rows.push(HostRow {
            node: host.node,
            name: host.name.clone(),
            adapters,
            devices: inv.devices,
        });
    }
    match output {
        OutputFormat::Json => {
            let mut t = serde_json::to_string_pretty(&rows).context("serialising JSON")?;
            t.push('\n');
            emit(&t)?;
        }
        OutputFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{:<6} {:<20} {:<22} DEVICES",
                "NODE", "HOST", "ADAPTERS"
            );
            for r in &rows {
                let devices: Vec<String> = r
                    .devices
                    .iter()
                    .map(|d| {
                        let bars: Vec<String> = d
                            .facts
                            .bars
                            .iter()
                            .filter_map(|b| b.size)
                            .map(render::human_size)
                            .collect();
                        let resets: Vec<&str> =
                            d.reset_methods.iter().map(|m| m.sysfs_name()).collect();
                        format!(
                            "{} {} [{}] reset={}{}",
                            d.bdf,
                            d.device_name.as_deref().unwrap_or("?"),
                            bars.join(","),
                            if resets.is_empty() {
                                "none".to_owned()
                            } else {
                                resets.join(",")
                            },
                            d.driver
                                .as_ref()
                                .map(|x| format!(" driver={x}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                let first = devices.first().cloned().unwrap_or_else(|| "-".to_owned());
                let _ = writeln!(
                    out,
                    "{:<6} {:<20} {:<22} {first}",
                    r.node.to_string(),
                    r.name,
                    r.adapters.join(",")
                );
                for d in devices.iter().skip(1) {
                    let _ = writeln!(out, "{:<6} {:<20} {:<22} {d}", "", "", "");
                }
            }
            let links = sim.fabric.topology().links().len();
            let devices: usize = rows.iter().map(|r| r.devices.len()).sum();
            let _ = writeln!(
                out,
                "\n{} hosts, {devices} devices, {links} links",
                rows.len()
            );
            emit(&out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pcipool sim run`.
///
/// # Errors
/// Unreadable or invalid description.
pub fn sim_run(
    fabric: Option<&Path>,
    seed: u64,
    steps: u64,
    faults: &FaultSet,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let (name, desc) = load(fabric)?;
    let mut sim = build(&desc, seed)?;
    let started = Instant::now();
    let summary = run(&mut sim, steps, faults);
    let wall = started.elapsed();
    let fabric_arg = fabric
        .map(|p| format!(" --fabric {}", p.display()))
        .unwrap_or_default();
    let replay = format!(
        "pcipool sim fabric-run{fabric_arg} --seed {seed} --steps {steps} --faults {faults}"
    );
    match output {
        OutputFormat::Json => {
            let mut t = serde_json::to_string_pretty(&summary).context("serialising JSON")?;
            t.push('\n');
            emit(&t)?;
        }
        OutputFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(out, "fabric {name}, faults {faults}");
            let _ = writeln!(
                out,
                "steps {}  granted {}  released {}  fenced {}  refused {}  quarantined {}",
                summary.steps,
                summary.granted,
                summary.released,
                summary.fenced,
                summary.refused,
                summary.quarantined
            );
            let faults_line: Vec<String> = summary
                .faults
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                out,
                "faults injected: {}",
                if faults_line.is_empty() {
                    "none".into()
                } else {
                    faults_line.join(" ")
                }
            );
            let _ = writeln!(
                out,
                "events {}  virtual time {:.3} s  wall time {:.3} s",
                summary.events,
                summary.virtual_ns as f64 / 1e9,
                wall.as_secs_f64()
            );
            if let Some(v) = &summary.violation {
                let _ = writeln!(
                    out,
                    "INVARIANT VIOLATED at step {}: {}\n  while: {}",
                    v.step, v.detail, v.action
                );
                let _ = writeln!(out, "  replay: {replay}");
            }
            let _ = writeln!(out, "seed {seed} event-log hash {:016x}", summary.hash);
            emit(&out)?;
        }
    }
    Ok(if summary.violation.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn default_scale_fabric() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|a| a.join("fabrics/fabric-1024.toml"))
        .find(|p| p.is_file())
}

/// `pcipool bench sim`: load time and a full inventory walk.
///
/// # Errors
/// Unreadable or invalid description.
pub fn bench(fabric: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = fabric.map(Path::to_path_buf).or_else(default_scale_fabric);
    let t0 = Instant::now();
    let (name, desc) = load(path.as_deref())?;
    let sim = build(&desc, 1)?;
    let load = t0.elapsed();
    let t1 = Instant::now();
    let mut devices = 0usize;
    for host in sim.hosts() {
        devices += HostView {
            sim: &sim,
            node: host.node,
        }
        .inventory()
        .map(|i| i.devices.len())
        .unwrap_or(0);
    }
    let walk = t1.elapsed();
    let hosts = sim.hosts().count();
    println!("sim benchmark: {name}");
    println!(
        "  load (parse + build {hosts} hosts, {devices} devices)  {:>9.1} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "  full inventory walk (decode every config space)        {:>9.1} ms",
        walk.as_secs_f64() * 1e3
    );
    println!(
        "  per device                                             {:>9.1} us",
        walk.as_secs_f64() * 1e6 / devices.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// `pcipool bench schedule`: placement decisions per second on a fabric (one core).
///
/// # Errors
/// Unreadable or invalid description.
pub fn bench_schedule(fabric: Option<&Path>, decisions: u64) -> anyhow::Result<ExitCode> {
    use std::collections::HashMap;

    use pcipool_pool::DeviceState;
    use pcipool_pool::schedule::{
        DeviceClass, PlacementIndex, PoolView, Request, RouteCache, Selector, Strategy, place,
    };
    use pcipool_qualify::AccessModel;

    let path = fabric.map(Path::to_path_buf).or_else(default_scale_fabric);
    let (name, desc) = load(path.as_deref())?;
    let sim = build(&desc, 1)?;
    let mut infos = Vec::new();
    for host in sim.hosts() {
        let inv = HostView {
            sim: &sim,
            node: host.node,
        }
        .inventory()
        .context("simulated inventory")?;
        for d in inv.devices {
            // Every model, unqualified: the benchmark measures placement, not qualification.
            let fdid = pcipool_fabric::Fdid {
                node: host.node,
                bdf: d.bdf,
                vf: None,
            };
            infos.push(pcipool_sim_lab::describe(
                &d,
                fdid,
                vec![AccessModel::Lend, AccessModel::Vf, AccessModel::Shared],
                None,
                None,
            ));
        }
    }
    let states = vec![DeviceState::Available; infos.len()];
    let borrowers: Vec<pcipool_fabric::NodeId> = sim
        .hosts()
        .filter(|h| h.devices.is_empty())
        .map(|h| h.node)
        .collect();
    let classes = [
        DeviceClass::Nvme,
        DeviceClass::Gpu,
        DeviceClass::Nic,
        DeviceClass::Fpga,
    ];
    let load = HashMap::new();
    let mut routes = RouteCache::default();
    // Warm the route cache once per borrower, as a running controller would have.
    for b in &borrowers {
        let r = Request {
            selector: Selector::default(),
            count: 1,
            model: AccessModel::Lend,
            borrower: *b,
            max_sharers: None,
            request_id: None,
        };
        let _ = place(
            &r,
            infos.iter().zip(&states),
            &load,
            sim.fabric.topology(),
            &mut routes,
            Strategy::Spread,
        );
    }
    let request = |i: u64| {
        let idx = usize::try_from(i).unwrap_or(0);
        Request {
            selector: Selector {
                class: Some(classes[idx % classes.len()]),
                ..Selector::default()
            },
            count: 1,
            model: AccessModel::Lend,
            borrower: borrowers[idx % borrowers.len().max(1)],
            max_sharers: None,
            request_id: None,
        }
    };
    // The full scan, as the reference.
    let scan_n = (decisions / 10).max(1);
    let started = Instant::now();
    let mut scan_placed = 0u64;
    for i in 0..scan_n {
        if place(
            &request(i),
            infos.iter().zip(&states),
            &load,
            sim.fabric.topology(),
            &mut routes,
            Strategy::Spread,
        )
        .is_ok()
        {
            scan_placed += 1;
        }
    }
    let scan_rate = scan_n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    // The index the controller uses.
    let mut index = PlacementIndex::new(&infos);
    let view = PoolView {
        devices: &infos,
        states: &states,
        lender_load: &load,
        topology: sim.fabric.topology(),
    };
    for b in &borrowers {
        let r = Request {
            selector: Selector::default(),
            count: 1,
            model: AccessModel::Lend,
            borrower: *b,
            max_sharers: None,
            request_id: None,
        };
        let _ = index.place(&r, view, &mut routes, Strategy::Spread);
    }
    let started = Instant::now();
    let mut placed = 0u64;
    for i in 0..decisions {
        if index
            .place(&request(i), view, &mut routes, Strategy::Spread)
            .is_ok()
        {
            placed += 1;
        }
    }
    let rate = decisions as f64 / started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "schedule benchmark: {name}: {} devices, {} borrowers, one core",
        infos.len(),
        borrowers.len()
    );
    println!(
        "  full scan   {scan_n:>8} decisions ({scan_placed} placed)  {scan_rate:>10.0} decisions/s"
    );
    println!(
        "  index       {decisions:>8} decisions ({placed} placed)  {rate:>10.0} decisions/s   (target >= 50,000/s)"
    );
    println!("  ratio index/scan {:.1}x", rate / scan_rate.max(1e-9));
    Ok(ExitCode::SUCCESS)
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
    let (_, desc) = load(fabric)?;
    let config = pcipool_sim_system::Config {
        seed,
        steps,
        desc,
        faults,
        mutant,
    };
    let started = Instant::now();
    match pcipool_sim_system::run(&config) {
        Ok(summary) => {
            let refused: Vec<String> = summary
                .refused
                .iter()
                .map(|(code, n)| format!("{n} {code}"))
                .collect();
            let faults: Vec<String> = summary
                .faults
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            let mut out = String::new();
            let _ = writeln!(out, "refused: {}", refused.join(", "));
            let _ = writeln!(out, "faults: {}", faults.join(", "));
            let _ = writeln!(out, "wall time {:.2} s", started.elapsed().as_secs_f64());
            let _ = writeln!(out, "{}", summary.last_line());
            emit(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(pcipool_sim_system::RunError::Violation(v)) => {
            let fabric_arg = fabric
                .map(|p| format!(" --fabric {}", p.display()))
                .unwrap_or_default();
            let faults_arg = if faults { "" } else { " --faults none" };
            let mutant_arg = match mutant {
                pcipool_sim_system::Mutant::None => String::new(),
                pcipool_sim_system::Mutant::SkipUnmap => " --mutant skip-unmap".into(),
                pcipool_sim_system::Mutant::DropQuarantine => " --mutant drop-quarantine".into(),
            };
            emit(&format!(
                "invariant violated: {v}\nversion {}\nreplay: pcipool sim run{fabric_arg} --seed {seed} --steps {}{faults_arg}{mutant_arg}\n",
                env!("CARGO_PKG_VERSION"),
                v.steps_to_replay()
            ))?;
            Ok(ExitCode::from(1))
        }
        Err(e @ pcipool_sim_system::RunError::Setup(_)) => {
            Err(crate::BadInput(e.to_string()).into())
        }
    }
}
