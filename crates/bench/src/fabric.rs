//! The fabric at scale: loading a large description and walking every host's inventory, and placement
//! decisions per second, the index the controller uses against a full scan, side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pcipool_backend::Inventory as _;
use pcipool_sim::{FabricDesc, HostView, Sim};

use crate::BenchError;

/// `fabrics/fabric-1024.toml` beside the binary's checkout, when there is one.
fn default_scale_fabric() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|a| a.join("fabrics/fabric-1024.toml"))
        .find(|p| p.is_file())
}

fn build(fabric: Option<&Path>) -> Result<(String, Sim), BenchError> {
    let path = fabric.map(Path::to_path_buf).or_else(default_scale_fabric);
    let loaded = FabricDesc::load(path.as_deref())?;
    let sim = Sim::new(&loaded.desc, 1).map_err(BenchError::context(&loaded.name))?;
    Ok((loaded.name, sim))
}

/// Load time and a full inventory walk (default: the 1,024-host fabric beside the checkout, else the lab).
///
/// # Errors
/// Unreadable or invalid description.
pub fn load(fabric: Option<&Path>) -> Result<String, BenchError> {
    let mut out = String::new();
    let t0 = Instant::now();
    let (name, sim) = build(fabric)?;
    let load = t0.elapsed();
    let t1 = Instant::now();
    let mut devices = 0usize;
    for host in sim.hosts() {
        devices += HostView {
            sim: &sim,
            node: host.node,
        }
        .inventory()
        .map_err(BenchError::context("simulated inventory"))?
        .devices
        .len();
    }
    let walk = t1.elapsed();
    let hosts = sim.hosts().count();
    writeln!(out, "sim benchmark: {name}")?;
    writeln!(
        out,
        "  load (parse + build {hosts} hosts, {devices} devices)  {:>9.1} ms",
        load.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "  full inventory walk (decode every config space)        {:>9.1} ms",
        walk.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "  per device                                             {:>9.1} us",
        walk.as_secs_f64() * 1e6 / devices.max(1) as f64
    )?;
    Ok(out)
}

/// Placement decisions per second on a fabric (one core): the placement index against a full scan.
///
/// # Errors
/// Unreadable or invalid description.
pub fn schedule(fabric: Option<&Path>, decisions: u64) -> Result<String, BenchError> {
    let mut out = String::new();
    use std::collections::HashMap;

    use pcipool_pool::DeviceState;
    use pcipool_pool::schedule::{
        DeviceClass, PlacementIndex, PoolView, Request, RouteCache, Selector, Strategy, place,
    };
    use pcipool_qualify::AccessModel;

    let (name, sim) = build(fabric)?;
    let mut infos = Vec::new();
    for host in sim.hosts() {
        let inv = HostView {
            sim: &sim,
            node: host.node,
        }
        .inventory()
        .map_err(BenchError::context("simulated inventory"))?;
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
        let _warm = place(
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
        let _warm = index.place(&r, view, &mut routes, Strategy::Spread);
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
    writeln!(
        out,
        "schedule benchmark: {name}: {} devices, {} borrowers, one core",
        infos.len(),
        borrowers.len()
    )?;
    writeln!(
        out,
        "  full scan   {scan_n:>8} decisions ({scan_placed} placed)  {scan_rate:>10.0} decisions/s"
    )?;
    writeln!(
        out,
        "  index       {decisions:>8} decisions ({placed} placed)  {rate:>10.0} decisions/s   (target >= 50,000/s)"
    )?;
    writeln!(out, "  ratio index/scan {:.1}x", rate / scan_rate.max(1e-9))?;
    Ok(out)
}
