//! The controller as a running service: the [`Controller`] over its store, the hardware it drives (every
//! host in this process, or agents on other machines), a clock, the queue of lends a request did not
//! wait for, and the periodic tick (lease expiry, agents gone silent). `pcipool dev`, `pcipool server`
//! and the validation lab all run this one service; the HTTP API is a thin layer over it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcipool_backend::SharedExecutor;
use pcipool_fabric::{LeaseId, NodeId};
use pcipool_pool::schedule::Request;
use pcipool_pool::workflow::Journal;
use pcipool_pool::{AuditEntry, Epoch, Millis};
use pcipool_store::Store;
use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, BorrowRequest, Granted, HeartbeatReply, HostView,
    RegistrationReply,
};

use crate::fleet::{AgentFleet, AgentRecord, Liveness};
use crate::{Assigned, ControlError, Controller, json, lock};

/// Where the service's time comes from: wall-clock milliseconds in production (lease expiries survive
/// a restart), a virtual clock in the whole-system simulation.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds now.
    fn now_ms(&self) -> Millis;
}

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The hardware a service drives.
#[derive(Debug)]
pub enum Hardware {
    /// Every host and the fabric in this process (the simulated lab of `pcipool dev`): a restart of the
    /// process is a power cycle of the lab.
    InProcess(Box<dyn SharedExecutor>),
    /// Agents on the hosts and a fabric manager (`pcipool server`): the hardware outlives a restart.
    Agents(AgentFleet),
}

/// One assignment's lends: each lease with its journal (None for a shared lease).
type Lends = Vec<(Granted, Option<Journal>)>;

/// The controller as a running service.
#[derive(Debug)]
pub struct Service<S> {
    controller: Controller<S>,
    hardware: Hardware,
    clock: Arc<dyn Clock>,
    /// Assigned lends a request did not wait for, for the lend worker.
    lends: Mutex<VecDeque<Lends>>,
    lend_ready: Condvar,
    stopping: AtomicBool,
}

impl<S: Store> Service<S> {
    /// The service, after it resumed every unfinished workflow from its journal and, for hardware in
    /// this process (which restarted with it), fenced every lease the hardware no longer carries.
    /// Agents' hosts keep their mappings while the controller is down: a borrower that vanished
    /// stops heartbeating, so its leases expire and are fenced.
    ///
    /// # Errors
    /// Store errors and unreadable journals.
    pub fn start(
        controller: Controller<S>,
        hardware: Hardware,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ControlError> {
        let service = Self {
            controller,
            hardware,
            clock,
            lends: Mutex::new(VecDeque::new()),
            lend_ready: Condvar::new(),
            stopping: AtomicBool::new(false),
        };
        let now = service.now();
        let resumed = service.controller.resume(&mut service.steps(), now)?;
        let fenced = match &service.hardware {
            Hardware::InProcess(_) => service.controller.reconcile(&mut service.steps(), now)?,
            Hardware::Agents(fleet) => {
                // Devices an earlier controller (or leader) left lost stay lost until their lender
                // is back; this controller never saw it go, so it must hear its return as one.
                for row in service.controller.store().devices()? {
                    if matches!(row.value.state, pcipool_pool::DeviceState::Lost { .. }) {
                        fleet.mark_lost(row.value.info.fdid.node);
                    }
                }
                0
            }
        };
        tracing::info!(resumed, fenced, "controller service started");
        Ok(service)
    }

    /// The controller.
    pub fn controller(&self) -> &Controller<S> {
        &self.controller
    }

    /// The hardware.
    pub fn hardware(&self) -> &Hardware {
        &self.hardware
    }

    /// The service's time.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Where this request's steps run.
    pub fn steps(&self) -> &dyn SharedExecutor {
        match &self.hardware {
            Hardware::InProcess(steps) => steps.as_ref(),
            Hardware::Agents(fleet) => fleet,
        }
    }

    /// Marks silent agents lost and expires due leases; what fails is logged and counted.
    pub fn tick(&self) {
        let now = self.now();
        if let Hardware::Agents(fleet) = &self.hardware {
            for node in fleet.newly_lost() {
                tracing::warn!(%node, "the agent stopped answering; its devices are lost");
                self.controller.metrics().fault("agent_lost");
                if let Err(e) = self.controller.lender_lost(&mut self.steps(), node, now) {
                    self.controller
                        .log_error("tick_lender_lost", &format!("{node}: {e}"));
                }
            }
        }
        if let Err(e) = self.controller.tick(&mut self.steps(), now) {
            self.controller.log_error("tick", &e);
        }
    }

    /// Grants a borrow: assigned durably, then lent now (`wait`) or by the lend worker.
    ///
    /// # Errors
    /// As [`Controller::assign`]; a failed lend when waited for.
    pub fn borrow(
        &self,
        actor: &str,
        tenant: &str,
        r: BorrowRequest,
    ) -> Result<Vec<Granted>, ControlError> {
        let request = Request {
            selector: r.selector,
            count: r.count,
            model: r.model,
            borrower: r.borrower,
            max_sharers: r.max_sharers,
            request_id: r.request_id,
        };
        let now = self.now();
        let span = tracing::info_span!("borrow", tenant, borrower = %request.borrower);
        let _entered = span.enter();
        match self.controller.assign(
            &mut self.steps(),
            actor,
            tenant,
            request,
            r.duration_secs,
            now,
        )? {
            Assigned::Replayed(granted) => Ok(granted),
            Assigned::New(lends) if r.wait => {
                self.controller
                    .complete_lends(&mut self.steps(), lends, now)
            }
            Assigned::New(lends) => {
                let granted = lends.iter().map(|(g, _)| g.clone()).collect();
                lock(&self.lends).push_back(lends);
                self.lend_ready.notify_one();
                Ok(granted)
            }
        }
    }

    /// Runs the lends requests did not wait for, one assignment at a time, until [`Self::stop`]. A lend
    /// queued here is already durable (assigned with its journal): if the process dies first, the next
    /// start resumes it.
    pub fn run_lend_worker(&self) {
        loop {
            let job = {
                let mut queue = lock(&self.lends);
                loop {
                    if self.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(job) = queue.pop_front() {
                        break job;
                    }
                    queue = self
                        .lend_ready
                        .wait_timeout(queue, Duration::from_secs(1))
                        .map_or_else(|p| p.into_inner().0, |(q, _)| q);
                }
            };
            if let Err(e) = self
                .controller
                .complete_lends(&mut self.steps(), job, self.now())
            {
                self.controller.log_error("background_lend", &e);
            }
        }
    }

    /// Ends the lend worker (what it has not started stays journalled for the next start).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.lend_ready.notify_all();
    }

