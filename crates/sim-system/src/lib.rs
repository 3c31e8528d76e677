//! The whole system under simulation (simulation only): the real controller, its service and a store
//! with the real semantics (in memory), the step runner over the simulated fabric and hosts, a virtual
//! clock and one seed. A random workload borrows (every access model, gangs), releases, renews, lets
//! leases expire, crashes hosts and agents, fails resets, cuts links and restarts the controller
//! (everything but the store is dropped, then resumed); after every step the invariants of
//! [`invariants::Checker`] are checked against the store and the hardware side by side. The same seed
//! gives the same run, to the last line; a violation names the step and the command that replays it.
//!
//! # Layout
//! - this file: [`Config`], [`run`], the workload.
//! - [`lab`]: the shared simulated hardware, dying agents, and the [`Mutant`]s that prove the
//!   invariants bite.
//! - [`invariants`]: what must hold after every step.
#![deny(missing_docs)]

pub mod invariants;
pub mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pcipool_backend::Site as _;
use pcipool_controller::{Clock, Controller, Hardware, Service};
use pcipool_fabric::{AdapterId, NodeId, Topology};
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{DeviceClass, Selector};
use pcipool_pool::{DeviceState, Event};
use pcipool_qualify::AccessModel;
use pcipool_sim::rng::SimRng;
use pcipool_sim::{FabricDesc, Sim};
use pcipool_store::{MemStore, Store};
use pcipool_wire::BorrowRequest;

pub use lab::Mutant;
use lab::{Lab, LabStore};

/// One run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed: the whole run follows from it.
    pub seed: u64,
    /// Workload steps.
    pub steps: u64,
    /// The fabric.
    pub desc: FabricDesc,
    /// Inject faults (hosts, agents, resets, links, controller restarts).
    pub faults: bool,
    /// A bug planted on purpose.
    pub mutant: Mutant,
}

impl Config {
    /// The arguments of `pcipool sim run` that replay this run's first `steps` steps (the fabric file,
    /// when there is one, is the caller's to add).
    pub fn replay_args(&self, steps: u64) -> String {
        let faults = if self.faults { "" } else { " --faults none" };
        let mutant = match self.mutant {
            Mutant::None => String::new(),
            m => format!(" --mutant {m}"),
        };
        format!("--seed {} --steps {steps}{faults}{mutant}", self.seed)
    }

    /// What a run that broke an invariant prints: the violation, the version, and the command that
    /// replays it (`fabric_arg`: ` --fabric FILE` when the run had one).
    pub fn violation_report(&self, v: &Violation, fabric_arg: &str) -> String {
        format!(
            "invariant violated: {v}\nversion {}\nreplay: pcipool sim run{fabric_arg} {}\n",
            env!("CARGO_PKG_VERSION"),
            self.replay_args(v.steps_to_replay())
        )
    }
}

/// How a run went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Seed.
    pub seed: u64,
    /// Steps run.
    pub steps: u64,
    /// Leases granted.
    pub granted: u64,
    /// Borrow requests refused, by code.
    pub refused: BTreeMap<&'static str, u64>,
    /// Leases released by their tenant.
    pub released: u64,
    /// Leases that expired.
    pub expired: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Controller restarts.
    pub restarts: u64,
    /// Audit records in the chain, and its last hash.
    pub audit: (u64, String),
}

impl Summary {
    /// What a run that held prints: refusals and faults by kind, the wall time, the last line.
    pub fn report(&self, wall: std::time::Duration) -> String {
        let counts = |m: &BTreeMap<&str, u64>| {
            let list: Vec<String> = m.iter().map(|(k, n)| format!("{n} {k}")).collect();
            list.join(", ")
        };
        format!(
            "refused: {}\nfaults: {}\nwall time {:.2} s\n{}\n",
            counts(&self.refused),
            counts(&self.faults),
            wall.as_secs_f64(),
            self.last_line()
        )
    }

    /// The run's last line: the same seed gives the same line.
    pub fn last_line(&self) -> String {
        let refused: u64 = self.refused.values().sum();
        let faults: u64 = self.faults.values().sum();
        let head = self.audit.1.get(..16).unwrap_or(&self.audit.1);
        format!(
            "sim run: seed {} · {} steps over the real controller · {} leases granted, {refused} refused, {} released, {} expired · {faults} faults, {} controller restarts · every invariant held after every step · audit chain {} records, head {head}",
            self.seed,
            self.steps,
            self.granted,
            self.released,
            self.expired,
            self.restarts,
            self.audit.0
        )
    }
}

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seed {seed}, step {step}: {what}")]
pub struct Violation {
    /// Seed.
    pub seed: u64,
    /// The step after which it failed (0: right after the start).
    pub step: u64,
    /// What does not hold.
    pub what: String,
}

