//! Benchmarks that print ratios measured side by side in one run (timing lives here, never in tests).
//! Each returns its report as text; `pcipool bench ...` prints it.
//!
//! # Layout
//! - [`decode`]: `pcipool decode` against `lspci -F ... -vvv` on the same file, as whole processes.
//! - [`datapath`]: the simulated NVMe data path by a local driver, a borrower and sharers, interleaved.
//! - [`api`]: durable borrow+release cycles through the HTTP API.
//! - [`restart`]: a controller reopening a large store.
//! - [`failover`]: the leading controller of a pool on etcd killed, to the first borrow after.
//! - [`fabric`]: loading a large fabric description, and placement decisions per second.
//! - [`lab`]: lend and return on the VM lab (real kernels under QEMU), and where the time goes.

pub mod api;
pub mod datapath;
pub mod decode;
pub mod fabric;
pub mod failover;
pub mod lab;
pub mod restart;

use std::fmt::Display;

/// A benchmark and its parameters: `pcipool bench <name> [options]`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Benchmark {
    /// The simulated data path: 4 KiB sequential and random reads and writes at queue depths 1 and 32
    /// through the NVMe-like device, by a driver on the lender (direct BAR access), by a borrower
    /// (through a fabric window), and by 2 and 4 hosts sharing it (each its own window and queue pair),
    /// interleaved; prints IOPS, MB/s, latency percentiles and the lent/local ratios.
    Datapath {
        /// I/Os per cell (pattern, depth, kind, mode), in 7 interleaved rounds.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(7..))]
        ios: u64,
    },
    /// Durable borrow+release cycles per second through the HTTP API (in-process server, real clients).
    Api {
        /// Fabric description (default: the built-in 64-host rack).
        #[arg(long, value_name = "FILE")]
        fabric: Option<std::path::PathBuf>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
        clients: usize,
        /// Cycles in total.
        #[arg(long, default_value_t = 2000)]
        cycles: usize,
        /// `sqlite`, or `etcd`: SQLite, then etcd with one member and with three (started on
        /// loopback; Debian's etcd-server), side by side.
        #[arg(long, value_enum, default_value_t)]
        store: api::StoreChoice,
    },
    /// Failover of a pool on etcd (three members, three controllers, four agents, on loopback): the
    /// leading controller SIGKILLed again and again, timed to the first successful borrow through the
    /// others; p50, p99 and max.
    Failover {
        /// Leader kills.
        #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        kills: usize,
    },
    /// Controller restart time with a large store (leases and audit records).
    Restart {
        /// Active leases in the store.
        #[arg(long, default_value_t = 100_000)]
        leases: u64,
        /// Audit records in the store.
        #[arg(long, default_value_t = 1_000_000)]
        audit: u64,
    },
    /// Scheduler placement decisions per second against every device of a fabric.
    Schedule {
        /// Fabric description (default: fabrics/fabric-1024.toml beside the checkout, else the lab).
        #[arg(long, value_name = "FILE")]
        fabric: Option<std::path::PathBuf>,
        /// Decisions to time.
        #[arg(long, default_value_t = 20000)]
        decisions: u64,
    },
    /// Load a fabric description and walk every host's inventory; prints both times.
    Sim {
        /// Fabric description (default: fabrics/fabric-1024.toml beside the binary's checkout, else the lab).
        #[arg(long, value_name = "FILE")]
        fabric: Option<std::path::PathBuf>,
    },
    /// Lend and return on the VM lab (Linux guests under QEMU, the hypervisor as the fabric): p50 and
    /// p99 of borrow to block device usable on the borrower and of release to drive usable on its
    /// lender, each step's share, and the shares of QEMU, the guest kernels, the transport and pcipool
    /// itself, measured in one run.
    Lab {
        /// The lab description (default: the shipped 3-host lab).
        #[arg(long, value_name = "FILE")]
        lab: Option<std::path::PathBuf>,
        /// Lend and return cycles.
        #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        cycles: usize,
    },
    /// `pcipool decode` against `lspci -F ... -vvv` on the same file of N dumps, as whole processes.
    Decode {
        /// Dumps in the generated file.
        #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        dumps: usize,
        /// Timed rounds per tool (alternating, the median is reported).
        #[arg(long, default_value_t = 15, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        rounds: usize,
        /// Write the generated dump file here and keep it (to rerun either tool by hand).
        #[arg(long, value_name = "PATH")]
        keep_file: Option<std::path::PathBuf>,
    },
}

/// Runs `benchmark` and returns its report. `pcipool` is the binary the decode benchmark times
/// (normally the running one).
///
/// # Errors
/// [`BenchError`].
pub fn run(benchmark: &Benchmark, pcipool: &std::path::Path) -> Result<String, BenchError> {
    match benchmark {
        Benchmark::Datapath { ios } => datapath::run(*ios),
        Benchmark::Api {
            fabric,
            clients,
            cycles,
            store,
        } => api::run(fabric.as_deref(), *clients, *cycles, *store),
        Benchmark::Restart { leases, audit } => restart::run(*leases, *audit),
        Benchmark::Failover { kills } => failover::run(pcipool, *kills),
        Benchmark::Schedule { fabric, decisions } => {
            fabric::schedule(fabric.as_deref(), *decisions)
        }
        Benchmark::Sim { fabric } => fabric::load(fabric.as_deref()),
        Benchmark::Lab { lab, cycles } => {
            let text = match lab {
                Some(file) => std::fs::read_to_string(file)
                    .map_err(BenchError::context(&format!("reading {}", file.display())))?,
                None => pcipool_lab::description::VM_3.to_owned(),
            };
            let dir = scratch_dir("lab")?;
            let report = lab::run(&text, &dir, *cycles, pcipool);
            // The lab's files (images, logs) are scratch; losing them loses no result.
            let _kept = std::fs::remove_dir_all(&dir);
            report
        }
        Benchmark::Decode {
            dumps,
            rounds,
            keep_file,
        } => decode::run(pcipool, *dumps, *rounds, keep_file.as_deref()),
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A fabric description that does not load (the CLI's "bad input").
    #[error(transparent)]
    Fabric(#[from] pcipool_sim::LoadError),
    /// The controller could not be assembled.
    #[error(transparent)]
    Serve(#[from] pcipool_serve::ServeError),
    /// Setting up or running the benchmark failed.
    #[error("{0}")]
    Failed(String),
    /// Writing the report text failed (it cannot, into a `String`; kept so no error is dropped).
    #[error("formatting the report")]
    Format(#[from] std::fmt::Error),
}

impl BenchError {
    /// Wraps an error with what was being done.
    fn context<E: Display>(what: &str) -> impl FnOnce(E) -> Self + '_ {
        move |e| Self::Failed(format!("{what}: {e}"))
    }
}

/// A fresh scratch directory under the system temp directory for one benchmark of this process.
fn scratch_dir(name: &str) -> Result<std::path::PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("pcipool-bench-{name}-{}", std::process::id()));
    // A leftover from a killed run of the same pid is stale: start clean.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(BenchError::context("clearing a stale directory"))?;
    }
    std::fs::create_dir_all(&dir).map_err(BenchError::context("creating a scratch directory"))?;
    Ok(dir)
}

/// Nearest-rank percentile (per mille) of sorted samples.
fn per_mille<T: Copy + Default>(sorted: &[T], pm: usize) -> T {
    let n = sorted.len();
    sorted
        .get((n * pm / 1000).min(n.saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}
