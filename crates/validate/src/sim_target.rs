//! The simulated lab in this process as a [`Target`]: a controller over a real SQLite store and the
//! simulated fabric, with direct views of the hardware. [`Breakage`] makes the backend misbehave in one
//! specific way, to show each suite notices (a suite that cannot fail proves nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use pcipool_agent::Local;
use pcipool_backend::{Executor, Step, StepContext, StepError, StepErrorKind, StepOutput};
use pcipool_controller::{ControlError, Controller};
use pcipool_fabric::{Fdid, LeaseId, MappingKind, NodeId};
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{DeviceInfo, Request, Selector};
use pcipool_qualify::AccessModel;
use pcipool_sim::{EventKind, FabricDesc, Sim};
use pcipool_store::{SqliteStore, Store};

use crate::target::{Audited, Fault, Free, Held, PoolDevice, Seen, Target, ntb_free};

/// How long a release waits for a busy borrower here (short: the suites wait for it on purpose).
const RELEASE_WAIT_MS: u64 = 200;

/// One way the backend can be broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Breakage {
    /// Works as it should.
    #[default]
    None,
    /// The unmap step reports success without removing the mappings.
    SkipUnmap,
    /// The lender's reset reports success without resetting (the borrower's driver state stays behind).
    ResetSkipped,
    /// The return never binds the lender's own driver again.
    SkipRestore,
    /// The borrower is never asked whether the device is still in use: a release goes ahead regardless.
    ForceRelease,
    /// A restarted controller does not resume the workflows its predecessor left unfinished.
    NoResume,
    /// The lender's reset always uses a secondary bus reset, whatever else the device offers and whoever
    /// else sits on the bus.
    PrefersBusReset,
    /// The fabric cannot be observed (as a remote pool whose fabric test port does not answer): every
    /// observation of it says "cannot tell", and the checks that need one must fail, not pass.
    BlindFabric,
}

/// Why the lab could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The simulator refused the description.
    #[error("simulated fabric: {0}")]
    Sim(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] pcipool_store::StoreError),
    /// A device could not be registered.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// The simulated lab under test.
#[derive(Debug)]
pub struct SimTarget {
    /// The controller; taken out and rebuilt over the same store by a simulated controller restart.
    controller: Mutex<Option<Controller<SqliteStore>>>,
    data_dir: std::path::PathBuf,
    policy: Policy,
    topology: pcipool_fabric::Topology,
    sim: Mutex<Sim>,
    breakage: Breakage,
    /// Device descriptions, for the function address a VF's steps act on.
    infos: BTreeMap<Fdid, DeviceInfo>,
    now: std::sync::atomic::AtomicU64,
    /// Hosts the controller has been told are lost (the agents' heartbeats, modelled by host liveness).
    lost: Mutex<BTreeSet<NodeId>>,
    /// Hosts whose agent was killed (the host itself runs on).
    dead_agents: Mutex<BTreeSet<NodeId>>,
}

/// The executor over the shared simulator, broken as asked.
struct Steps<'a> {
    sim: &'a Mutex<Sim>,
    breakage: Breakage,
    /// Hosts whose agent is dead: their steps cannot run.
    dead_agents: BTreeSet<NodeId>,
}

impl Executor for Steps<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        if let Some(host) = step.node(ctx)
            && self.dead_agents.contains(&host)
        {
            // As the agent fleet answers for an agent it cannot reach.
            return Err(StepError::new(
                StepErrorKind::HostDown,
                format!("the agent of {host} is not answering"),
            ));
        }
        let mut sim = self
            .sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (self.breakage, step) {
            (Breakage::SkipUnmap, Step::Unmap)
            | (Breakage::SkipRestore, Step::LenderRestore)
            | (Breakage::ForceRelease, Step::BorrowerQuiesceCheck) => Ok(StepOutput::Done),
            (Breakage::ResetSkipped, Step::LenderReset | Step::LenderResetEscalated) => {
                Ok(StepOutput::Reset(pcipool_pcie::ResetMethod::Flr))
            }
            (Breakage::PrefersBusReset, Step::LenderReset | Step::LenderResetEscalated) => sim
                .reset(ctx.lender, ctx.bdf, pcipool_pcie::ResetMethod::Bus)
                .map(|()| StepOutput::Reset(pcipool_pcie::ResetMethod::Bus))
                .map_err(StepError::from),
            _ => Local(&mut *sim).run(step, ctx),
        }
    }
}

