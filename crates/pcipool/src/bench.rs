//! Benchmarks that print ratios measured side by side in one run. Timing lives here, never in tests.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pcipool_pcie::Bdf;
use pcipool_pcie::dump::{parse_dump, write_dump};

/// Where the shared corpus sits relative to a checkout (`../shared/corpus/pciutils-tests`), if present.
fn corpus_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|a| a.join("shared/corpus/pciutils-tests"))
        .chain(std::iter::once(PathBuf::from(
            "../shared/corpus/pciutils-tests",
        )))
        .find(|p| p.is_dir())
}

/// Config spaces to cycle through: the builder presets plus every real device of the corpus.
fn sample_configs() -> Vec<Vec<u8>> {
    let mut configs: Vec<Vec<u8>> = pcipool_pcie::presets::all()
        .into_iter()
        .map(|(_, b)| b.build().bytes)
        .collect();
    if let Some(dir) = corpus_dir()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            if let Ok(devices) = parse_dump(&text) {
                configs.extend(devices.into_iter().map(|d| d.bytes));
            }
        }
    }
    configs
}

fn write_bench_file(path: &Path, dumps: usize) -> anyhow::Result<usize> {
    let configs = sample_configs();
    let mut text = String::with_capacity(dumps * 13_000);
    for i in 0..dumps {
        let bus = u8::try_from(i / 32 % 256).unwrap_or(0);
        let dev = u8::try_from(i % 32).unwrap_or(0);
        let domain = u32::try_from(i / (32 * 256)).unwrap_or(0);
        let bdf = Bdf::new(domain, bus, dev, 0).context("benchmark address")?;
        write_dump(&mut text, bdf, "Device", &configs[i % configs.len()]);
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(configs.len())
}

fn time_once(program: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {}", program.display()))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{} {} failed: {status}", program.display(), args.join(" "));
    }
    Ok(elapsed)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `pcipool decode FILE` vs `lspci -F FILE -vvv`, whole processes, alternating rounds.