impl Violation {
    /// The steps to replay up to and including the failing one.
    pub fn steps_to_replay(&self) -> u64 {
        self.step
    }
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The system could not be built (a bad description).
    #[error("setting up: {0}")]
    Setup(String),
    /// An invariant failed.
    #[error(transparent)]
    Violation(#[from] Violation),
}

/// A clock the run moves.
#[derive(Debug, Clone, Default)]
struct VirtualClock(Arc<AtomicU64>);

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl VirtualClock {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

const TENANTS: [&str; 3] = ["alpha", "beta", "gamma"];

/// The system and the workload's view of it.
struct System {
    lab: Lab,
    store: LabStore,
    clock: VirtualClock,
    topology: Topology,
    service: Service<LabStore>,
    rng: SimRng,
    hosts: Vec<NodeId>,
    adapters: Vec<AdapterId>,
    crashed: BTreeSet<NodeId>,
    dead_agents: BTreeSet<NodeId>,
    links_down: BTreeSet<AdapterId>,
    faults: bool,
    summary: Summary,
}

fn start(
    store: &LabStore,
    topology: &Topology,
    lab: &Lab,
    clock: &VirtualClock,
) -> Result<Service<LabStore>, String> {
    let controller = Controller::new(store.clone(), Policy::default(), topology.clone())
        .with_release_wait(0)
        .without_step_times();
    Service::start(
        controller,
        Hardware::InProcess(Box::new(lab.clone())),
        Arc::new(clock.clone()),
    )
    .map_err(|e| format!("controller start: {e}"))
}

impl System {
    fn new(config: &Config) -> Result<Self, String> {
        let sim = Sim::new(&config.desc, config.seed).map_err(|e| e.to_string())?;
        let hosts: Vec<NodeId> = sim.hosts().map(|h| h.node).collect();
        let topology = config.desc.topology.clone();
        let adapters: Vec<AdapterId> = topology.adapters().map(|(a, _)| a).collect();
        let store = LabStore::new(MemStore::new(), config.mutant);
        let clock = VirtualClock::default();
        clock.advance(1_000);
        {
            let controller = Controller::new(store.clone(), Policy::default(), topology.clone())
                .without_step_times();
            for (info, reasons) in pcipool_sim_lab::qualified_devices(&sim, None) {
                controller
                    .register(info, reasons, clock.now_ms())
                    .map_err(|e| format!("registering: {e}"))?;
            }
        }
        let lab = Lab::new(sim, config.mutant);
        let service = start(&store, &topology, &lab, &clock)?;
        Ok(Self {
            lab,
            store,
            clock,
            topology,
            service,
            rng: SimRng::child(config.seed, 0x5157_0000),
            hosts,
            adapters,
            crashed: BTreeSet::new(),
            dead_agents: BTreeSet::new(),
            links_down: BTreeSet::new(),
            faults: config.faults,
            summary: Summary {
                seed: config.seed,
                ..Summary::default()
            },
        })
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let n = u64::try_from(items.len()).unwrap_or(u64::MAX);
        items
            .get(usize::try_from(self.rng.below(n)).unwrap_or(0))
            .copied()
    }

    fn count(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
        *map.entry(key).or_default() += 1;
    }

    /// One workload step.
    fn step(&mut self, checker: &mut invariants::Checker) -> Result<(), String> {
        let roll = self.rng.below(1000);
        match roll {
            0..350 => self.borrow(),
            350..550 => self.release(),
            550..650 => self.renew(),
            650..800 => self.advance(),
            800..970 if self.faults => self.fault(checker),
            970..1000 if self.faults => self.restart(),
            _ => self.borrow(),
        }
    }

    fn borrow(&mut self) -> Result<(), String> {
        let model = self
            .pick(&[
                AccessModel::Lend,
                AccessModel::Lend,
                AccessModel::Vf,
                AccessModel::Shared,
            ])
            .unwrap_or(AccessModel::Lend);
        let class = self
            .pick(&[
                Some(DeviceClass::Nvme),
                Some(DeviceClass::Gpu),
                Some(DeviceClass::Nic),
                Some(DeviceClass::Fpga),
                None,
            ])
            .flatten();
        let count = if self.rng.chance(150) { 2 } else { 1 };
        let borrower = self.pick(&self.hosts.clone()).unwrap_or(NodeId(1));
        let tenant = self.pick(&TENANTS).unwrap_or("alpha");
        let max_sharers = (model == AccessModel::Shared)
            .then(|| u32::try_from(1 + self.rng.below(4)).unwrap_or(1));
        let request = BorrowRequest {
            selector: Selector {
                class,
                ..Selector::default()
            },
            count,
            model,
            borrower,
            duration_secs: Some(5 + self.rng.below(115)),
            max_sharers,
            request_id: None,
            wait: true,
        };
        match self.service.borrow(tenant, tenant, request) {
            Ok(granted) => {
                self.summary.granted += u64::try_from(granted.len()).unwrap_or(0);
            }
            Err(e) => Self::count(&mut self.summary.refused, e.code()),
        }
        Ok(())
    }

    /// A random lease the store holds now, with its tenant and epoch.
    fn some_lease(&mut self) -> Result<Option<pcipool_pool::Lease>, String> {
        let leases: Vec<pcipool_pool::Lease> = self
            .service
            .controller()
            .leases()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, l, _)| l)
            .collect();
        Ok(self
            .pick(&(0..leases.len()).collect::<Vec<_>>())
            .and_then(|i| leases.get(i).cloned()))
    }

