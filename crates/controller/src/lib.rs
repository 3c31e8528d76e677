//! The control-plane runtime. It reads state from a [`Store`], decides with the sans-IO core
//! (`pcipool_pool`), writes every transition with compare-and-swap plus its audit records, and carries out
//! workflows through an [`Executor`], journalling each step before and after it runs so a restarted
//! controller resumes (or compensates) every unfinished workflow.
//!
//! The controller is synchronous: the HTTP API and the agents' transport wrap it.
//!
//! # Layout
//! - this file: [`Controller`], its construction, transitions with compare-and-swap, registration and
//!   reads.
//! - [`error`]: [`ControlError`], typed refusals with stable codes for the API.
//! - `assign`: borrowing (admission, placement, durable assignment, gangs).
//! - `run`: workflows (journals run step by step, outcomes, resume).
//! - `leases`: release, downgrade, renewals, what a borrower's agent carries.
//! - `hosts`: expiry, lenders lost and back, reconciling with the hardware.
//! - `dispatch`: every command a decision returns, carried out by one exhaustive match.
//! - `claims`: what this process holds while requests are in flight.
//! - `index`: the devices as placement sees them, kept current by this controller's writes.
//! - [`service`]: [`Service`], the controller running: hardware, clock, lend queue, tick, agents.
//! - [`fleet`]: [`AgentFleet`], the hosts' agents and the fabric manager over HTTP.
#![deny(missing_docs)]

mod assign;
mod claims;
mod dispatch;
pub mod error;
pub mod fleet;
mod hosts;
mod index;
mod leases;
mod run;
pub mod service;

pub use error::ControlError;
pub use fleet::{AgentFleet, AgentRecord, Liveness};
pub use service::{Clock, Hardware, Service, SystemClock, spawn_lend_worker};

use std::collections::BTreeMap;

use pcipool_backend::{Capabilities, Executor};
use pcipool_fabric::{Fdid, LeaseId, Topology};
use pcipool_pool::capacity::Ledger;
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{DeviceInfo, RouteCache};
use pcipool_pool::workflow::Journal;
use pcipool_pool::{AuditEntry, DeviceState, Event, Lease, Millis, apply};
use pcipool_store::{DeviceRow, Store, StoreError, WorkflowWrite};
use serde::Serialize;

/// What an assignment produced.
#[derive(Debug)]
pub enum Assigned {
    /// An earlier request with the same idempotency key holds these leases.
    Replayed(Vec<Granted>),
    /// New leases; the lends (journals) still have to run.
    New(Vec<(Granted, Option<Journal>)>),
}

/// Sharers of a shared device when the first request does not say.
pub const DEFAULT_MAX_SHARERS: u32 = 4;
/// The most hosts that may share one device (the wire documents the same limit).
pub use pcipool_wire::MAX_SHARERS;

pub use pcipool_wire::Granted;

/// The controller over a store.
#[derive(Debug)]
pub struct Controller<S> {
    store: S,
    policy: Policy,
    topology: Topology,
    dma_window: u64,
    /// What the fabric can do: the workflow plans follow from it.
    fabric: Capabilities,
    /// Devices that requests in flight in this process have chosen but not yet assigned. Placement skips
    /// them, so concurrent requests spread over the pool instead of all racing for the same best device;
    /// the store's compare-and-swap still decides every race (also against other processes).
    claims: std::sync::Mutex<std::collections::BTreeSet<Fdid>>,
    /// Keyed requests (tenant, idempotency key) in flight in this process.
    requests: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Fabric capacity held by granted leases and by requests in flight (built on first use).
    ledger: std::sync::Mutex<Option<Ledger>>,
    /// Every device's facts and state, read once and kept current by this controller's writes: what
    /// placement, admission and expiry look at (see `index`). Locked before `ledger` when both are.
    index: std::sync::Mutex<index::DeviceIndex>,
    /// Ids for in-flight reservations in the ledger (counting down from the top, where no lease is).
    reservations: std::sync::atomic::AtomicU64,
    /// Hop counts between hosts (the topology does not change).
    routes: std::sync::Mutex<RouteCache>,
    /// How long a voluntary release waits for the borrower's users to finish before refusing.
    release_wait_ms: u64,
    /// Whether each step's wall time goes into its journal record (not in the whole-system
    /// simulation, whose journals, and so its audit chain, must be the same for the same seed).
    step_times: bool,
    /// Errors the controller logged and carried on from, counted per place (none is dropped silently).
    logged: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// Borrowers told their lease ended (they learn it through their next renewal).
    notified: std::sync::atomic::AtomicU64,
    /// What the controller reports to Prometheus (`GET /metrics`).
    metrics: std::sync::Arc<pcipool_metrics::Metrics>,
    /// Counts the device and workflow writes this controller committed, so waiters (a long poll on a
    /// workflow) are woken by a change instead of reading the store in a loop.
    changes: tokio::sync::watch::Sender<u64>,
}