///
/// # Errors
/// When lspci is missing or either tool fails on the file.
pub fn decode(dumps: usize, rounds: usize, keep_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let lspci = ["/usr/bin/lspci", "/bin/lspci", "/usr/sbin/lspci"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("lspci not found: install pciutils (apt-get install pciutils)")?;
    let exe = std::env::current_exe().context("locating the pcipool binary")?;
    let dir = std::env::temp_dir().join(format!("pcipool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = keep_file.map_or_else(|| dir.join("dumps.txt"), Path::to_path_buf);
    let distinct = write_bench_file(&file, dumps)?;
    let file_arg = file.to_string_lossy().into_owned();

    // One untimed run each warms the page cache and pci.ids.
    time_once(&exe, &["decode", &file_arg])?;
    time_once(&lspci, &["-F", &file_arg, "-vvv"])?;
    let mut ours = Vec::with_capacity(rounds);
    let mut theirs = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        ours.push(time_once(&exe, &["decode", &file_arg])?);
        theirs.push(time_once(&lspci, &["-F", &file_arg, "-vvv"])?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (ours, theirs) = (median(ours), median(theirs));
    let ratio = theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9);
    println!(
        "decode benchmark: {dumps} dumps ({distinct} distinct config spaces), {rounds} alternating rounds, medians"
    );
    println!(
        "  pcipool decode FILE     {:>9.2} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "  lspci -F FILE -vvv      {:>9.2} ms",
        theirs.as_secs_f64() * 1e3
    );
    println!("  ratio lspci/pcipool     {ratio:>9.2}x   (target >= 5x)");
    Ok(ExitCode::SUCCESS)
}

/// `pcipool bench datapath`: the same I/Os by a driver on the lender (BAR region mapped directly) and by
/// a borrower (BAR through a fabric window, which checks the mapping on every register access), against
/// one NVMe-like device served by its own thread from shared memory. Modes are interleaved in rounds so
/// machine noise hits both alike.
///
/// # Errors
/// Setup failures.
pub fn datapath(ios: u64) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use pcipool_datapath::SharedNvme;
    use pcipool_datapath::driver::Driver;
    use pcipool_nvme::{Controller, RamMedium};
    use pcipool_shm::Region;
    use pcipool_shm::window::{Window, WindowTable};

    const BLOCKS: u64 = 65_536; // 32 MiB of 512-byte blocks
    const LOCAL_BASE: u64 = 0x1_0000_0000;
    const LENT_BASE: u64 = 0x2_0000_0000;
    let root = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!("pcipool-bench-datapath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let shm = |e: pcipool_shm::ShmError| anyhow::anyhow!("{e}");
    let local_seg = Region::create(&dir, "local", 0x20000).map_err(shm)?;
    let lent_seg = Region::create(&dir, "lent", 0x20000).map_err(shm)?;
    let table = WindowTable::create(&dir, "windows", 1).map_err(shm)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let device = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut dev = SharedNvme::create(
                &dir,
                "bar0",
                Controller::new("BENCH", "pcipool datapath bench"),
                RamMedium::new(512, BLOCKS),
            )
            .map_err(shm)?;
            dev.dma.map(&dir, "local", LOCAL_BASE).map_err(shm)?;
            dev.dma.map(&dir, "lent", LENT_BASE).map_err(shm)?;
            let _ = ready_tx.send(());
            while !stop.load(Ordering::Relaxed) {
                dev.poll().map_err(shm)?;
            }
            Ok(())
        })
    };
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the device thread did not start"))?;
    let bar = Region::open(&dir, "bar0").map_err(shm)?;
    let mut local = Driver::new(bar, local_seg, LOCAL_BASE, 1);
    let drv = |e: pcipool_datapath::driver::DriverError| anyhow::anyhow!("{e}");
    local.enable().map_err(drv)?;
    local.create_io_queues(1, LOCAL_BASE).map_err(drv)?;
    local.create_io_queues(2, LENT_BASE).map_err(drv)?;
    let generation = table.open_slot(0).map_err(shm)?;
    let window = Window::attach(&dir, "windows", 0, generation, "bar0").map_err(shm)?;
    let mut lent = Driver::new(window, lent_seg, LENT_BASE, 2);

    // Warm-up: touch the whole medium once (its memory is mapped lazily; first touches would be charged
    // to whichever mode runs first) and both drivers' buffers.
    for lba in (0..BLOCKS).step_by(8) {
        local.write(lba, 8, 0).map_err(drv)?;
        lent.read(lba, 8, 0).map_err(drv)?;
    }
    // A fixed pseudo-random sequence of 4 KiB-aligned LBAs (8 blocks each), the same for both modes.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next_lba = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % (BLOCKS / 8)) * 8
    };
    let rounds = 5;
    let per_round = ios / rounds;
    let mut samples: [[Vec<u64>; 2]; 2] = Default::default(); // [mode][read, write]
    let mut elapsed = [[0f64; 2]; 2];
    for _ in 0..rounds {
        for (m, is_lent) in [(0usize, false), (1, true)] {
            for (k, write) in [(0usize, false), (1, true)] {
                let started = std::time::Instant::now();
                for _ in 0..per_round {
                    let lba = next_lba();
                    let t = std::time::Instant::now();
                    let r = match (is_lent, write) {
                        (false, false) => local.read(lba, 8, 0),
                        (false, true) => local.write(lba, 8, 0),
                        (true, false) => lent.read(lba, 8, 0),
                        (true, true) => lent.write(lba, 8, 0),
                    };
                    r.map_err(drv)?;
                    samples[m][k].push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                elapsed[m][k] += started.elapsed().as_secs_f64();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = device.join();
    let _ = std::fs::remove_dir_all(&dir);
    let pct = |v: &mut Vec<u64>, per_mille: usize| {
        v.sort_unstable();
        let n = v.len();
        v.get((n * per_mille / 1000).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "datapath benchmark: 4 KiB random I/O, queue depth 1, {} I/Os per mode and kind, device on its own thread",
        per_round * rounds
    );
    for (k, kind) in ["read", "write"].iter().enumerate() {
        let mut local_s = std::mem::take(&mut samples[0][k]);
        let mut lent_s = std::mem::take(&mut samples[1][k]);
        let n = (per_round * rounds) as f64;
        let iops = [n / elapsed[0][k].max(1e-9), n / elapsed[1][k].max(1e-9)];
        let p50 = [pct(&mut local_s, 500), pct(&mut lent_s, 500)];
        let p99 = [pct(&mut local_s, 990), pct(&mut lent_s, 990)];
        println!(
            "  {kind:<5} local {:>8.0} IOPS ({:>6.1} MB/s) p50 {:>6.2} us p99 {:>6.2} us",
            iops[0],
            iops[0] * 4096.0 / 1e6,
            p50[0] as f64 / 1e3,
            p99[0] as f64 / 1e3
        );
        println!(
            "  {kind:<5} lent  {:>8.0} IOPS ({:>6.1} MB/s) p50 {:>6.2} us p99 {:>6.2} us",
            iops[1],
            iops[1] * 4096.0 / 1e6,
            p50[1] as f64 / 1e3,
            p99[1] as f64 / 1e3
        );
        println!(
            "  {kind:<5} lent/local throughput {:.3}   (target >= 0.95), added p50 {} ns   (target < 1,000 ns)",
            iops[1] / iops[0].max(1e-9),
            i128::from(p50[1]) - i128::from(p50[0])
        );
    }
    println!("  not measured yet: sequential I/O, queue depth 32, 2 and 4 sharing hosts");
    Ok(ExitCode::SUCCESS)
}
