//! One validation run as an operator asks for it: which suites (the defaults depend on where), against
//! the embedded lab or a running pool, with the data-path lab served for the run when it is needed; the
//! report comes back with the run's facts.

use std::path::{Path, PathBuf};

use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::policy::Policy;

use crate::datapath::DataPathAccess;
use crate::lab_target::LabTarget;
use crate::remote_target::RemoteTarget;
use crate::sim_target::{Breakage, SimTarget};
use crate::{Options, Progress, Report, RunInfo, Suite, Target};

/// Where a running pool is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Controller URL.
    pub url: String,
    /// Operator token.
    pub token: String,
    /// The simulated fabric (`pcipool sim serve`).
    pub fabric_url: String,
    /// A second tenant's token, for the isolation suite.
    pub intruder_token: Option<String>,
}

/// A validation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Suites asked for (empty: every suite that can run where the run goes).
    pub suites: Vec<Suite>,
    /// Cycles per device and access model.
    pub cycles: u32,
    /// The profile's name, for the report.
    pub profile: String,
    /// Only these devices (added to the hosts' devices).
    pub devices: Vec<Fdid>,
    /// Only the devices of these hosts.
    pub hosts: Vec<NodeId>,
    /// Seed of the simulated run.
    pub seed: u64,
    /// The embedded lab's fabric description (None: the built-in lab).
    pub fabric: Option<PathBuf>,
    /// The embedded lab's policy, already read, and its name.
    pub policy: (String, Policy),
    /// A running pool to validate instead of the embedded lab.
    pub remote: Option<Remote>,
    /// The directory of a running VM lab (`pcipool lab up`) to validate instead.
    pub lab: Option<PathBuf>,
    /// Scratch directory for the embedded lab (removed at the end).
    pub scratch: PathBuf,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The suites asked for cannot run where the run goes.
    #[error("{0}")]
    Usage(String),
    /// A description that does not load.
    #[error(transparent)]
    Fabric(#[from] pcipool_sim::LoadError),
    /// Nothing to validate on the hosts given.
    #[error("{0}")]
    NotFound(String),
    /// The lab or the connection could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Where a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The simulated lab in this process: every suite.
    Embedded,
    /// A running simulated pool: nothing injects faults or kills its controller (no recovery), and
    /// isolation needs a second tenant's token.
    Running {
        /// A second tenant's token was given.
        has_intruder: bool,
    },
    /// A running VM lab: real kernels, real faults; no data path (no load, no datapath suite).
    VmLab,
}

/// The suites to run: those asked for, or every one that can run where the run goes.
///
/// # Errors
/// [`SessionError::Usage`] when a suite asked for cannot run there.
pub fn choose_suites(asked: &[Suite], place: Place) -> Result<Vec<Suite>, SessionError> {
    let refusal = |suite: Suite| -> Option<&'static str> {
        match (place, suite) {
            (Place::Running { .. }, Suite::Recovery) => Some(
                "the recovery suite injects faults and kills the controller: run it against the embedded lab (no --fabric-url) or a VM lab (--lab-dir)",
            ),
            (
                Place::Running {
                    has_intruder: false,
                },
                Suite::Isolation,
            ) => Some("isolation against a running pool needs --intruder-token (a tenant token)"),
            (Place::VmLab, Suite::Load | Suite::DataPath) => Some(
                "the VM lab has no shared data path: the load and datapath suites run on simulated pools",
            ),
            _ => None,
        }
    };
    if asked.is_empty() {
        return Ok(crate::suites::BUILT
            .into_iter()
            .filter(|s| refusal(*s).is_none())
            .collect());
    }
    match asked.iter().find_map(|s| refusal(*s)) {
        Some(why) => Err(SessionError::Usage(why.into())),
        None => Ok(asked.to_vec()),
    }
}

