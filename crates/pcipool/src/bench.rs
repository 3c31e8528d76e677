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