/// How often a waiting release looks again.
const RELEASE_POLL_MS: u64 = 50;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse_fdid(text: &str, id: u64) -> Result<Fdid, ControlError> {
    text.parse().map_err(|_| ControlError::Journal(id))
}

impl<S: Store> Controller<S> {
    /// A controller.
    pub fn new(store: S, policy: Policy, topology: Topology) -> Self {
        Self {
            store,
            policy,
            topology,
            dma_window: 256 << 20,
            fabric: Capabilities::default(),
            claims: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            requests: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            ledger: std::sync::Mutex::new(None),
            index: std::sync::Mutex::new(index::DeviceIndex::default()),
            reservations: std::sync::atomic::AtomicU64::new(u64::MAX),
            routes: std::sync::Mutex::new(RouteCache::default()),
            release_wait_ms: 500,
            step_times: true,
            logged: std::sync::Mutex::new(BTreeMap::new()),
            notified: std::sync::atomic::AtomicU64::new(0),
            metrics: std::sync::Arc::new(pcipool_metrics::Metrics::new()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The controller's metrics.
    pub fn metrics(&self) -> &pcipool_metrics::Metrics {
        &self.metrics
    }

    /// Runs a store operation, observing how long it took under `op`.
    pub(crate) fn timed<T>(&self, op: &str, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = f();
        self.metrics.store_op(op, started.elapsed().as_secs_f64());
        out
    }

    /// The pool's state for a scrape: devices by state, leases by model, the audit chain's length
    /// (agents are the service's to add).
    ///
    /// # Errors
    /// Store errors.
    pub fn census(&self) -> Result<pcipool_metrics::Census, ControlError> {
        let (devices, leases) = self.index()?.census();
        Ok(pcipool_metrics::Census {
            devices,
            leases,
            audit_records: i64::try_from(self.store.audit_len()?).unwrap_or(i64::MAX),
            agents: BTreeMap::new(),
        })
    }

    /// A receiver that sees every write this controller commits (a counter). Subscribe before reading
    /// what you wait on, then wait for `changed()`: no change between the two can be missed. Writes of
    /// other processes sharing the store are not seen; a waiter that cares re-reads now and then.
    pub fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The change counter's value that tells waiters the controller is going away: event streams end
    /// on it, so a server's graceful shutdown does not wait for their clients.
    pub const CLOSING: u64 = u64::MAX;

    /// Tells waiters the controller is going away (see [`Self::CLOSING`]).
    pub fn close_changes(&self) {
        self.changes.send_replace(Self::CLOSING);
    }

    /// Tells waiters a write committed.
    fn committed(&self) {
        self.changes
            .send_modify(|n| *n = n.wrapping_add(1) % Self::CLOSING);
    }

    /// The device index, read from the store on first use.
    pub(crate) fn index(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, index::DeviceIndex>, ControlError> {
        let mut index = lock(&self.index);
        if !index.loaded {
            let rows = self.timed("read_all_devices", || self.store.devices())?;
            index.load(
                rows.into_iter()
                    .map(|r| (r.value.info, r.value.state, r.version)),
            );
        }
        Ok(index)
    }

    /// Tells the index a row this controller wrote (a no-op until the index is first used).
    fn indexed(&self, row: &DeviceRow, version: u64) {
        let mut index = lock(&self.index);
        if index.loaded {
            index.put(row.info.clone(), row.state.clone(), version);
        }
    }

    /// Reads one row again into the index (after a write lost a race to a writer it did not see).
    fn reindex(&self, fdid: Fdid) {
        match self.store.device(fdid) {
            Ok(Some(row)) => self.indexed(&row.value, row.version),
            Ok(None) => {}
            Err(e) => self.log_error("reindex", &format!("{fdid}: {e}")),
        }
    }

    /// Logs an error the controller carries on from, and counts it under `site`.
    pub(crate) fn log_error(&self, site: &'static str, error: &dyn std::fmt::Display) {
        tracing::warn!(site, %error, "carried on after an error");
        *lock(&self.logged).entry(site).or_default() += 1;
        self.metrics.fault("error");
    }

    /// Errors logged and carried on from, per place, since the controller started.
    pub fn logged_errors(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.logged).clone()
    }

    /// Borrowers told that a lease ended, since the controller started.
    pub fn borrowers_notified(&self) -> u64 {
        self.notified.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies `event` to a device and carries out every command the decision returns.
    pub(crate) fn change(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        event: &Event,
        actor: &str,
        now: Millis,
    ) -> Result<DeviceState, ControlError> {
        let (state, commands) = self.transition(fdid, event, actor, now)?;
        self.carry_out(exec, fdid, commands, now)?;
        Ok(state)
    }

    /// How long a voluntary release waits for the borrower's users (default 500 ms).
    #[must_use]
    pub fn with_release_wait(mut self, ms: u64) -> Self {
        self.release_wait_ms = ms;
        self
    }

    /// Leaves the steps' wall times out of their journal records (default: in), for a run whose
    /// records must be the same every time (the seeded whole-system simulation).
    #[must_use]
    pub fn without_step_times(mut self) -> Self {
        self.step_times = false;
        self
    }

    /// What the fabric can do (default: an NTB of windows); lend and return plans follow from it.
    #[must_use]
    pub fn with_fabric(mut self, fabric: Capabilities) -> Self {
        self.fabric = fabric;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Registers a device an agent reported, with its qualification, and adds it to the pool when it
    /// qualified. Re-registering a known device is a no-op.
    ///
    /// # Errors
    /// Store errors.
    pub fn register(
        &self,
        info: DeviceInfo,
        reasons: Vec<String>,
        now: Millis,
    ) -> Result<(), ControlError> {
        if self.store.device(info.fdid)?.is_some() {
            return Ok(());
        }
        let fdid = info.fdid;
        let (qualified, _) = apply(
            &DeviceState::Discovered,
            &Event::Qualified {
                models: info.models.clone(),
                reasons: reasons.clone(),
            },
            now,
        )?;
        let state = match apply(&qualified, &Event::AddToPool, now) {
            Ok((s, _)) => s,
            Err(_) => qualified,
        };
        let target = fdid.to_string();
        let after = json(&state);
        let row = DeviceRow { info, state };
        let audit = [AuditEntry {
            at: now,
            actor: "controller",
            target: &target,
            action: "register",
            before: "",
            after: &after,
            result: "ok",
        }];
        match self.store.put_device(fdid, None, &row, &audit) {
            Ok(version) => {
                self.indexed(&row, version);
                self.committed();
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                self.reindex(fdid);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies an event to a device with compare-and-swap; returns the new state and commands. When
    /// another request changed the device between the read and the write, the event is applied again
    /// to what that request left (a few times): several sharers releasing or renewing at once must
    /// not fail each other. The transition function decides afresh each time, so an event the new
    /// state no longer allows is refused as it would have been.
    fn transition(
        &self,
        fdid: Fdid,
        event: &Event,
        actor: &str,
        now: Millis,
    ) -> Result<(DeviceState, Vec<pcipool_pool::Command>), ControlError> {
        // Each lost race means another writer committed; many writers at once on a busy machine can
        // beat one request several times in a row, so give it room (each try is one read and one
        // write, and yields to the winners first).
        const ATTEMPTS: usize = 64;
        let mut attempt = 1;
        loop {
            match self.transition_with(fdid, event, actor, now, None) {
                Err(ControlError::Conflict(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    std::thread::yield_now();
                }
                other => return other.map(|(s, c, _)| (s, c)),
            }
        }
    }

    /// As [`Self::transition`], writing a workflow journal in the same transaction when given.
    fn transition_with(
        &self,
        fdid: Fdid,
        event: &Event,
        actor: &str,
        now: Millis,
        journal: Option<(&Journal, Option<u64>)>,
    ) -> Result<(DeviceState, Vec<pcipool_pool::Command>, Option<u64>), ControlError> {
        let current = self
            .timed("read_device", || self.store.device(fdid))?
            .ok_or(ControlError::Conflict(fdid))?;
        let (next, commands) = apply(&current.value.state, event, now)?;
        let target = fdid.to_string();
        let (before, after) = (json(&current.value.state), json(&next));
        let mut audit = vec![AuditEntry {
            at: now,
            actor,
            target: &target,
            action: event.name(),
            before: &before,
            after: &after,
            result: "ok",
        }];
        let row = DeviceRow {
            info: current.value.info.clone(),
            state: next.clone(),
        };
        let written = match journal {
            None => self
                .timed("write_device", || {
                    self.store
                        .put_device(fdid, Some(current.version), &row, &audit)
                })
                .map(|v| (v, None)),
            Some((j, expected)) => {
                let body = json(j);
                let action = format!("workflow {} {:?}", j.id, j.kind);
                let result = j
                    .outcome
                    .as_ref()
                    .map_or_else(|| "running".to_owned(), |o| format!("{o:?}"));
                audit.push(AuditEntry {
                    at: now,
                    actor: "controller",
                    target: &target,
                    action: &action,
                    before: "",
                    after: &body,
                    result: &result,
                });
                let write = WorkflowWrite {
                    id: j.id,
                    expected,
                    body: &body,
                    finished: j.outcome.is_some(),
                };
                self.timed("write_device_and_journal", || {
                    self.store.put_device_and_workflow(
                        fdid,
                        Some(current.version),
                        &row,
                        &audit,
                        write,
                    )
                })
                .map(|(v, w)| (v, Some(w)))
            }
        };
        match written {
            Ok((version, w)) => {
                self.indexed(&row, version);
                self.committed();
                Ok((next, commands, w))
            }
            Err(StoreError::Conflict { .. }) => {
                self.reindex(fdid);
                Err(ControlError::Conflict(fdid))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies an operator event to a device (drain, undrain, clear a quarantine).
    ///
    /// # Errors
    /// Illegal in the device's state, unknown device, conflicts.
    pub fn operate(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        event: &Event,
        actor: &str,
        now: Millis,
    ) -> Result<&'static str, ControlError> {
        let result = self.change(exec, fdid, event, actor, now).map(|s| s.name());
        if let Err(e) = &result {
            self.refused(actor, &fdid.to_string(), event.name(), "", e, now);
        }
        result
    }

    /// A workflow's journal.
    ///
    /// # Errors
    /// Store errors or an unreadable journal.
    pub fn journal(&self, id: u64) -> Result<Option<Journal>, ControlError> {
        match self.store.workflow(id)? {
            Some(body) => serde_json::from_str(&body.value)
                .map(Some)
                .map_err(|_| ControlError::Journal(id)),
            None => Ok(None),
        }
    }

    /// The fabric's hosts.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every active lease with its device.
    ///
    /// # Errors
    /// Store errors.
    pub fn leases(&self) -> Result<Vec<(Fdid, Lease, &'static str)>, ControlError> {
        let mut out = Vec::new();
        for row in self.store.devices()? {
            let name = row.value.state.name();
            for l in row.value.state.leases() {
                out.push((row.value.info.fdid, l.clone(), name));
            }
        }
        Ok(out)
    }

    fn find_lease(&self, lease: LeaseId) -> Result<(Fdid, Lease), ControlError> {
        let row = self
            .store
            .device_of_lease(lease)?
            .ok_or(ControlError::NoLease(lease))?;
        row.value
            .state
            .leases()
            .into_iter()
            .find(|l| l.id == lease)
            .map(|l| (row.value.info.fdid, l.clone()))
            .ok_or(ControlError::NoLease(lease))
    }
}