fn scratch(dir: &Path) -> Result<(), SessionError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| SessionError::Setup(format!("clearing {}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| SessionError::Setup(format!("creating {}: {e}", dir.display())))
}

/// Runs the session; `progress` hears of every check as it finishes.
///
/// # Errors
/// [`SessionError`] when the run cannot start; failed checks are in the report, not errors.
pub fn run(s: &Session, progress: &mut dyn FnMut(&Progress)) -> Result<Report, SessionError> {
    let place = match (&s.remote, &s.lab) {
        (_, Some(_)) => Place::VmLab,
        (Some(r), None) => Place::Running {
            has_intruder: r.intruder_token.is_some(),
        },
        (None, None) => Place::Embedded,
    };
    let suites = choose_suites(&s.suites, place)?;
    let loaded = pcipool_sim::FabricDesc::load(s.fabric.as_deref())?;
    let (target, fabric_name): (Box<dyn Target>, String) = match (&s.remote, &s.lab) {
        (_, Some(dir)) => (
            Box::new(LabTarget::connect(dir).map_err(|e| {
                SessionError::Setup(format!("connecting to the lab in {}: {e}", dir.display()))
            })?),
            format!("VM lab in {}", dir.display()),
        ),
        (Some(r), None) => (
            Box::new(
                RemoteTarget::connect(&r.url, &r.token, r.intruder_token.as_deref(), &r.fabric_url)
                    .map_err(|e| {
                        SessionError::Setup(format!("connecting to the pool at {}: {e}", r.url))
                    })?,
            ),
            format!("running pool at {} (fabric {})", r.url, r.fabric_url),
        ),
        (None, None) => {
            scratch(&s.scratch)?;
            let t = SimTarget::new(
                &loaded.desc,
                s.seed,
                s.policy.1.clone(),
                &s.scratch,
                Breakage::None,
            )
            .map_err(|e| SessionError::Setup(e.to_string()))?;
            (Box::new(t), loaded.name.clone())
        }
    };
    // Hosts select their devices; named devices are added to them.
    let mut devices = s.devices.clone();
    if !s.hosts.is_empty() {
        devices.extend(
            target
                .devices()
                .into_iter()
                .map(|d| d.fdid)
                .filter(|f| s.hosts.contains(&f.node)),
        );
        if devices.is_empty() {
            return Err(SessionError::NotFound(
                "no pooled devices on the hosts given".into(),
            ));
        }
    }
    // The data-path suite speaks to a controller and a fabric over HTTP, as applications do: the
    // running pool's, or a lab like `pcipool dev`'s served from this process for the run.
    let lab = if place == Place::Embedded && suites.contains(&Suite::DataPath) {
        Some(
            pcipool_serve::dev::DevServer::start(&loaded.desc, &s.scratch.join("datapath-lab"))
                .map_err(|e| SessionError::Setup(format!("the data-path lab: {e}")))?,
        )
    } else {
        None
    };
    let data_path = match (&s.remote, &lab) {
        (Some(r), _) => Some(DataPathAccess {
            controller: r.url.clone(),
            fabric: r.fabric_url.clone(),
            token: r.token.clone(),
        }),
        (None, Some(l)) => Some(DataPathAccess {
            controller: l.url.clone(),
            fabric: l.url.clone(),
            token: l.token.clone(),
        }),
        (None, None) => None,
    };
    let options = Options {
        suites,
        cycles: s.cycles,
        devices,
        data_path,
    };
    let checks = crate::run(target.as_ref(), &options, progress);
    drop(lab);
    drop(target);
    if place == Place::Embedded {
        std::fs::remove_dir_all(&s.scratch)
            .map_err(|e| SessionError::Setup(format!("removing {}: {e}", s.scratch.display())))?;
    }
    Ok(Report::new(
        RunInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            seed: s.seed,
            fabric: fabric_name,
            policy: s.policy.0.clone(),
            profile: format!("{} ({} cycles per device and model)", s.profile, s.cycles),
        },
        checks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_place_gets_the_suites_that_can_run_there() {
        let running = |has_intruder| Place::Running { has_intruder };
        let chosen = choose_suites(&[], running(false)).expect("defaults");
        assert!(!chosen.contains(&Suite::Recovery) && !chosen.contains(&Suite::Isolation));
        assert!(
            choose_suites(&[], running(true))
                .expect("defaults")
                .contains(&Suite::Isolation)
        );
        assert_eq!(
            choose_suites(&[], Place::Embedded).expect("defaults").len(),
            Suite::ALL.len()
        );
        assert_eq!(
            choose_suites(&[], Place::VmLab).expect("defaults"),
            [
                Suite::Cycles,
                Suite::Reset,
                Suite::Rebind,
                Suite::Isolation,
                Suite::Recovery
            ]
        );
        assert!(matches!(
            choose_suites(&[Suite::Recovery], running(true)),
            Err(SessionError::Usage(_))
        ));
        assert!(matches!(
            choose_suites(&[Suite::Isolation], running(false)),
            Err(SessionError::Usage(_))
        ));
        assert!(matches!(
            choose_suites(&[Suite::Cycles, Suite::Load], Place::VmLab),
            Err(SessionError::Usage(_))
        ));
    }
}
