//! The host agent: one per host. It reports the host's qualified devices to the controller, carries out
//! the host steps the controller sends (refusing any step whose fencing epoch is older than one it has
//! already seen for that device, so a controller that was replaced cannot undo its successor's work),
//! and heartbeats the leases its host borrows, tearing down those the controller no longer grants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pcipool_backend::{
    Absent, DeviceControl, Side, Step, StepContext, StepError, StepErrorKind, StepOutput,
};
use pcipool_client::Client;
use pcipool_fabric::{Epoch, LeaseId, NodeId};
use pcipool_pcie::Bdf;
use pcipool_wire::{AgentHeartbeat, AgentRegistration, LeaseBeat, ReportedDevice, StepRequest};

use crate::runner::StepRunner;

/// Where an agent learns what its host offers the pool: the devices that qualified, with the reasons
/// for the models they did not get.
pub trait Reporter: Send + Sync {
    /// The host's devices as the controller should register them.
    ///
    /// # Errors
    /// What stopped the report (the host's hardware process unreachable, an unreadable inventory).
    fn devices(&self) -> Result<Vec<ReportedDevice>, String>;
}

/// One host's agent.
#[derive(Debug)]
pub struct Agent<D> {
    node: NodeId,
    secret: String,
    /// The host's kernel; held while a step runs, so steps, teardowns and the sweep after a
    /// registration never interleave on this host.
    host: Mutex<D>,
    /// Highest fencing epoch seen per device (lender, function).
    epochs: Mutex<BTreeMap<(NodeId, Bdf), Epoch>>,
    /// Leases this host carries as a borrower, with the context to tear them down.
    carried: Mutex<BTreeMap<LeaseId, StepContext>>,
    /// Where the epochs are kept across restarts (`<state dir>/epochs.json`), when they are.
    epochs_file: Option<PathBuf>,
    /// The steps answered and their time.
    pub(crate) clock: crate::stats::StepClock,
}

/// The epochs file's content: (lender, function, highest epoch seen).
type EpochRows = Vec<(NodeId, Bdf, Epoch)>;

