//! `pcipool decode FILE` against `lspci -F FILE -vvv` on the same file of N dumps, as whole processes in
//! alternating rounds (medians).

use std::fmt::Write as _;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcipool_pcie::Bdf;
use pcipool_pcie::dump::{parse_dump, write_dump};

use crate::BenchError;

/// The optional pciutils corpus of real dumps: `$PCIPOOL_CORPUS`, else a `shared/corpus/pciutils-tests`
/// beside the checkout when one is there (optional; the benchmark runs on the presets alone without it).
fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PCIPOOL_CORPUS") {
        return Some(PathBuf::from(dir)).filter(|p| p.is_dir());
    }
    let exe = std::env::current_exe().ok()?;
    let cwd = std::env::current_dir().ok()?;
    exe.ancestors()
        .chain(cwd.ancestors())
        .map(|a| a.join("shared/corpus/pciutils-tests")) // optional corpus lookup
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

fn write_bench_file(path: &Path, dumps: usize) -> Result<usize, BenchError> {
    let configs = sample_configs();
    let mut text = String::with_capacity(dumps * 13_000);
    for i in 0..dumps {
        let bus = u8::try_from(i / 32 % 256).unwrap_or(0);
        let dev = u8::try_from(i % 32).unwrap_or(0);
        let domain = u32::try_from(i / (32 * 256)).unwrap_or(0);
        let bdf =
            Bdf::new(domain, bus, dev, 0).map_err(BenchError::context("benchmark address"))?;
        write_dump(&mut text, bdf, "Device", &configs[i % configs.len()]);
    }
    std::fs::write(path, text)
        .map_err(BenchError::context(&format!("writing {}", path.display())))?;
    Ok(configs.len())
}

fn time_once(program: &Path, args: &[&str]) -> Result<Duration, BenchError> {
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(BenchError::context(&format!(
            "starting {}",
            program.display()
        )))?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(BenchError::Failed(format!(
            "{} {} failed: {status}",
            program.display(),
            args.join(" ")
        )));
    }
    Ok(elapsed)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// `pcipool` (the binary at `pcipool`, run as `pcipool decode FILE`) vs `lspci -F FILE -vvv` on a
/// generated file of `dumps` dumps, `rounds` alternating rounds each; the file is kept at `keep_file`.
///
/// # Errors
/// When lspci is missing or either tool fails on the file.
pub fn run(
    pcipool: &Path,
    dumps: usize,
    rounds: usize,
    keep_file: Option<&Path>,
) -> Result<String, BenchError> {
    let mut out = String::new();
    let lspci = ["/usr/bin/lspci", "/bin/lspci", "/usr/sbin/lspci"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            BenchError::Failed(
                "lspci not found: install pciutils (apt-get install pciutils)".into(),
            )
        })?;
    let exe = pcipool;
    let dir = crate::scratch_dir("decode")?;
    let file = keep_file.map_or_else(|| dir.join("dumps.txt"), Path::to_path_buf);
    let distinct = write_bench_file(&file, dumps)?;
    let file_arg = file.to_string_lossy().into_owned();

    // One untimed run each warms the page cache and pci.ids.
    time_once(exe, &["decode", &file_arg])?;
    time_once(&lspci, &["-F", &file_arg, "-vvv"])?;
    let mut ours = Vec::with_capacity(rounds);
    let mut theirs = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        ours.push(time_once(exe, &["decode", &file_arg])?);
        theirs.push(time_once(&lspci, &["-F", &file_arg, "-vvv"])?);
    }
    std::fs::remove_dir_all(&dir).map_err(BenchError::context("removing the scratch directory"))?;
    let (ours, theirs) = (median(ours), median(theirs));
    let ratio = theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9);
    writeln!(
        out,
        "decode benchmark: {dumps} dumps ({distinct} distinct config spaces), {rounds} alternating rounds, medians"
    )?;
    writeln!(
        out,
        "  pcipool decode FILE     {:>9.2} ms",
        ours.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "  lspci -F FILE -vvv      {:>9.2} ms",
        theirs.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "  ratio lspci/pcipool     {ratio:>9.2}x   (target >= 5x)"
    )?;
    Ok(out)
}
