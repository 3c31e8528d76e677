//! `load`: cycles under concurrent load, with latency percentiles.

use std::time::Instant;

use pcipool_qualify::AccessModel;

use super::{Options, Progress, Recorder, TENANT, micros, whole_lendable};
use crate::report::{Check, Suite};
use crate::target::{Held, Target};

/// Latency percentiles (nearest rank) of microsecond samples, as "p50 x ms, p99 y ms".
fn percentiles(samples: &mut [u64]) -> String {
    samples.sort_unstable();
    let at = |per_mille: usize| {
        let n = samples.len();
        samples
            .get((n * per_mille / 1000).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    format!("p50 {:.3} ms, p99 {:.3} ms", at(500), at(990))
}

/// `load`: the device under test is cycled while other lent devices carry data traffic (their borrowers
/// read their BARs in a loop) and control-plane clients borrow and release further devices. Every
/// cycle must still end correctly, the data traffic must never lose access while its leases hold, and
/// the control plane must answer every request; the throughput and latency of both are reported.
pub fn load(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let lendable = whole_lendable(t, o);
    let mut r = Recorder::new(Suite::Load, progress, u64::from(o.cycles), failed);
    let [under_test, rest @ ..] = lendable.as_slice() else {
        r.check("a lendable device", "pool", false, vec!["none".into()], 0);
        return r.checks;
    };
    let under_test = *under_test;
    let name = under_test.to_string();
    // One device carries data traffic (more could overrun the lab's links, which placement refuses);
    // the others serve the control-plane clients.
    let (traffic_devices, control_devices) = rest.split_at(rest.len().min(1));
    // Lend the traffic devices for the whole run.
    let mut traffic: Vec<(Held, NodeIdAddr)> = Vec::new();
    for f in traffic_devices {
        let Some(b) = t.borrowers(*f).first().copied() else {
            continue;
        };
        let b = t.borrowers(*f).last().copied().unwrap_or(b);
        match t.borrow(TENANT, *f, AccessModel::Lend, b) {
            Ok(h) => {
                if let Some(addr) = t.bar_address(h.lease) {
                    traffic.push((h, addr));
                }
            }
            Err(e) => {
                r.check("traffic device lent", &f.to_string(), false, vec![e], 0);
            }
        }
    }
    let stop = AtomicBool::new(false);
    let data: Mutex<(u64, u64, Vec<u64>)> = Mutex::new((0, 0, Vec::new()));
    let control: Mutex<(u64, Vec<String>, Vec<u64>)> = Mutex::new((0, Vec::new(), Vec::new()));
    let control_cycles = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for (_, (node, addr)) in &traffic {
            let (stop, data) = (&stop, &data);
            s.spawn(move || {
                let (mut ops, mut lost, mut lat) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    if t.host_read(*node, *addr) == u32::MAX {
                        lost += 1;
                    }
                    lat.push(micros(t0));
                    ops += 1;
                    // Leave the hardware to the others between reads.
                    std::thread::yield_now();
                }
                let mut d = data
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                d.0 += ops;
                d.1 += lost;
                d.2.extend(lat);
            });
        }
        for f in control_devices {
            let (stop, control, control_cycles) = (&stop, &control, &control_cycles);
            let f = *f;
            s.spawn(move || {
                let borrowers = t.borrowers(f);
                if borrowers.is_empty() {
                    return;
                }
                let (mut cycles, mut errors, mut lat) = (0u64, Vec::new(), Vec::new());
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // A different borrower each cycle.
                    k += 1;
                    let b = borrowers[k % borrowers.len()];
                    let t0 = Instant::now();
                    match t.borrow(TENANT, f, AccessModel::Lend, b) {
                        Ok(h) => {
                            lat.push(micros(t0));
                            match t.release(Some(TENANT), h.lease) {
                                Ok(()) => {
                                    cycles += 1;
                                    control_cycles.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => errors.push(format!("{f} release: {e}")),
                            }
                        }
                        Err(e) => errors.push(format!("{f} borrow: {e}")),
                    }
                }
                let mut c = control
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.0 += cycles;
                c.1.extend(errors);
                c.2.extend(lat);
            });
        }
        // The device under test, cycled while the load runs.
        for n in 0..o.cycles {
            let borrowers = t.borrowers(under_test);
            let Some(b) = borrowers
                .get(usize::try_from(n).unwrap_or(0) % borrowers.len().max(1))
                .copied()
            else {
                break;
            };
            let t0 = Instant::now();
            // The load may hold the links the device needs: a capacity refusal is the pool doing its
            // job, so wait for room (bounded) as a real client would.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            let mut waits = 0u32;
            let lent = loop {
                match t.borrow(TENANT, under_test, AccessModel::Lend, b) {
                    Err(e) if e.starts_with("NO_CAPACITY") && Instant::now() < deadline => {
                        waits += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    other => break other,
                }
            };
            let outcome = lent.and_then(|h| t.release(Some(TENANT), h.lease).map(|()| h));
            let took = micros(t0);
            let state = t.state(under_test).unwrap_or_default();
            // Unmapped as seen by the fabric: "cannot tell" is not clean.
            let clean = match &outcome {
                Ok(h) => t.mapped_leases().is_ok_and(|m| !m.contains(&h.lease.0)),
                Err(_) => false,
            };
            r.check(
                "cycle under load ends available and unmapped",
                &name,
                outcome.is_ok() && state == "available" && clean,
                vec![format!(
                    "{:?}, state {state}, unmapped {clean}, waited for capacity {waits} times",
                    outcome.err()
                )],
                took,
            );
            r.step();
        }
        // Keep the load on until every control client has had a few cycles (bounded), so the figures
        // describe a loaded pool even when the device's own cycles are quick.
        let until = Instant::now() + std::time::Duration::from_secs(10);
        let want = 5 * control_devices.len() as u64;
        while control_cycles.load(Ordering::Relaxed) < want && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    for (h, _) in &traffic {
        let _ = t.release(Some(TENANT), h.lease);
    }
    let (ops, lost, mut data_lat) = data
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (cycles, errors, mut control_lat) = control
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !traffic.is_empty() {
        r.check(
            "data traffic never lost its device",
            "traffic",
            ops > 0 && lost == 0,
            vec![format!("{lost} of {ops} reads returned all ones")],
            0,
        );
        r.measure(
            "data traffic",
            "traffic",
            vec![format!(
                "{ops} BAR reads on {} lent devices, {:.0} reads/s, {}",
                traffic.len(),
                ops as f64 / elapsed,
                percentiles(&mut data_lat)
            )],
            0,
        );
    }
    if !control_devices.is_empty() {
        // Requests for devices the other clients hold are refused by design; nothing else may fail.
        let refused = errors
            .iter()
            .filter(|e| e.contains("CONFLICT") || e.contains("NO_CAPACITY"))
            .count();
        let unexpected: Vec<String> = errors
            .into_iter()
            .filter(|e| !e.contains("CONFLICT") && !e.contains("NO_CAPACITY"))
            .collect();
        r.check(
            "control plane answered every request",
            "control plane",
            cycles > 0 && unexpected.is_empty(),
            [
                vec![format!(
                    "{cycles} cycles, {refused} refused for capacity or conflict"
                )],
                unexpected,
            ]
            .concat(),
            0,
        );
        r.measure(
            "control-plane load",
            "control plane",
            vec![format!(
                "{cycles} borrow+release cycles by {} clients, {:.0} cycles/s, borrow {}",
                control_devices.len(),
                cycles as f64 / elapsed,
                percentiles(&mut control_lat)
            )],
            0,
        );
    }
    r.checks
}

/// Where a borrower reaches a lent device's BAR: (borrower, address).
type NodeIdAddr = (pcipool_fabric::NodeId, u64);
