//! `pcipool validate`: suites an operator runs against a pool to prove it before trusting it, and the
//! report they produce (terminal summary, JSON) that a pipeline can gate on.
//!
//! The suites are plain functions over the [`Target`] trait: the control plane the pool offers plus a
//! view of its hardware. [`sim_target::SimTarget`] is the simulated lab in this process (with
//! [`sim_target::Breakage`] to break it on purpose in tests).
//!
//! # Layout
//! - [`report`]: checks, summaries, the run's identity.
//! - [`html`]: the report as a self-contained page.
//! - [`target`]: what the suites need from a pool.
//! - [`suites`]: the suites.
//! - [`remote_target`]: a running simulated pool over HTTP (the controller's API and the fabric's
//!   test port) as a [`Target`].
//! - [`datapath`]: the data-path suite (through `pcipool-access`, over HTTP).
//! - [`sim_target`]: the simulated lab as a target.
#![deny(missing_docs)]

mod control_plane;
pub mod datapath;
pub mod html;
pub mod lab_target;
pub mod remote_target;
pub mod report;
pub mod session;
pub mod sim_target;
pub mod suites;
pub mod target;

pub use report::{Check, Report, RunInfo, Suite};
pub use suites::{Options, Profile, Progress};
pub use target::Target;

/// Runs the chosen suites in order.
pub fn run(t: &dyn Target, o: &Options, progress: &mut dyn FnMut(&Progress)) -> Vec<Check> {
    let mut checks = Vec::new();
    for suite in &o.suites {
        let failed = checks.iter().filter(|c: &&Check| c.failed()).count();
        let found = match suite {
            Suite::Cycles => suites::cycles(t, o, progress, failed),
            Suite::Isolation => suites::isolation(t, o, progress, failed),
            Suite::Reset => suites::reset(t, o, progress, failed),
            Suite::Recovery => suites::recovery(t, o, progress, failed),
            Suite::Rebind => suites::rebind(t, o, progress, failed),
            Suite::Load => suites::load(t, o, progress, failed),
            Suite::DataPath => datapath::datapath(t, o, progress, failed),
        };
        checks.extend(found);
    }
    checks
}