/// The functions of `node` whose leases an agent with the state directory `dir` has served before (a
/// fencing epoch is recorded for them): a pooled function of this host that is missing now may be one
/// of those, away on the fabric in a borrower.
///
/// # Errors
/// The epochs file is unreadable or not an epochs file.
pub fn served_before(dir: &Path, node: NodeId) -> Result<std::collections::BTreeSet<Bdf>, String> {
    let file = dir.join("epochs.json");
    match std::fs::read(&file) {
        Ok(bytes) => {
            let rows: EpochRows = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not an epochs file: {e}", file.display()))?;
            Ok(rows
                .into_iter()
                .filter(|(n, _, _)| *n == node)
                .map(|(_, b, _)| b)
                .collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(format!("reading {}: {e}", file.display())),
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<D: DeviceControl> Agent<D> {
    /// The agent of `node` over its kernel `host`; `secret` is what the controller must present on
    /// every step call.
    pub fn new(node: NodeId, secret: String, host: D) -> Self {
        Self {
            node,
            secret,
            host: Mutex::new(host),
            epochs: Mutex::new(BTreeMap::new()),
            carried: Mutex::new(BTreeMap::new()),
            epochs_file: None,
            clock: crate::stats::StepClock::default(),
        }
    }

    /// Keeps the fencing epochs in `dir` (created if missing), loading those a previous run of this
    /// agent saw, so that a restarted agent still refuses a replaced controller's steps.
    ///
    /// # Errors
    /// The directory cannot be made, or the file there is unreadable or not an epochs file: the agent
    /// does not start rather than forget what it refused.
    pub fn with_state_dir(mut self, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let file = dir.join("epochs.json");
        match std::fs::read(&file) {
            Ok(bytes) => {
                let rows: EpochRows = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not an epochs file: {e}", file.display()))?;
                *guard(&self.epochs) = rows.into_iter().map(|(n, b, e)| ((n, b), e)).collect();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", file.display())),
        }
        self.epochs_file = Some(file);
        Ok(self)
    }

    /// Writes the epochs (a new file renamed over the old, so a crash leaves one or the other).
    fn save_epochs(&self, epochs: &BTreeMap<(NodeId, Bdf), Epoch>) -> Result<(), String> {
        let Some(file) = &self.epochs_file else {
            return Ok(());
        };
        let rows: EpochRows = epochs.iter().map(|(&(n, b), &e)| (n, b, e)).collect();
        let text = serde_json::to_vec(&rows).map_err(|e| e.to_string())?;
        let fresh = file.with_extension("json.new");
        std::fs::write(&fresh, text)
            .and_then(|()| std::fs::File::open(&fresh)?.sync_all())
            .and_then(|()| std::fs::rename(&fresh, file))
            .map_err(|e| format!("saving {}: {e}", file.display()))
    }

    /// The host.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Whether `token` is the secret this agent gave the controller.
    pub fn authorises(&self, token: &str) -> bool {
        token == self.secret
    }

    /// The steps this agent answered and where their time went.
    pub fn stats(&self) -> pcipool_wire::ExecutorStats {
        let waited = guard(&self.host).waited();
        self.clock.stats_with_cpu(waited)
    }

    /// Carries out one host step on this host.
    ///
    /// # Errors
    /// [`StepErrorKind::StaleEpoch`] for a step older than one already seen for the device; a step
    /// meant for another host or for the fabric; what the step runner reports.
    pub fn execute(&self, request: &StepRequest) -> Result<StepOutput, StepError> {
        let ctx = &request.ctx;
        if request.step.node(ctx) != Some(self.node) {
            return Err(StepError::new(
                StepErrorKind::Unsupported,
                match request.step.side() {
                    Side::Fabric => {
                        format!("{:?} is the fabric's step, not a host's", request.step)
                    }
                    Side::Lender | Side::Borrower => format!(
                        "{:?} of lease {} runs on {:?}, not on {}",
                        request.step,
                        ctx.lease.0,
                        request.step.node(ctx),
                        self.node
                    ),
                },
            ));
        }
        let mut host = guard(&self.host);
        {
            let mut epochs = guard(&self.epochs);
            let seen = epochs.entry((ctx.lender, ctx.bdf)).or_default();
            if ctx.epoch < *seen {
                return Err(StepError::new(
                    StepErrorKind::StaleEpoch,
                    format!(
                        "{:?} for lease {} carries epoch {}, but the device has moved on to epoch {}",
                        request.step, ctx.lease.0, ctx.epoch.0, seen.0
                    ),
                ));
            }
            if ctx.epoch > *seen {
                *seen = ctx.epoch;
                // A fence that would not survive a restart is no fence: refuse the step instead.
                self.save_epochs(&epochs).map_err(|e| {
                    StepError::failed(format!("cannot keep the fencing epoch: {e}"))
                })?;
            }
        }
        let start = crate::stats::StepStart::now(host.waited());
        let ran = StepRunner::new(&mut *host, Absent).run(request.step, ctx);
        self.clock
            .step_done(&format!("{:?}", request.step), start, host.waited());
        let output = ran?;
        match (request.step, output) {
            (Step::BorrowerHotAdd, StepOutput::Attached(at)) => {
                let mut carried = ctx.clone();
                carried.attached = Some(at);
                guard(&self.carried).insert(ctx.lease, carried);
            }
            (Step::BorrowerBind | Step::BorrowerVerify, _) => {
                guard(&self.carried)
                    .entry(ctx.lease)
                    .or_insert_with(|| ctx.clone());
            }
            (Step::BorrowerUnbind | Step::BorrowerHotRemove, _) => {
                guard(&self.carried).remove(&ctx.lease);
            }
            _ => {}
        }
        Ok(output)
    }

    /// The controller no longer grants `lease` (fenced while this host was unreachable, or expired):
    /// unbind and remove the borrowed device here; the fabric has already cut it off.
    pub fn tear_down(&self, lease: LeaseId) {
        let mut host = guard(&self.host);
        let Some(ctx) = guard(&self.carried).remove(&lease) else {
            return;
        };
        for step in [Step::BorrowerUnbind, Step::BorrowerHotRemove] {
            if let Err(e) = StepRunner::new(&mut *host, Absent).run(step, &ctx) {
                tracing::warn!(
                    node = %self.node, %lease, ?step, kind = e.kind.code(), error = %e.message,
                    "tearing down a lease no longer granted"
                );
            }
        }
        tracing::warn!(node = %self.node, %lease, "no longer granted; its device was removed here");
    }

    /// After a registration: carry exactly the leases the controller grants this host, and remove any
    /// other borrowed device still present here (left over from before an agent or controller
    /// restart). Returns how many were removed.
    ///
    /// # Errors
    /// The host's kernel could not be asked, or a leftover device could not be removed.
    pub fn adopt(&self, granted: Vec<StepContext>) -> Result<usize, StepError> {
        let mut host = guard(&self.host);
        let granted: BTreeMap<LeaseId, StepContext> =
            granted.into_iter().map(|c| (c.lease, c)).collect();
        let mut removed = 0;
        for (at, remote) in host.borrowed()? {
            // By the device's identity, not its address: addresses are reused.
            let still_granted = granted.values().any(|c| c.device() == remote);
            if still_granted {
                continue;
            }
            let leftover = StepContext {
                lender: remote.node,
                bdf: remote.bdf,
                borrower: self.node,
                attached: Some(at),
                lease: LeaseId(0),
                epoch: Epoch(0),
                bars: Vec::new(),
                dma_window: 0,
                driver: None,
                lender_driver: None,
                lender_vfs: 0,
                deadline_ms: pcipool_backend::DEFAULT_STEP_DEADLINE_MS,
            };
            for step in [Step::BorrowerUnbind, Step::BorrowerHotRemove] {
                StepRunner::new(&mut *host, Absent).run(step, &leftover)?;
            }
            removed += 1;
        }
        *guard(&self.carried) = granted;
        Ok(removed)
    }

    /// The leases this host carries, as its heartbeat names them.
    fn beat(&self) -> AgentHeartbeat {
        AgentHeartbeat {
            leases: guard(&self.carried)
                .iter()
                .map(|(&lease_id, ctx)| LeaseBeat {
                    lease_id,
                    epoch: ctx.epoch,
                })
                .collect(),
        }
    }

    /// Registers, then heartbeats every `every` until `stop` is set; registers again whenever the
    /// controller asks. Reports each distinct failure once.
    pub fn announce(
        &self,
        client: &Client,
        reporter: &dyn Reporter,
        own_url: &str,
        every: Duration,
        stop: &AtomicBool,
    ) {
        let mut registered = false;
        let mut last_error = String::new();
        // A heartbeat that hangs (a paused controller, or one a controller passed it to) must not
        // outlive the agent's silence budget: it gives up after three intervals and the next one goes
        // to the next controller.
        let beats = client
            .clone()
            .with_timeout((every * 3).clamp(Duration::from_millis(500), Duration::from_secs(5)));
        let mut report = |e: String| {
            if e != last_error {
                tracing::warn!(node = %self.node, error = %e, "cannot reach the controller");
                last_error = e;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if registered {
                match beats.agent_heartbeat(self.node, &self.beat()) {
                    Ok(reply) if reply.register => registered = false,
                    Ok(reply) => {
                        for id in reply.refused {
                            self.tear_down(id);
                        }
                    }
                    Err(e) => {
                        beats.next_server();
                        report(format!("heartbeat: {e}"));
                    }
                }
            }
            if !registered {
                match self.register(client, reporter, own_url) {
                    Ok((n, borrowed, removed)) => {
                        // A warning so operators see it at the default level: it happens once per
                        // start of either side.
                        tracing::warn!(
                            node = %self.node, devices = n, borrowed, removed,
                            "registered with the controller"
                        );
                        registered = true;
                    }
                    Err(e) => report(e),
                }
            }
            std::thread::sleep(every);
        }
    }

    fn register(
        &self,
        client: &Client,
        reporter: &dyn Reporter,
        own_url: &str,
    ) -> Result<(usize, usize, usize), String> {
        let devices = reporter.devices()?;
        let n = devices.len();
        let reply = client
            .register_agent(&AgentRegistration {
                node: self.node,
                url: own_url.to_owned(),
                secret: self.secret.clone(),
                devices,
            })
            .map_err(|e| format!("registering: {e}"))?;
        let borrowed = reply.borrowed.len();
        let removed = self
            .adopt(reply.borrowed)
            .map_err(|e| format!("removing devices no longer granted: {e}"))?;
        Ok((n, borrowed, removed))
    }
}