impl SimTarget {
    /// Builds the lab: the simulator from `desc` with `seed`, a controller with `policy` over a store in
    /// `data_dir`, and every qualified device registered.
    ///
    /// # Errors
    /// [`SetupError`].
    pub fn new(
        desc: &FabricDesc,
        seed: u64,
        policy: Policy,
        data_dir: &Path,
        breakage: Breakage,
    ) -> Result<Self, SetupError> {
        let sim = Sim::new(desc, seed).map_err(|e| SetupError::Sim(e.to_string()))?;
        let store = SqliteStore::open(&data_dir.join("pool.db"))?;
        let controller = Controller::new(store, policy.clone(), desc.topology.clone())
            .with_release_wait(RELEASE_WAIT_MS);
        let mut infos = BTreeMap::new();
        for (info, reasons) in pcipool_sim_lab::qualified_devices(&sim, None) {
            infos.insert(info.fdid, info.clone());
            controller.register(info, reasons, 0)?;
        }
        Ok(Self {
            controller: Mutex::new(Some(controller)),
            data_dir: data_dir.to_path_buf(),
            policy,
            topology: desc.topology.clone(),
            sim: Mutex::new(sim),
            breakage,
            infos,
            now: std::sync::atomic::AtomicU64::new(1),
            lost: Mutex::new(BTreeSet::new()),
            dead_agents: Mutex::new(BTreeSet::new()),
        })
    }

    /// Runs `f` with the controller (None only while a restart is rebuilding it).
    fn ctl<T>(&self, f: impl FnOnce(&Controller<SqliteStore>) -> T) -> Option<T> {
        let guard = self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.as_ref().map(f)
    }

    fn sim(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn steps(&self) -> Steps<'_> {
        Steps {
            sim: &self.sim,
            breakage: self.breakage,
            dead_agents: self
                .dead_agents
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Whether the fabric can be observed here.
    fn see_fabric(&self) -> Seen<()> {
        match self.breakage {
            Breakage::BlindFabric => Err("the fabric's test port does not answer".into()),
            _ => Ok(()),
        }
    }

    /// Controller time: a millisecond per call, so leases never expire during a run by accident.
    fn tick(&self) -> u64 {
        self.now.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Where a device's steps act: its own function (a VF's routing id).
    fn function(&self, fdid: Fdid) -> Fdid {
        let bdf = self
            .infos
            .get(&fdid)
            .and_then(|i| i.function)
            .unwrap_or(fdid.bdf);
        Fdid {
            node: fdid.node,
            bdf,
            vf: None,
        }
    }
}

/// An executor that dies (panics) just before one step, as a killed controller process would.
struct DiesBefore<'a> {
    inner: Steps<'a>,
    step: Step,
}

impl Executor for DiesBefore<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        if step == self.step {
            std::panic::panic_any(KilledController);
        }
        self.inner.run(step, ctx)
    }
}

/// The panic payload of a simulated controller kill.
struct KilledController;

fn err(e: &ControlError) -> String {
    format!("{}: {e}", e.code())
}