    fn release(&mut self) -> Result<(), String> {
        let Some(lease) = self.some_lease()? else {
            return Ok(());
        };
        let now = self.service.now();
        let released = self.service.controller().release(
            &mut self.service.steps(),
            &lease.tenant,
            Some(&lease.tenant),
            lease.id,
            now,
        );
        if released.is_ok() {
            self.summary.released += 1;
        }
        Ok(())
    }

    fn renew(&mut self) -> Result<(), String> {
        let Some(lease) = self.some_lease()? else {
            return Ok(());
        };
        let now = self.service.now();
        // A renewal may be refused (the lease is fenced or lost): that is an answer, not a failure.
        let _refused_or_renewed = self.service.controller().renew(
            &mut self.service.steps(),
            &lease.tenant,
            Some(&lease.tenant),
            lease.id,
            lease.epoch,
            now,
        );
        Ok(())
    }

    fn advance(&mut self) -> Result<(), String> {
        let ms = 200 + self.rng.below(30_000);
        self.clock.advance(ms);
        let now = self.service.now();
        let expired = self
            .service
            .controller()
            .tick(&mut self.service.steps(), now)
            .map_err(|e| format!("tick: {e}"))?;
        self.summary.expired += u64::try_from(expired).unwrap_or(0);
        Ok(())
    }

    /// The controller learns that `node`'s agent is gone (its failure detector's verdict).
    fn lost(&mut self, node: NodeId) -> Result<(), String> {
        let now = self.service.now();
        self.service
            .controller()
            .lender_lost(&mut self.service.steps(), node, now)
            .map(|_| ())
            .map_err(|e| format!("lender lost: {e}"))
    }

    /// `node`'s agent answers again: the controller takes its devices back, and the agent removes
    /// whatever borrowed device its host still has that the controller no longer grants.
    fn back(&mut self, node: NodeId) -> Result<(), String> {
        let now = self.service.now();
        self.service
            .controller()
            .lender_back(&mut self.service.steps(), node, now)
            .map_err(|e| format!("lender back: {e}"))?;
        let granted = self
            .service
            .controller()
            .borrowed_by(node)
            .map_err(|e| format!("borrowed by {node}: {e}"))?;
        let mut sim = self.lab.sim();
        pcipool_agent::Agent::new(node, String::new(), sim.host_control(node))
            .adopt(granted)
            .map(|_| ())
            .map_err(|e| format!("the agent of {node} adopting its leases: {e}"))
    }

