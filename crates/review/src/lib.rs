//! The system review the seed ends with: one report (HTML and JSON) on a pool's whole PCIe system. Per
//! host the root complex, CPU, OS, kernel and agent with what they support; the endpoint inventory with
//! lanes, link speeds, BARs, drivers and reset methods; a bandwidth budget per fabric link and switch
//! uplink against the devices that would cross it, oversubscription named; the software path of each
//! access model; and the qualification summary with remedies.
//!
//! # Layout
//! - [`model`]: what a review is made from ([`System`]).
//! - [`fabric`]: a simulated fabric as the source; [`live`]: a running pool, through its API.
//! - [`budget`]: the links' bandwidth budgets.
//! - [`report`]: the conclusions ([`Review`], also the JSON report).
//! - [`html`]: the page.
#![deny(missing_docs)]

pub mod budget;
pub mod fabric;
pub mod html;
pub mod live;
pub mod model;
pub mod report;

pub use model::System;
pub use report::{Review, review};

use std::path::{Path, PathBuf};

/// Why a review could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The fabric description does not build.
    #[error("the fabric does not build: {0}")]
    Fabric(String),
    /// The pool's API could not be read.
    #[error("reading the pool at {url}: {source}")]
    Pool {
        /// The controller.
        url: String,
        /// What failed.
        source: pcipool_client::ClientError,
    },
    /// The fabric description could not be read or parsed.
    #[error(transparent)]
    Load(pcipool_sim::LoadError),
    /// The pool answered something that does not make sense.
    #[error("{0}")]
    BadAnswer(String),
    /// The report could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A host's platform facts in the review's words (`os` and `agent_version` come from elsewhere).
pub fn platform_of(
    p: &pcipool_qualify::PlatformFacts,
    os: &str,
    agent_version: &str,
) -> model::Platform {
    let ids = pcipool_describe::PciIds::system();
    let root_complex = p.host_bridge.map_or_else(
        || "unknown (no host bridge at 00:00.0)".to_owned(),
        |(vendor, device)| {
            let name = match (ids.vendor(vendor), ids.device(vendor, device)) {
                (Some(v), Some(d)) => format!("{v} {d}"),
                (Some(v), None) => v.to_owned(),
                _ => "unnamed".to_owned(),
            };
            format!("{name} [{vendor:04x}:{device:04x}]")
        },
    );
    model::Platform {
        root_complex,
        cpu: p.cpu.as_ref().map_or_else(
            || "unknown".to_owned(),
            |(v, family)| format!("{v} family {family}"),
        ),
        os: os.to_owned(),
        kernel: p
            .kernel_release
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
        agent_version: agent_version.to_owned(),
        iommu: format!("{:?} ({})", p.iommu, p.iommu_evidence).to_lowercase(),
        supports: vec![
            ("driver_override".to_owned(), p.driver_override),
            ("drivers_probe".to_owned(), p.drivers_probe),
            ("SR-IOV".to_owned(), p.sriov_support),
        ],
    }
}

/// Reviews the fabric described in `fabric` (simulated), or without one the pool `client` reaches.
///
/// # Errors
/// [`ReviewError`].
pub fn make(fabric: Option<&Path>, client: &pcipool_client::Client) -> Result<Review, ReviewError> {
    let system = match fabric {
        Some(path) => {
            let loaded = pcipool_sim::FabricDesc::load(Some(path)).map_err(ReviewError::Load)?;
            fabric::system(&loaded.desc, &loaded.name)?
        }
        None => live::system(client)?,
    };
    Ok(review(system))
}

/// Writes `review.html` and `review.json` into `dir` (made if missing); returns both paths.
///
/// # Errors
/// [`ReviewError::Write`].
pub fn write(review: &Review, dir: &Path) -> Result<(PathBuf, PathBuf), ReviewError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| ReviewError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(fail(dir))?;
    let html = dir.join("review.html");
    let json = dir.join("review.json");
    std::fs::write(&html, html::render(review)).map_err(fail(&html))?;
    let text = serde_json::to_string_pretty(review).map_err(|e| ReviewError::Write {
        path: json.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&json, text + "\n").map_err(fail(&json))?;
    Ok((html, json))
}