impl Target for SimTarget {
    fn devices(&self) -> Vec<PoolDevice> {
        self.ctl(|c| c.store().devices().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .map(|d| PoolDevice {
                fdid: d.value.info.fdid,
                models: d.value.info.models.clone(),
                state: d.value.state.name().to_owned(),
            })
            .collect()
    }

    fn borrowers(&self, fdid: Fdid) -> Vec<NodeId> {
        self.sim()
            .hosts()
            .map(|h| h.node)
            .filter(|n| *n != fdid.node)
            .collect()
    }

    fn borrow_for(
        &self,
        tenant: &str,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
        duration: Option<u64>,
    ) -> Result<Held, String> {
        let request = Request {
            selector: Selector {
                fdid: Some(fdid),
                ..Selector::default()
            },
            count: 1,
            model,
            borrower,
            max_sharers: None,
            request_id: None,
        };
        let now = self.tick();
        let granted = self
            .ctl(|c| c.borrow(&mut self.steps(), tenant, tenant, request, duration, now))
            .ok_or_else(|| "controller down".to_owned())?
            .map_err(|e| err(&e))?;
        granted
            .first()
            .map(|g| Held {
                lease: g.lease_id,
                fdid: g.fdid,
                borrower,
                attached: g.attached,
            })
            .ok_or_else(|| "nothing granted".to_owned())
    }

    fn release(&self, tenant: Option<&str>, lease: LeaseId) -> Result<(), String> {
        let now = self.tick();
        self.ctl(|c| {
            c.release(
                &mut self.steps(),
                tenant.unwrap_or("operator"),
                tenant,
                lease,
                now,
            )
        })
        .ok_or_else(|| "controller down".to_owned())?
        .map_err(|e| err(&e))
    }

    fn state(&self, fdid: Fdid) -> Option<String> {
        self.ctl(|c| c.store().device(fdid).ok().flatten())
            .flatten()
            .map(|d| d.value.state.name().to_owned())
    }

    fn at_baseline(&self, fdid: Fdid) -> Option<bool> {
        let f = self.function(fdid);
        self.sim()
            .device(f.node, f.bdf)
            .map(|d| d.dev.is_reset_state())
    }

    fn local_driver(&self, fdid: Fdid) -> Option<Option<String>> {
        let f = self.function(fdid);
        self.sim().device(f.node, f.bdf).map(|d| d.driver.clone())
    }

    fn mapped_leases(&self) -> Seen<BTreeSet<u64>> {
        self.see_fabric()?;
        Ok(self.sim().fabric.mappings().map(|m| m.lease.0).collect())
    }

    fn free_resources(&self) -> Seen<BTreeMap<String, Free>> {
        self.see_fabric()?;
        let sim = self.sim();
        Ok(sim
            .fabric
            .topology()
            .adapters()
            .filter_map(|(a, _)| {
                Some((a.to_string(), ntb_free(sim.fabric.space(a)?.free_counts())))
            })
            .collect())
    }

    fn bar_address(&self, lease: LeaseId) -> Option<(NodeId, u64)> {
        self.sim().fabric.mappings().find_map(|m| match m.kind {
            MappingKind::Bar {
                bar: 0, borrower, ..
            } if m.lease == lease => Some((borrower, m.host_addr)),
            _ => None,
        })
    }

    fn dma_window(&self, lease: LeaseId) -> Option<(u64, u64)> {
        self.sim().fabric.mappings().find_map(|m| match m.kind {
            MappingKind::Dma { .. } if m.lease == lease => Some((m.host_addr, m.size)),
            _ => None,
        })
    }

    fn host_read(&self, node: NodeId, addr: u64) -> u32 {
        self.sim().borrower_read(node, addr)
    }

    fn device_dma(&self, fdid: Fdid, addr: u64) -> Option<NodeId> {
        let f = self.function(fdid);
        self.sim().device_dma(f, addr).ok().map(|(node, _)| node)
    }

    fn faults_recorded(&self) -> Seen<usize> {
        self.see_fabric()?;
        Ok(self.sim().faults_recorded())
    }

    fn audit_after(&self, seq: u64) -> Seen<Vec<Audited>> {
        let records = self
            .ctl(|c| c.store().audit_records(seq + 1, 100_000))
            .ok_or_else(|| "controller down".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(records
            .into_iter()
            .map(|r| Audited {
                seq: r.seq,
                actor: r.actor,
                action: r.action,
                target: r.target,
                result: r.result,
            })
            .collect())
    }

    fn drain(&self, fdid: Fdid) -> Result<(), String> {
        let now = self.tick();
        self.ctl(|c| {
            c.operate(
                &mut self.steps(),
                fdid,
                &pcipool_pool::Event::Drain { to_local: false },
                "validate",
                now,
            )
            .map(|_| ())
            .map_err(|e| err(&e))
        })
        .unwrap_or_else(|| Err("controller down".to_owned()))
    }

    fn undrain(&self, fdid: Fdid) -> Result<(), String> {
        let now = self.tick();
        self.ctl(|c| {
            c.operate(
                &mut self.steps(),
                fdid,
                &pcipool_pool::Event::Undrain,
                "validate",
                now,
            )
            .map(|_| ())
            .map_err(|e| err(&e))
        })
        .unwrap_or_else(|| Err("controller down".to_owned()))
    }

    fn reset_methods(&self, fdid: Fdid) -> Vec<pcipool_pcie::ResetMethod> {
        use pcipool_backend::Inventory as _;
        let f = self.function(fdid);
        let sim = self.sim();
        let view = pcipool_sim::HostView {
            sim: &sim,
            node: f.node,
        };
        view.inventory()
            .ok()
            .and_then(|inv| inv.devices.into_iter().find(|d| d.bdf == f.bdf))
            .map(|d| d.reset_methods)
            .unwrap_or_default()
    }

    fn reset(&self, fdid: Fdid, method: pcipool_pcie::ResetMethod) -> Result<u64, String> {
        let f = self.function(fdid);
        let mut sim = self.sim();
        let started = sim.now();
        sim.reset(f.node, f.bdf, method)
            .map_err(|e| e.to_string())?;
        Ok(sim.now().saturating_sub(started) / 1000)
    }

    fn ids_readable(&self, fdid: Fdid) -> bool {
        let f = self.function(fdid);
        let mut ids = [0u8; 4];
        self.sim().read_config(f.node, f.bdf, 0, &mut ids).is_ok() && ids[..2] != [0xff, 0xff]
    }

    fn bar_restorable(&self, fdid: Fdid) -> Option<bool> {
        let f = self.function(fdid);
        let size = self
            .infos
            .get(&fdid)?
            .bars
            .iter()
            .find(|(i, _)| *i == 0)
            .map(|(_, s)| *s)?;
        // An address aligned to the BAR's size, in the 32-bit window, as firmware would assign.
        let addr = u32::try_from(0xe000_0000_u64 & !(size.saturating_sub(1))).ok()?;
        let mut sim = self.sim();
        sim.write_config(f.node, f.bdf, 0x10, &addr.to_le_bytes())
            .ok()?;
        let mut back = [0u8; 4];
        sim.read_config(f.node, f.bdf, 0x10, &mut back).ok()?;
        let _ = sim.write_config(f.node, f.bdf, 0x10, &[0; 4]);
        Some(u32::from_le_bytes(back) & !0xf == addr & !0xf)
    }

    fn siblings(&self, fdid: Fdid) -> Seen<Vec<Fdid>> {
        Ok(crate::target::siblings_among(self.infos.keys(), fdid))
    }

    fn event_mark(&self) -> Seen<usize> {
        self.see_fabric()?;
        Ok(self.sim().events().len())
    }

    fn bus_resets_since(&self, mark: usize) -> Seen<Vec<Fdid>> {
        self.see_fabric()?;
        Ok(self
            .sim()
            .events()
            .iter()
            .skip(mark)
            .filter_map(|e| match &e.kind {
                EventKind::Reset {
                    bdf,
                    method: pcipool_pcie::ResetMethod::Bus,
                } => Some(Fdid {
                    node: e.node,
                    bdf: *bdf,
                    vf: None,
                }),
                _ => None,
            })
            .collect())
    }

    fn inject(&self, fault: Fault) -> Result<(), String> {
        let mut dead = self
            .dead_agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fault {
            Fault::AgentKill(node) => {
                dead.insert(node);
                return Ok(());
            }
            Fault::AgentBack(node) => {
                dead.remove(&node);
                return Ok(());
            }
            _ => {}
        }
        drop(dead);
        let mut sim = self.sim();
        let adapter = |node: NodeId| pcipool_fabric::AdapterId { node, index: 0 };
        match fault {
            Fault::AgentKill(_) | Fault::AgentBack(_) => {}
            Fault::HostCrash(node) => sim.crash(node),
            Fault::HostBack(node) => sim.reboot(node),
            Fault::LinkDown(node) => sim.link_down(adapter(node)),
            Fault::LinkUp(node) => sim.link_up(adapter(node)),
            Fault::DeviceHang(fdid) => {
                let f = self.function(fdid);
                sim.hang(f.node, f.bdf);
            }
            Fault::ResetFails(fdid) => {
                let f = self.function(fdid);
                sim.fail_next_reset(f.node, f.bdf);
            }
        }
        Ok(())
    }

    fn advance(&self, ms: u64) {
        let now = self
            .now
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(ms);
        let dead = self
            .dead_agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // A host answers when it is up and its agent runs.
        let hosts: Vec<(NodeId, bool)> = self
            .sim()
            .hosts()
            .map(|h| (h.node, h.up && !dead.contains(&h.node)))
            .collect();
        let mut lost = self
            .lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (node, up) in hosts {
            if !up && lost.insert(node) {
                let _ = self.ctl(|c| c.lender_lost(&mut self.steps(), node, now));
            } else if up && lost.remove(&node) {
                let _ = self.ctl(|c| c.lender_back(&mut self.steps(), node, now));
            }
        }
        drop(lost);
        let _ = self.ctl(|c| c.tick(&mut self.steps(), now));
    }

    fn kill_controller_during_lend(
        &self,
        fdid: Fdid,
        borrower: NodeId,
        step: Step,
    ) -> Result<(), String> {
        let request = Request {
            selector: Selector {
                fdid: Some(fdid),
                ..Selector::default()
            },
            count: 1,
            model: AccessModel::Lend,
            borrower,
            max_sharers: None,
            request_id: None,
        };
        let now = self.tick();
        // The kill: the controller stops dead inside the workflow (no cleanup runs). Keep the default
        // panic message out of the operator's terminal.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut dying = DiesBefore {
                inner: self.steps(),
                step,
            };
            self.ctl(|c| c.borrow(&mut dying, "validate", "validate", request, None, now))
        }));
        std::panic::set_hook(hook);
        let killed = matches!(&outcome, Err(p) if p.is::<KilledController>());
        if !killed {
            return Err(format!("the lend did not reach {step:?}"));
        }
        // A new controller process over the same store: the old one's file lock goes with it.
        let mut slot = self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(slot.take());
        let store = SqliteStore::open(&self.data_dir.join("pool.db")).map_err(|e| e.to_string())?;
        let controller = Controller::new(store, self.policy.clone(), self.topology.clone())
            .with_release_wait(RELEASE_WAIT_MS);
        if self.breakage != Breakage::NoResume {
            controller
                .resume(&mut self.steps(), self.tick())
                .map_err(|e| err(&e))?;
        }
        *slot = Some(controller);
        Ok(())
    }

    fn clear_quarantine(&self, fdid: Fdid) -> Result<(), String> {
        let now = self.tick();
        self.ctl(|c| {
            c.operate(
                &mut self.steps(),
                fdid,
                &pcipool_pool::Event::ClearQuarantine,
                "validate",
                now,
            )
            .map(|_| ())
            .map_err(|e| err(&e))
        })
        .unwrap_or_else(|| Err("controller down".to_owned()))
    }

    fn leases_of(&self, fdid: Fdid) -> Seen<Vec<LeaseId>> {
        let row = self
            .ctl(|c| c.store().device(fdid))
            .ok_or_else(|| "controller down".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(row
            .map(|d| d.value.state.leases().iter().map(|l| l.id).collect())
            .unwrap_or_default())
    }

    fn audit_intact(&self) -> bool {
        self.ctl(|c| {
            c.store()
                .all_audit()
                .map(|a| pcipool_pool::AuditChain::verify(&a).is_ok())
                .unwrap_or(false)
        })
        .unwrap_or(false)
    }

    fn native_driver(&self, fdid: Fdid) -> Option<String> {
        self.infos.get(&fdid).and_then(|i| i.driver.clone())
    }

    fn lender_unbind(&self, fdid: Fdid) -> Result<(), String> {
        let f = self.function(fdid);
        self.sim().unbind(f.node, f.bdf).map_err(|e| e.to_string())
    }

    fn lender_bind(&self, fdid: Fdid, driver: &str) -> Result<(), String> {
        let f = self.function(fdid);
        self.sim()
            .bind(f.node, f.bdf, driver)
            .map_err(|e| e.to_string())
    }

    fn borrower_unbind(&self, held: &Held) -> Result<(), String> {
        let at = held.on_borrower()?;
        self.sim()
            .unbind(held.borrower, at)
            .map_err(|e| e.to_string())
    }

    fn borrower_bind(&self, held: &Held, driver: &str) -> Result<(), String> {
        let at = held.on_borrower()?;
        self.sim()
            .bind(held.borrower, at, driver)
            .map_err(|e| e.to_string())
    }

    fn borrower_driver(&self, held: &Held) -> Option<Option<String>> {
        let at = held.on_borrower().ok()?;
        self.sim()
            .device(held.borrower, at)
            .map(|d| d.driver.clone())
    }

    fn set_borrower_users(&self, held: &Held, users: u32) {
        if let Ok(at) = held.on_borrower() {
            self.sim().set_users(held.borrower, at, users);
        }
    }

    fn audit_head(&self) -> u64 {
        self.ctl(|c| c.store().last_audit().ok().flatten())
            .flatten()
            .map_or(0, |r| r.seq)
    }
}
