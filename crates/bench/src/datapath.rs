//! The simulated data path: 4 KiB sequential and random reads and writes at queue depths 1 and 32
//! through the NVMe-like device, by a driver on the lender (direct BAR access), by a borrower (through a
//! fabric window) and by 2 and 4 hosts sharing it, interleaved; IOPS, MB/s, latency percentiles and
//! the lent/local ratios.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::{BenchError, per_mille};

/// One cell of the data-path benchmark: `n` I/Os of 4 KiB at depth `qd` by one driver; returns each
/// I/O's latency (submission to reaped completion) in nanoseconds.
fn datapath_cell(
    d: &mut impl pcipool_sim_datapath::driver::BlockIo,
    next_lba: &mut dyn FnMut() -> u64,
    write: bool,
    qd: u16,
    n: u64,
) -> Result<Vec<u64>, BenchError> {
    let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut free: Vec<u64> = (0..u64::from(qd)).collect();
    let mut in_flight: Vec<(u16, u64, Instant)> = Vec::with_capacity(usize::from(qd));
    let mut submitted = 0;
    let mut spins = 0u32;
    let mut last_progress = Instant::now();
    while (latencies.len() as u64) < n {
        while submitted < n
            && let Some(slot) = free.pop()
        {
            let lba = next_lba();
            let t = Instant::now();
            let cid = if write {
                d.submit_write(lba, 8, slot * 4096)
            } else {
                d.submit_read(lba, 8, slot * 4096)
            }
            .map_err(|e| BenchError::Failed(e.to_string()))?;
            in_flight.push((cid, slot, t));
            submitted += 1;
        }
        match d.reap().map_err(|e| BenchError::Failed(e.to_string()))? {
            Some(c) => {
                if c.status != 0 {
                    return Err(BenchError::Failed(format!(
                        "I/O failed with status {:#x}",
                        c.status
                    )));
                }
                let Some(i) = in_flight.iter().position(|f| f.0 == c.cid) else {
                    return Err(BenchError::Failed(format!(
                        "completion for unknown command {}",
                        c.cid
                    )));
                };
                let (_, slot, t) = in_flight.swap_remove(i);
                latencies.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                free.push(slot);
                spins = 0;
                last_progress = Instant::now();
            }
            None => {
                // On few cores the device runs on a sibling thread: spin briefly, then let it run.
                spins += 1;
                if spins > 64 {
                    std::thread::yield_now();
                    spins = 0;
                    if last_progress.elapsed() > Duration::from_secs(10) {
                        return Err(BenchError::Failed(
                            "the device stopped completing I/O".into(),
                        ));
                    }
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    Ok(latencies)
}

/// 4 KiB-aligned LBAs (8 blocks of 512 bytes): in order from `start`, or pseudo-random over the device.
fn lba_source(random: bool, seed: u64, start: u64, blocks: u64) -> impl FnMut() -> u64 {
    let extents = (blocks / 8).max(1);
    let mut state = seed | 1;
    let mut next = start / 8;
    move || {
        if random {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % extents) * 8
        } else {
            let lba = (next % extents) * 8;
            next += 1;
            lba
        }
    }
}

/// The same I/Os by a driver on the lender (BAR region mapped directly), by a
/// borrower (BAR through a fabric window, which checks the mapping on every register access), and by
/// 2 and 4 hosts sharing the device (each through its own window and queue pair), against one NVMe-like
/// device served by the fabric's data-path service on its own thread. Cells are interleaved in rounds
/// so machine noise hits every mode alike.
///
/// # Errors
/// Setup failures.
pub fn run(ios: u64) -> Result<String, BenchError> {
    use pcipool_sim_datapath::driver::{Driver, SharedClient, layout};
    use pcipool_sim_datapath::service::{DataPath, Idle};
    use pcipool_sim_shm::Region;
    use pcipool_sim_shm::window::Window;

    const BLOCKS: u64 = 65_536; // 32 MiB of 512-byte blocks
    const DEV: &str = "n1:0000:03:00.0";
    const SHARERS: usize = 4;
    let dir = pcipool_sim_server::shm_root()
        .join(format!("pcipool-bench-datapath-{}", std::process::id()));
    let shm = |e: pcipool_sim_shm::ShmError| BenchError::Failed(e.to_string());
    let dpe = |e: pcipool_sim_datapath::service::DataPathError| BenchError::Failed(e.to_string());
    let drv = |e: pcipool_sim_datapath::driver::DriverError| BenchError::Failed(e.to_string());
    let mut out = String::new();
    let result = (|| -> Result<(), BenchError> {
        let mut dp = DataPath::new(&dir).map_err(dpe)?;
        let bar = dp.add_nvme(DEV, 512, BLOCKS, Idle::Spin).map_err(dpe)?;
        let segment =
            |dp: &mut DataPath, lease: u64, host: &str| -> Result<(Region, u64), BenchError> {
                let file = dp
                    .create_segment(host, host, "bench", layout::SEGMENT)
                    .map_err(dpe)?;
                let seg = Region::open(&dir, &file).map_err(shm)?;
                let base = dp
                    .map_segment(lease, DEV, host, host, host, "bench")
                    .map_err(dpe)?;
                Ok((seg, base))
            };
        // (a) The lender's own driver: BAR mapped directly, owns the admin queue.
        let (seg, base) = segment(&mut dp, 1, "n1")?;
        let mut local = Driver::new(Region::open(&dir, &bar).map_err(shm)?, seg, base, 1);
        local.enable().map_err(drv)?;
        local.create_io_queues(1, base).map_err(drv)?;
        // (b) a borrower through a window and (c) shared-access clients, each through its own window
        // with its own queue pair. The lender's driver creates every queue pair (it owns the admin
        // queue); what is measured is the I/O path, which is the native driver's under Device Lending.
        let mut windows = Vec::new();
        for (i, host) in ["n2", "n3", "n4", "n5", "n6"].iter().enumerate() {
            let lease = 2 + i as u64;
            let g = dp.map_bar(lease, DEV, host, host).map_err(dpe)?;
            let w = Window::attach(&dir, &g.table, g.slot, g.key, &g.region).map_err(shm)?;
            let (seg, base) = segment(&mut dp, lease, host)?;
            let qid = u16::try_from(2 + i).unwrap_or(u16::MAX);
            local.create_io_queues(qid, base).map_err(drv)?;
            windows.push((w, seg, base, qid));
        }
        let mut windows = windows.into_iter();
        let Some((w, seg, base, qid)) = windows.next() else {
            return Err(BenchError::Failed("no window for the borrower".into()));
        };
        let mut lent = Driver::new(w, seg, base, qid);
        let mut sharers: Vec<SharedClient<Window>> = windows
            .map(|(w, seg, base, qid)| SharedClient::new(w, seg, base, qid))
            .collect();
        // Warm-up: the medium and every buffer are touched once, so first touches are charged to no mode.
        let mut warm = lba_source(false, 0, 0, BLOCKS);
        datapath_cell(&mut local, &mut warm, true, 32, BLOCKS / 8)?;
        datapath_cell(&mut lent, &mut warm, false, 32, 256)?;
        for c in &mut sharers {
            datapath_cell(c, &mut warm, false, 32, 256)?;
        }

        let rounds = 7;
        let per_round = (ios / rounds).max(1);
        // Cells: (random, qd, write) x mode (0 local, 1 lent, 2 shared by 2, 3 shared by 4).
        let shapes: Vec<(bool, u16, bool)> = [false, true]
            .iter()
            .flat_map(|r| [1u16, 32].map(move |q| (*r, q)))
            .flat_map(|(r, q)| [false, true].map(move |w| (r, q, w)))
            .collect();
        let mut samples: Vec<[Vec<u64>; 4]> = shapes.iter().map(|_| Default::default()).collect();
        // Throughput per round, per cell and mode: the median over rounds is reported, so one round that
        // the machine preempted (a 4 ms time slice is most of a round here) does not decide a ratio.
        let mut round_iops: Vec<[Vec<f64>; 4]> =
            shapes.iter().map(|_| Default::default()).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..rounds {
            for (cell, &(random, qd, write)) in shapes.iter().enumerate() {
                // Every mode takes every position in the round in turn (what ran just before matters).
                for turn in 0..4usize {
                    let mode = (usize::try_from(round % 4).unwrap_or(0) + turn) % 4;
                    seed = seed.wrapping_add(0x1234_5678_9abc_def1);
                    let start = round * per_round * 8;
                    let t = Instant::now();
                    let lat = match mode {
                        0 => datapath_cell(
                            &mut local,
                            &mut lba_source(random, seed, start, BLOCKS),
                            write,
                            qd,
                            per_round,
                        )?,
                        1 => datapath_cell(
                            &mut lent,
                            &mut lba_source(random, seed, start, BLOCKS),
                            write,
                            qd,
                            per_round,
                        )?,
                        _ => {
                            let hosts = if mode == 2 { 2 } else { SHARERS };
                            let each = (per_round / hosts as u64).max(1);
                            let results: Vec<Result<Vec<u64>, BenchError>> =
                                std::thread::scope(|scope| {
                                    let handles: Vec<_> = sharers[..hosts]
                                        .iter_mut()
                                        .enumerate()
                                        .map(|(h, d)| {
                                            let s = seed.wrapping_add(h as u64);
                                            // Sequential sharers stream through regions of their own.
                                            let from = start + h as u64 * (BLOCKS / SHARERS as u64);
                                            scope.spawn(move || {
                                                datapath_cell(
                                                    d,
                                                    &mut lba_source(random, s, from, BLOCKS),
                                                    write,
                                                    qd,
                                                    each,
                                                )
                                            })
                                        })
                                        .collect();
                                    handles
                                        .into_iter()
                                        .map(|h| {
                                            h.join().unwrap_or_else(|_| {
                                                Err(BenchError::Failed(
                                                    "a sharer thread panicked".to_owned(),
                                                ))
                                            })
                                        })
                                        .collect()
                                });
                            let mut all = Vec::new();
                            for r in results {
                                all.extend(r?);
                            }
                            all
                        }
                    };
                    round_iops[cell][mode]
                        .push(lat.len() as f64 / t.elapsed().as_secs_f64().max(1e-9));
                    samples[cell][mode].extend(lat);
                }
            }
        }
        drop((lent, sharers));
        drop(local);
        drop(dp);

        writeln!(
            out,
            "datapath benchmark: 4 KiB I/O, {per_round} I/Os per cell in each of {rounds} interleaved rounds \
             (IOPS: median of the rounds; latency: all I/Os); device model on its own thread ({} CPUs here; \
             sharers contend for them)",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        )?;
        writeln!(
            out,
            "  {:<10} {:>3} {:<5} {:<9} {:>9} {:>8} {:>8} {:>8}",
            "pattern", "qd", "kind", "mode", "IOPS", "MB/s", "p50 us", "p99 us"
        )?;
        let modes = ["local", "lent", "shared-2", "shared-4"];
        let mut summary = Vec::new();
        let mut all_met = true;
        for (cell, &(random, qd, write)) in shapes.iter().enumerate() {
            let mut iops = [0f64; 4];
            let mut p50 = [0u64; 4];
            for mode in 0..4 {
                let s = &mut samples[cell][mode];
                s.sort_unstable();
                let r = &mut round_iops[cell][mode];
                r.sort_by(f64::total_cmp);
                iops[mode] = r.get(r.len() / 2).copied().unwrap_or(0.0);
                p50[mode] = per_mille(s, 500);
                writeln!(
                    out,
                    "  {:<10} {:>3} {:<5} {:<9} {:>9.0} {:>8.1} {:>8.2} {:>8.2}",
                    if random { "random" } else { "sequential" },
                    qd,
                    if write { "write" } else { "read" },
                    modes[mode],
                    iops[mode],
                    iops[mode] * 4096.0 / 1e6,
                    p50[mode] as f64 / 1e3,
                    per_mille(s, 990) as f64 / 1e3
                )?;
            }
            let ratio = iops[1] / iops[0].max(1e-9);
            let added = i128::from(p50[1]) - i128::from(p50[0]);
            let met = ratio >= 0.95 && added < 1_000;
            all_met &= met;
            summary.push(format!(
                "  {:<10} qd{:<2} {:<5} lent/local {ratio:.3}, added p50 {added:>5} ns{}",
                if random { "random" } else { "sequential" },
                qd,
                if write { "write" } else { "read" },
                if met { "" } else { "   <- target missed" }
            ));
        }
        writeln!(
            out,
            "ratios (target: lent/local throughput >= 0.95 and added p50 < 1,000 ns):"
        )?;
        for line in summary {
            writeln!(out, "{line}")?;
        }
        writeln!(
            out,
            "targets {}",
            if all_met {
                "met in every cell"
            } else {
                "NOT met in every cell (see above; rerun on a quieter machine to tell noise from cost)"
            }
        )?;
        Ok(())
    })();
    // The device's files are this run's scratch; a failure to remove them is worth a word, not a failure.
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        writeln!(out, "(could not remove {}: {e})", dir.display())?;
    }
    result.map(|()| out)
}