    /// An agent announces itself and its host's devices; answers what the host borrows.
    ///
    /// # Errors
    /// [`ControlError::Unsupported`] when the hosts are in process; an unknown host; a report of
    /// another host's devices; store errors.
    pub fn register_agent(
        &self,
        actor: &str,
        registration: AgentRegistration,
    ) -> Result<RegistrationReply, ControlError> {
        let Hardware::Agents(fleet) = &self.hardware else {
            return Err(ControlError::Unsupported(
                "this controller runs its hosts in process; agents register with pcipool server"
                    .into(),
            ));
        };
        let node = registration.node;
        if self.controller.topology().host(node).is_none() {
            return Err(ControlError::NoHost(node));
        }
        if let Some(d) = registration
            .devices
            .iter()
            .find(|d| d.info.fdid.node != node)
        {
            return Err(ControlError::BadReport(format!(
                "the agent of {node} reported {}, a device of another host",
                d.info.fdid
            )));
        }
        let record = AgentRecord {
            url: registration.url,
            secret: registration.secret,
        };
        let now = self.now();
        let target = node.to_string();
        let after = format!("{} with {} devices", record.url, registration.devices.len());
        self.controller.store().put_agent(
            node,
            &json(&record),
            &[AuditEntry {
                at: now,
                actor,
                target: &target,
                action: "agent_register",
                before: "",
                after: &after,
                result: "ok",
            }],
        )?;
        let was_lost = fleet.register(node, record);
        for d in registration.devices {
            self.controller.register(d.info, d.reasons, now)?;
        }
        if was_lost {
            self.controller.lender_back(&mut self.steps(), node, now)?;
        }
        Ok(RegistrationReply {
            borrowed: self.controller.borrowed_by(node)?,
        })
    }

    /// An agent's heartbeat: renews what its host carries, refuses what it no longer holds.
    ///
    /// # Errors
    /// [`ControlError::Unsupported`] when the hosts are in process; store errors.
    pub fn agent_heartbeat(
        &self,
        node: NodeId,
        beat: &AgentHeartbeat,
    ) -> Result<HeartbeatReply, ControlError> {
        let Hardware::Agents(fleet) = &self.hardware else {
            return Err(ControlError::Unsupported(
                "this controller runs its hosts in process".into(),
            ));
        };
        let now = self.now();
        match fleet.heard(node) {
            Liveness::Unknown => {
                return Ok(HeartbeatReply {
                    register: true,
                    ..HeartbeatReply::default()
                });
            }
            Liveness::Back => {
                self.controller.lender_back(&mut self.steps(), node, now)?;
            }
            Liveness::Alive => {}
        }
        let beats: Vec<(LeaseId, Epoch)> =
            beat.leases.iter().map(|b| (b.lease_id, b.epoch)).collect();
        let (renewed, refused) =
            self.controller
                .borrower_heartbeat(&mut self.steps(), node, &beats, now)?;
        Ok(HeartbeatReply {
            renewed,
            refused,
            register: false,
        })
    }

    /// The metrics' exposition text: the controller's events and the pool's state now (devices,
    /// leases, the audit chain's length, and each agent's liveness when hosts run agents).
    ///
    /// # Errors
    /// Store errors.
    pub fn metrics_text(&self) -> Result<String, ControlError> {
        let mut census = self.controller.census()?;
        if let Hardware::Agents(fleet) = &self.hardware {
            for h in self.controller.topology().hosts() {
                match fleet.status(h.node) {
                    "up" => census.agents.insert(h.node.to_string(), true),
                    "lost" => census.agents.insert(h.node.to_string(), false),
                    _ => None,
                };
            }
        }
        Ok(self.controller.metrics().encode(&census))
    }

    /// The fabric's hosts, with their agents' state.
    ///
    /// # Errors
    /// Store errors.
    pub fn hosts(&self) -> Result<Vec<HostView>, ControlError> {
        let devices = self.controller.store().devices()?;
        Ok(self
            .controller
            .topology()
            .hosts()
            .map(|h| HostView {
                node: h.node,
                name: h.name.clone(),
                adapters: h.adapters.iter().map(|a| a.name.clone()).collect(),
                devices: devices
                    .iter()
                    .filter(|d| d.value.info.fdid.node == h.node)
                    .count(),
                agent: match &self.hardware {
                    Hardware::InProcess(_) => "in-process".to_owned(),
                    Hardware::Agents(fleet) => fleet.status(h.node).to_owned(),
                },
            })
            .collect())
    }
}

/// Runs `service`'s lend worker on a thread of its own until the service stops.
pub fn spawn_lend_worker<S: Store + Send + Sync + 'static>(
    service: &Arc<Service<S>>,
) -> std::thread::JoinHandle<()> {
    let service = service.clone();
    std::thread::spawn(move || service.run_lend_worker())
}