    fn fault(&mut self, checker: &mut invariants::Checker) -> Result<(), String> {
        let node = self.pick(&self.hosts.clone()).unwrap_or(NodeId(1));
        match self.rng.below(8) {
            0 if !self.crashed.contains(&node) => {
                checker.disturb_node(self.store.mem(), node);
                self.lab.sim().crash(node);
                self.lab.set_agent_dead(node, true);
                self.crashed.insert(node);
                Self::count(&mut self.summary.faults, "host crash");
                self.lost(node)
            }
            0 | 1 if self.crashed.remove(&node) => {
                checker.disturb_node(self.store.mem(), node);
                self.lab.sim().reboot(node);
                self.lab.set_agent_dead(node, false);
                self.dead_agents.remove(&node);
                Self::count(&mut self.summary.faults, "host reboot");
                self.back(node)
            }
            2 if !self.crashed.contains(&node) && self.dead_agents.insert(node) => {
                checker.disturb_node(self.store.mem(), node);
                self.lab.set_agent_dead(node, true);
                Self::count(&mut self.summary.faults, "agent crash");
                self.lost(node)
            }
            3 if !self.crashed.contains(&node) && self.dead_agents.remove(&node) => {
                self.lab.set_agent_dead(node, false);
                Self::count(&mut self.summary.faults, "agent back");
                self.back(node)
            }
            4 => {
                let Some(adapter) = self.pick(&self.adapters.clone()) else {
                    return Ok(());
                };
                checker.disturb_node(self.store.mem(), adapter.node);
                if self.links_down.insert(adapter) {
                    self.lab.sim().link_down(adapter);
                    Self::count(&mut self.summary.faults, "link down");
                } else {
                    self.links_down.remove(&adapter);
                    self.lab.sim().link_up(adapter);
                    Self::count(&mut self.summary.faults, "link up");
                }
                Ok(())
            }
            5 | 6 => self.failing_resets(),
            _ => self.repair(),
        }
    }

    /// The next one to three resets of a random device fail: one is recovered by the escalated reset,
    /// two lose a returned device until it is repaired, three also the compensation of a failed lend.
    fn failing_resets(&mut self) -> Result<(), String> {
        let rows = self.store.mem().devices().map_err(|e| e.to_string())?;
        let Some(row) = self
            .pick(&(0..rows.len()).collect::<Vec<_>>())
            .and_then(|i| rows.get(i))
        else {
            return Ok(());
        };
        let info = &row.value.info;
        let bdf = info.function.unwrap_or(info.fdid.bdf);
        let count = 1 + u32::try_from(self.rng.below(3)).unwrap_or(0);
        self.lab.sim().fail_resets(info.fdid.node, bdf, count);
        Self::count(&mut self.summary.faults, "failing resets");
        Ok(())
    }

    /// An operator repairs a quarantined device and clears the quarantine.
    fn repair(&mut self) -> Result<(), String> {
        let rows = self.store.mem().devices().map_err(|e| e.to_string())?;
        let quarantined: Vec<_> = rows
            .iter()
            .filter(|r| matches!(r.value.state, DeviceState::Quarantined { .. }))
            .filter(|r| !self.crashed.contains(&r.value.info.fdid.node))
            .map(|r| (r.value.info.fdid, r.value.info.function))
            .collect();
        let Some((fdid, function)) = self.pick(&quarantined) else {
            return Ok(());
        };
        self.lab
            .sim()
            .repair(fdid.node, function.unwrap_or(fdid.bdf));
        let now = self.service.now();
        self.service
            .controller()
            .operate(
                &mut self.service.steps(),
                fdid,
                &Event::ClearQuarantine,
                "operator",
                now,
            )
            .map_err(|e| format!("clearing the quarantine of {fdid}: {e}"))?;
        Self::count(&mut self.summary.faults, "repair");
        Ok(())
    }

    /// Drops the controller and its service (everything but the store and the hardware) and starts
    /// a new one, which resumes and reconciles.
    fn restart(&mut self) -> Result<(), String> {
        self.service.stop();
        self.service = start(&self.store, &self.topology, &self.lab, &self.clock)?;
        self.summary.restarts += 1;
        Ok(())
    }
}

/// Runs the whole system under the seeded workload, checking every invariant after every step.
///
/// # Errors
/// [`RunError::Setup`] for a bad description; [`RunError::Violation`] for the first invariant that
/// did not hold, with the step to replay to.
pub fn run(config: &Config) -> Result<Summary, RunError> {
    let mut system = System::new(config).map_err(RunError::Setup)?;
    let mut checker = invariants::Checker::new();
    let violation = |step: u64, what: String| Violation {
        seed: config.seed,
        step,
        what,
    };
    checker
        .check(system.store.mem(), &system.lab.sim())
        .map_err(|what| violation(0, what))?;
    for step in 1..=config.steps {
        system
            .step(&mut checker)
            .map_err(|what| violation(step, what))?;
        checker
            .check(system.store.mem(), &system.lab.sim())
            .map_err(|what| violation(step, what))?;
    }
    let (seq, hash) = checker.audit_head();
    let mut summary = system.summary;
    summary.steps = config.steps;
    summary.audit = (seq, hash.to_owned());
    Ok(summary)
}
