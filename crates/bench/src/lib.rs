//! Benchmarks that print ratios measured side by side in one run (timing lives here, never in tests).
//! Each returns its report as text; `pcipool bench ...` prints it.
//!
//! # Layout
//! - [`decode`]: `pcipool decode` against `lspci -F ... -vvv` on the same file, as whole processes.
//! - [`datapath`]: the simulated NVMe data path by a local driver, a borrower and sharers, interleaved.
//! - [`api`]: durable borrow+release cycles through the HTTP API.
//! - [`restart`]: a controller reopening a large store.
//! - [`fabric`]: loading a large fabric description, and placement decisions per second.

pub mod api;
pub mod datapath;
pub mod decode;
pub mod fabric;
pub mod restart;

use std::fmt::Display;

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
