//! The control-plane runtime. It reads state from a [`Store`], decides with the sans-IO core
//! (`pcipool_pool`), writes every transition with compare-and-swap plus its audit records, and carries out
//! workflows through an [`Executor`], journalling each step before and after it runs so a restarted
//! controller resumes (or compensates) every unfinished workflow.
//!
//! This first cut is synchronous: the HTTP API and the agents' transport wrap it.
//!
//! # Layout
//! - [`Controller`]: register, borrow, release, heartbeat, tick, resume.
//! - [`ControlError`]: typed refusals with stable codes for the API.
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use pcipool_backend::{Capabilities, Executor, Side, StepContext, StepErrorKind};
use pcipool_fabric::{Fdid, LeaseId, NodeId, Topology};
use pcipool_pcie::Bdf;
use pcipool_pool::capacity::{CapacityError, Ledger};
use pcipool_pool::policy::{Policy, PolicyError};
use pcipool_pool::schedule::{self, DeviceClass, DeviceInfo, PlacementError, Request, RouteCache};
use pcipool_pool::workflow::{Journal, PlanKind, StepStatus, WorkflowKind, WorkflowOutcome};
use pcipool_pool::{
    AuditEntry, DeviceState, Epoch, Event, Lease, Millis, TransitionError, WorkflowId, apply,
};
use pcipool_qualify::AccessModel;
use pcipool_store::{DeviceRow, Store, StoreError, WorkflowWrite};
use serde::Serialize;

/// Why the controller refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Policy refused the request.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Nothing to place it on.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The state machine refused.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Someone else changed the device first (another borrower won). Worth trying again: the winner
    /// may have left room (a shared device) or another device may do.
    #[error("{0}: taken by a concurrent request")]
    Conflict(Fdid),
    /// The device asked for by name is held and has no room for this request (lent, held exclusively,
    /// all sharers taken). Trying again at once will not help.
    #[error("{0}: held by another borrower")]
    Held(Fdid),
    /// No such lease.
    #[error("no lease {0}")]
    NoLease(LeaseId),
    /// The lease belongs to another tenant.
    #[error("lease {0} belongs to another tenant")]
    NotYours(LeaseId),
    /// The lend workflow failed and was compensated.
    #[error("lend of {fdid} failed: {reason}")]
    LendFailed {
        /// Device.
        fdid: Fdid,
        /// Why.
        reason: String,
    },
    /// A journal row does not decode.
    #[error("workflow {0}: journal unreadable")]
    Journal(u64),
    /// No such device.
    #[error("no device {0}")]
    NoDevice(Fdid),
    /// The device's physical function or one of its virtual functions is out.
    #[error("{0}: its physical function or one of its virtual functions is lent or on its way")]
    FamilyBusy(Fdid),
    /// Devices match, but the fabric cannot carry another lease to this borrower.
    #[error("no capacity on the fabric: {0}")]
    Capacity(#[from] pcipool_pool::capacity::CapacityError),
    /// No such host in the fabric.
    #[error("no host {0} in the fabric")]
    NoHost(NodeId),
    /// The device is still in use where it would be taken from.
    #[error("{0}")]
    Busy(String),
    /// The same keyed request is still being carried out.
    #[error("request {0} is still in progress; retry it in a moment")]
    RequestInFlight(String),
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An agent's report does not make sense.
    #[error("bad report: {0}")]
    BadReport(String),
    /// This runtime does not offer the operation.
    #[error("not supported here: {0}")]
    Unsupported(String),
}

impl ControlError {
    /// Stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(_) | Self::Journal(_) => "STORE_ERROR",
            Self::Policy(PolicyError::OverQuota { .. }) => "OVER_QUOTA",
            Self::Policy(PolicyError::UnknownTenant(_)) => "UNKNOWN_TENANT",
            Self::Policy(_) => "POLICY",
            Self::Placement(_) | Self::Capacity(_) => "NO_CAPACITY",
            Self::Transition(TransitionError::Conflict { .. })
            | Self::Conflict(_)
            | Self::Held(_)
            | Self::FamilyBusy(_)
            | Self::RequestInFlight(_) => "CONFLICT",
            Self::Transition(TransitionError::StaleEpoch { .. }) => "STALE_EPOCH",
            Self::Transition(_) => "ILLEGAL_TRANSITION",
            Self::NoLease(_) => "NO_SUCH_LEASE",
            Self::NotYours(_) => "FORBIDDEN",
            Self::LendFailed { .. } => "LEND_FAILED",
            Self::NoDevice(_) => "NO_SUCH_DEVICE",
            Self::NoHost(_) => "NO_SUCH_HOST",
            Self::BadReport(_) | Self::BadRequest(_) => "BAD_REQUEST",
            Self::Busy(_) => "BUSY",
            Self::Unsupported(_) => "UNSUPPORTED",
        }
    }
}

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
/// The most sharers a request may allow (each costs BAR and DMA mappings on the adapters).
pub const MAX_SHARERS: u32 = 64;

/// A granted lease, as `borrow` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Granted {
    /// Lease id.
    pub lease_id: LeaseId,
    /// Device.
    pub fdid: Fdid,
    /// Fencing epoch.
    pub epoch: Epoch,
    /// Where the borrower's kernel placed the device, as the lend's hot-add reported it (`None` for a
    /// shared lease, and for a lend that has not finished yet).
    pub attached: Option<Bdf>,
    /// Lend workflow id.
    pub workflow: u64,
}

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
    /// Ids for in-flight reservations in the ledger (counting down from the top, where no lease is).
    reservations: std::sync::atomic::AtomicU64,
    /// Hop counts between hosts (the topology does not change).
    routes: std::sync::Mutex<RouteCache>,
    /// How long a voluntary release waits for the borrower's users to finish before refusing.
    release_wait_ms: u64,
}

/// How often a waiting release looks again.
const RELEASE_POLL_MS: u64 = 50;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Capacity a request reserved in the ledger; given back when the request is done (its leases, if any,
/// are in the store by then and the next sync counts them).
struct Reservation<'a> {
    ledger: &'a std::sync::Mutex<Option<Ledger>>,
    held: Vec<(LeaseId, DeviceInfo, NodeId)>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if let Some(ledger) = lock(self.ledger).as_mut() {
            for (id, info, borrower) in self.held.drain(..) {
                ledger.remove(id, &info, borrower);
            }
        }
    }
}

/// A keyed request in flight; released when the request returns.
struct RequestClaim<'a> {
    requests: &'a std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    id: (String, String),
}

impl Drop for RequestClaim<'_> {
    fn drop(&mut self) {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A physical function and its virtual functions exclude each other: the PF cannot be lent (or reset)
/// while any of its VFs is out, and no VF can go while the PF is held, draining or being returned.
/// Built once per placement (one pass over the rows) so the check per device is a lookup.
#[derive(Debug, Default)]
struct Families {
    /// (node, PF address) -> (the PF is busy for its VFs, some VF of it is out).
    busy: HashMap<(NodeId, Bdf), (bool, bool)>,
}

impl Families {
    fn of(rows: &[pcipool_store::Versioned<DeviceRow>]) -> Self {
        let mut busy: HashMap<(NodeId, Bdf), (bool, bool)> = HashMap::new();
        for r in rows {
            let f = r.value.info.fdid;
            let state = &r.value.state;
            let entry = busy.entry((f.node, f.bdf)).or_default();
            match f.vf {
                None => {
                    entry.0 = !matches!(
                        state,
                        DeviceState::Available
                            | DeviceState::Rejected { .. }
                            | DeviceState::Qualified { .. }
                    );
                }
                Some(_) => {
                    entry.1 |= !state.leases().is_empty()
                        || matches!(
                            state,
                            DeviceState::Lending { .. } | DeviceState::Returning { .. }
                        );
                }
            }
        }
        Self { busy }
    }

    /// Whether `fdid` is held back by its family.
    fn blocks(&self, fdid: Fdid) -> bool {
        let (pf_busy, vf_out) = self
            .busy
            .get(&(fdid.node, fdid.bdf))
            .copied()
            .unwrap_or_default();
        match fdid.vf {
            None => vf_out,
            Some(_) => pf_busy,
        }
    }
}

/// Two claims clash when they are the same device, or a PF and one of its VFs.
fn clash(a: &Fdid, b: &Fdid) -> bool {
    a == b || (a.node == b.node && a.bdf == b.bdf && a.vf.is_none() != b.vf.is_none())
}

/// Devices one request has claimed; released when the request is done with placement.
struct Claim<'a> {
    claims: &'a std::sync::Mutex<std::collections::BTreeSet<Fdid>>,
    held: Vec<Fdid>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for f in &self.held {
            claims.remove(f);
        }
    }
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
            reservations: std::sync::atomic::AtomicU64::new(u64::MAX),
            routes: std::sync::Mutex::new(RouteCache::default()),
            release_wait_ms: 500,
        }
    }

    /// How long a voluntary release waits for the borrower's users (default 500 ms).
    #[must_use]
    pub fn with_release_wait(mut self, ms: u64) -> Self {
        self.release_wait_ms = ms;
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
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
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
            .store
            .device(fdid)?
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
                .store
                .put_device(fdid, Some(current.version), &row, &audit)
                .map(|_| None),
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
                self.store
                    .put_device_and_workflow(fdid, Some(current.version), &row, &audit, write)
                    .map(|(_, w)| Some(w))
            }
        };
        match written {
            Ok(w) => Ok((next, commands, w)),
            Err(StoreError::Conflict { .. }) => Err(ControlError::Conflict(fdid)),
            Err(e) => Err(e.into()),
        }
    }

    /// Grants `request` to `tenant` and runs the lend workflows. Gang requests are all or nothing.
    /// Requests run concurrently: when another request takes a chosen device first, placement runs
    /// again on what is left (a few times), unless the request named that one device.
    ///
    /// # Errors
    /// Policy, placement, conflict (another request won the device) or a failed lend.
    pub fn borrow(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: &str,
        request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Vec<Granted>, ControlError> {
        match self.assign(actor, tenant, request, duration_secs, now)? {
            Assigned::Replayed(granted) => Ok(granted),
            Assigned::New(lends) => self.complete_lends(exec, lends, now),
        }
    }

    /// The first half of a borrow: admission, placement and the durable assignment (each device goes to
    /// `Lending` with its journal, or joins its sharers). Nothing has touched the hardware yet; the lends
    /// run with [`Self::complete_lends`], now or from a background worker (the API's `wait: false`), and
    /// a controller that dies in between resumes them from their journals.
    ///
    /// # Errors
    /// As [`Self::borrow`], except failed lends.
    pub fn assign(
        &self,
        actor: &str,
        tenant: &str,
        request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Assigned, ControlError> {
        let detail = json(&request);
        let result = self.assign_inner(actor, tenant, request, duration_secs, now);
        if let Err(e) = &result {
            self.refused(
                actor,
                &format!("tenant {tenant}"),
                "borrow",
                &detail,
                e,
                now,
            );
        }
        result
    }

    /// Records a refused request in the audit log (granted ones are recorded by their transitions).
    /// Store failures are not recorded: the store is what failed.
    fn refused(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        detail: &str,
        error: &ControlError,
        now: Millis,
    ) {
        if matches!(error, ControlError::Store(_)) {
            return;
        }
        let result = format!("refused {}: {error}", error.code());
        let _ = self.store.audit(&[AuditEntry {
            at: now,
            actor,
            target,
            action,
            before: "",
            after: detail,
            result: &result,
        }]);
    }

    fn assign_inner(
        &self,
        actor: &str,
        tenant: &str,
        request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Assigned, ControlError> {
        const ATTEMPTS: usize = 8;
        const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
        let _in_flight = match &request.request_id {
            Some(key) => {
                if key.is_empty() || key.len() > 128 || key.chars().any(char::is_whitespace) {
                    return Err(ControlError::BadRequest(
                        "request_id must be 1-128 characters without whitespace".into(),
                    ));
                }
                let replay = self.granted_for(tenant, key)?;
                if !replay.is_empty() {
                    return Ok(Assigned::Replayed(replay));
                }
                Some(self.claim_request(tenant, key)?)
            }
            None => None,
        };
        if let Some(n) = request.max_sharers
            && !(1..=MAX_SHARERS).contains(&n)
        {
            return Err(ControlError::BadRequest(format!(
                "max_sharers {n} is outside 1..={MAX_SHARERS}"
            )));
        }
        let named_share = request.selector.fdid.is_some() && request.model == AccessModel::Shared;
        let deadline = std::time::Instant::now() + CLAIM_WAIT;
        let mut attempt = 1;
        loop {
            match self.assign_once(actor, tenant, request.clone(), duration_secs, now) {
                // Another device may do: try again at once on the state the winner left.
                Err(ControlError::Conflict(_) | ControlError::FamilyBusy(_))
                    if request.selector.fdid.is_none() && attempt < ATTEMPTS =>
                {
                    attempt += 1;
                }
                // A named shared device another request has claimed: its winner may leave room. Wait
                // for the winner's commit, bounded in time rather than tries (a durable commit is slow
                // on a busy disk). A device that is simply held (`Held`) is refused at once.
                Err(ControlError::Conflict(_) | ControlError::FamilyBusy(_))
                    if named_share && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2 << attempt.min(5)));
                    attempt += 1;
                }
                other => return other.map(Assigned::New),
            }
        }
    }

    /// Runs the lends of one assignment. A gang is all or nothing here too: when one member's lend fails
    /// (and is compensated), the members already lent are released again.
    ///
    /// # Errors
    /// [`ControlError::LendFailed`] for the first member that failed; store errors.
    pub fn complete_lends(
        &self,
        exec: &mut impl Executor,
        lends: Vec<(Granted, Option<Journal>)>,
        now: Millis,
    ) -> Result<Vec<Granted>, ControlError> {
        let mut out = Vec::new();
        let mut lends = lends.into_iter();
        while let Some((granted, journal)) = lends.next() {
            let Some(mut journal) = journal else {
                out.push(granted);
                continue;
            };
            match self.run(exec, &mut journal, now)? {
                WorkflowOutcome::Succeeded => out.push(Granted {
                    attached: journal.ctx.attached,
                    ..granted
                }),
                WorkflowOutcome::Compensated(reason) | WorkflowOutcome::Failed(reason) => {
                    // Members not started yet never touched the hardware: finish their journals as
                    // compensated, which returns their devices to the pool in the same transaction.
                    for (_, rest) in lends.by_ref() {
                        if let Some(mut rest) = rest {
                            rest.outcome = Some(WorkflowOutcome::Compensated(format!(
                                "gang member {} failed",
                                granted.fdid
                            )));
                            self.conclude(&rest, Some(1), now)?;
                        }
                    }
                    for lent in &out {
                        let _ = self.release(exec, "controller", None, lent.lease_id, now);
                    }
                    return Err(ControlError::LendFailed {
                        fdid: granted.fdid,
                        reason,
                    });
                }
            }
        }
        Ok(out)
    }

    fn assign_once(
        &self,
        actor: &str,
        tenant: &str,
        mut request: Request,
        duration_secs: Option<u64>,
        now: Millis,
    ) -> Result<Vec<(Granted, Option<Journal>)>, ControlError> {
        let rows = self.store.devices()?;
        let mut usage: BTreeMap<DeviceClass, u32> = BTreeMap::new();
        let mut load: HashMap<NodeId, u32> = HashMap::new();
        for r in &rows {
            for l in r.value.state.leases() {
                *load.entry(r.value.info.fdid.node).or_default() += 1;
                if l.tenant == tenant {
                    *usage
                        .entry(DeviceClass::of(r.value.info.class))
                        .or_default() += 1;
                }
            }
        }
        let admission = self
            .policy
            .admit(tenant, &mut request, &usage, duration_secs)?;
        let claimed = self.claimed();
        if let Some(f) = request.selector.fdid {
            if claimed.contains(&f) {
                return Err(ControlError::Conflict(f));
            }
            if Families::of(&rows).blocks(f) {
                return Err(ControlError::FamilyBusy(f));
            }
        }
        // What granted leases hold on adapters and links; placement only picks devices that still fit.
        // The devices chosen stay reserved in the ledger until this request is done, so concurrent
        // requests cannot jointly overrun an adapter or a link.
        // Declared before the ledger's guard, so it is dropped after it (its drop takes the lock).
        let mut reservation = Reservation {
            ledger: &self.ledger,
            held: Vec::new(),
        };
        let mut ledger_slot = lock(&self.ledger);
        let ledger = ledger_slot.get_or_insert_with(|| {
            Ledger::new(
                &self.topology,
                self.dma_window,
                self.policy.link_oversubscription_pct,
            )
        });
        ledger.sync(rows.iter().flat_map(|r| {
            r.value
                .state
                .leases()
                .into_iter()
                .map(|l| (l.id, &r.value.info, l.borrower))
        }));
        let families = Families::of(&rows);
        let mut unfit: std::collections::BTreeSet<Fdid> = std::collections::BTreeSet::new();
        let mut why_unfit: Option<CapacityError> = None;
        let chosen = loop {
            let eligible: Vec<(&DeviceInfo, &DeviceState)> = rows
                .iter()
                .filter(|r| !claimed.iter().any(|c| clash(c, &r.value.info.fdid)))
                .filter(|r| !unfit.contains(&r.value.info.fdid))
                .filter(|r| !families.blocks(r.value.info.fdid))
                .filter(|r| !self.policy.in_maintenance(r.value.info.fdid, now))
                .map(|r| (&r.value.info, &r.value.state))
                .collect();
            let placed = schedule::place(
                &request,
                eligible,
                &load,
                &self.topology,
                &mut lock(&self.routes),
                self.policy.strategy,
            );
            let chosen = match placed {
                Ok(c) => c,
                Err(e) => {
                    if let Some(why) = why_unfit {
                        return Err(ControlError::Capacity(why));
                    }
                    // A request for one named device that someone holds is a conflict, not a capacity problem.
                    let held = request.selector.fdid.filter(|f| {
                        rows.iter()
                            .any(|r| r.value.info.fdid == *f && !r.value.state.leases().is_empty())
                    });
                    return Err(match (e, held) {
                        (PlacementError::NoCapacity { .. }, Some(f)) => ControlError::Held(f),
                        (e, _) => e.into(),
                    });
                }
            };
            // Reserve the whole gang; if one does not fit, give back what this round reserved.
            let mut misfit = None;
            let before = reservation.held.len();
            for fdid in &chosen {
                let Some(row) = rows.iter().find(|r| r.value.info.fdid == *fdid) else {
                    continue;
                };
                let id = LeaseId(self.reservations.fetch_sub(1, Ordering::Relaxed));
                match ledger.add(id, &row.value.info, request.borrower) {
                    Ok(()) => reservation
                        .held
                        .push((id, row.value.info.clone(), request.borrower)),
                    Err(e) => {
                        misfit = Some((*fdid, e));
                        break;
                    }
                }
            }
            match misfit {
                None => break chosen,
                Some((fdid, e)) => {
                    for (id, info, borrower) in reservation.held.drain(before..) {
                        ledger.remove(id, &info, borrower);
                    }
                    unfit.insert(fdid);
                    why_unfit = Some(e);
                }
            }
        };
        drop(ledger_slot);
        let classes: Vec<DeviceClass> = chosen
            .iter()
            .filter_map(|f| rows.iter().find(|r| r.value.info.fdid == *f))
            .map(|r| DeviceClass::of(r.value.info.class))
            .collect();
        self.policy.check_placed(tenant, &usage, &classes)?;
        let _claim = self.claim(&chosen)?;
        // Claimed: no other request of this controller can take a PF or VF of these devices now, but our
        // rows may predate one that finished meanwhile. Check the families against the store again.
        let has_family = |f: &Fdid| {
            rows.iter().any(|r| {
                let o = r.value.info.fdid;
                o.node == f.node && o.bdf == f.bdf && o.vf != f.vf
            })
        };
        if chosen.iter().any(has_family) {
            let fresh = Families::of(&self.store.devices()?);
            if let Some(f) = chosen.iter().find(|f| fresh.blocks(**f)) {
                return Err(ControlError::FamilyBusy(*f));
            }
        }
        let mut granted: Vec<(Lease, u64, Fdid, Option<Journal>)> = Vec::new();
        for fdid in &chosen {
            let [lease_no, epoch_no, workflow] =
                self.store.next_many(&["lease", "epoch", "workflow"])?[..]
            else {
                return Err(ControlError::Journal(0));
            };
            let lease = Lease {
                id: LeaseId(lease_no),
                borrower: request.borrower,
                tenant: tenant.to_owned(),
                model: request.model,
                epoch: Epoch(epoch_no),
                expires_at: now.saturating_add(admission.ttl_ms),
                ttl: admission.ttl_ms,
                request: request.request_id.clone(),
                attached: None,
            };
            let (event, journal) = if request.model == AccessModel::Shared {
                (
                    Event::Share {
                        lease: lease.clone(),
                        max_sharers: request.max_sharers.unwrap_or(DEFAULT_MAX_SHARERS),
                    },
                    None,
                )
            } else {
                // The lend journal is created in the same transaction as the assignment.
                let ctx = self.context(*fdid, &lease)?;
                (
                    Event::Assign {
                        lease: lease.clone(),
                        workflow: WorkflowId(workflow),
                    },
                    Some(Journal::new(
                        workflow,
                        WorkflowKind::Lend,
                        fdid.to_string(),
                        ctx,
                        self.fabric.attachment,
                    )),
                )
            };
            match self.transition_with(
                *fdid,
                &event,
                actor,
                now,
                journal.as_ref().map(|j| (j, None)),
            ) {
                Ok(_) => granted.push((lease, workflow, *fdid, journal)),
                Err(e) => {
                    // All or nothing: undo the devices this gang already took, finishing their journals.
                    for (l, w, f, j) in &mut granted {
                        match j {
                            Some(journal) => {
                                journal.outcome =
                                    Some(WorkflowOutcome::Compensated("gang incomplete".into()));
                                let undo = Event::LendFailed {
                                    workflow: WorkflowId(*w),
                                    reason: "gang incomplete".into(),
                                };
                                let _ = self.transition_with(
                                    *f,
                                    &undo,
                                    actor,
                                    now,
                                    Some((journal, Some(1))),
                                );
                            }
                            None => {
                                let undo = Event::Release {
                                    lease: l.id,
                                    workflow: WorkflowId(*w),
                                };
                                let _ = self.transition(*f, &undo, actor, now);
                            }
                        }
                    }
                    return Err(match e {
                        ControlError::Transition(TransitionError::Conflict { .. }) => {
                            ControlError::Conflict(*fdid)
                        }
                        other => other,
                    });
                }
            }
        }
        Ok(granted
            .into_iter()
            .map(|(lease, workflow, fdid, journal)| {
                (
                    Granted {
                        lease_id: lease.id,
                        fdid,
                        epoch: lease.epoch,
                        attached: None,
                        workflow,
                    },
                    journal,
                )
            })
            .collect())
    }

    /// The active leases a tenant's earlier request with this idempotency key was granted.
    fn granted_for(&self, tenant: &str, key: &str) -> Result<Vec<Granted>, ControlError> {
        let mut out = Vec::new();
        for row in self.store.devices()? {
            let workflow = match &row.value.state {
                DeviceState::Lending { workflow, .. } => workflow.0,
                _ => 0,
            };
            for l in row.value.state.leases() {
                if l.tenant == tenant && l.request.as_deref() == Some(key) {
                    out.push(Granted {
                        lease_id: l.id,
                        fdid: row.value.info.fdid,
                        epoch: l.epoch,
                        attached: l.attached,
                        workflow,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Marks a tenant's keyed request as in flight; the same key again meanwhile is a conflict.
    fn claim_request(&self, tenant: &str, key: &str) -> Result<RequestClaim<'_>, ControlError> {
        let id = (tenant.to_owned(), key.to_owned());
        let mut in_flight = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !in_flight.insert(id.clone()) {
            return Err(ControlError::RequestInFlight(key.to_owned()));
        }
        Ok(RequestClaim {
            requests: &self.requests,
            id,
        })
    }

    fn claimed(&self) -> std::collections::BTreeSet<Fdid> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Claims `chosen` for this request; a device another request claimed meanwhile is a conflict.
    fn claim(&self, chosen: &[Fdid]) -> Result<Claim<'_>, ControlError> {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = chosen.iter().find(|f| claims.iter().any(|c| clash(c, f))) {
            return Err(ControlError::Conflict(*f));
        }
        claims.extend(chosen.iter().copied());
        Ok(Claim {
            claims: &self.claims,
            held: chosen.to_vec(),
        })
    }

    fn context(&self, fdid: Fdid, lease: &Lease) -> Result<StepContext, ControlError> {
        let row = self
            .store
            .device(fdid)?
            .ok_or(ControlError::Conflict(fdid))?;
        let info = &row.value.info;
        Ok(StepContext {
            lender: fdid.node,
            // A VF's steps act on its own routing id, not on its PF's.
            bdf: info.function.unwrap_or(fdid.bdf),
            borrower: lease.borrower,
            attached: lease.attached,
            lease: lease.id,
            epoch: lease.epoch,
            bars: info.bars.clone(),
            dma_window: self.dma_window,
            driver: info.driver.clone(),
            lender_driver: info.local_driver.clone(),
            lender_vfs: info.local_vfs,
            deadline_ms: pcipool_backend::DEFAULT_STEP_DEADLINE_MS,
        })
    }

    fn save(
        &self,
        journal: &Journal,
        expected: Option<u64>,
        now: Millis,
    ) -> Result<u64, ControlError> {
        let body = json(journal);
        let target = journal.fdid.clone();
        let action = format!("workflow {} {:?}", journal.id, journal.kind);
        let result = journal
            .outcome
            .as_ref()
            .map_or_else(|| "running".to_owned(), |o| format!("{o:?}"));
        let audit = [AuditEntry {
            at: now,
            actor: "controller",
            target: &target,
            action: &action,
            before: "",
            after: &body,
            result: &result,
        }];
        Ok(self.store.put_workflow(
            journal.id,
            expected,
            &body,
            journal.outcome.is_some(),
            &audit,
        )?)
    }

    /// Runs a journal to its end, saving after every step, then applies the outcome to the device.
    fn run(
        &self,
        exec: &mut impl Executor,
        journal: &mut Journal,
        now: Millis,
    ) -> Result<WorkflowOutcome, ControlError> {
        let mut version = self.store.workflow(journal.id)?.map(|v| v.version);
        while let Some(i) = journal.next_pending() {
            let step = journal.steps[i].step;
            match exec.run(step, &journal.ctx) {
                Ok(output) => {
                    journal.record_output(i, output);
                    // Progress is flushed by the next durable commit; a rerun after a power loss is harmless.
                    version = Some(self.store.put_workflow_progress(
                        journal.id,
                        version,
                        &json(journal),
                    )?);
                    continue;
                }
                Err(e) if journal.returning() && step.side() == Side::Borrower => {
                    journal.steps[i].status = StepStatus::Skipped(e.message);
                    journal.steps[i].error_kind = Some(e.kind);
                    version = Some(self.store.put_workflow_progress(
                        journal.id,
                        version,
                        &json(journal),
                    )?);
                    continue;
                }
                Err(e) => {
                    let why = e.message;
                    journal.steps[i].status = StepStatus::Failed(why.clone());
                    journal.steps[i].error_kind = Some(e.kind);
                    version = Some(self.save(journal, version, now)?);
                    match (journal.kind, journal.compensating, journal.escalated) {
                        (WorkflowKind::Lend, false, _) => {
                            journal.compensating = true;
                            journal.replan(PlanKind::Return);
                        }
                        (_, _, false) if matches!(step, pcipool_backend::Step::LenderReset) => {
                            journal.escalated = true;
                            journal.replan(PlanKind::ReturnEscalated);
                            if journal.kind == WorkflowKind::Return {
                                // The device records the escalation (Returning, escalated).
                                let fdid = parse_fdid(&journal.fdid, journal.id)?;
                                let event = Event::ReturnFailed {
                                    workflow: WorkflowId(journal.id),
                                    reason: why,
                                };
                                let _ = self.transition(fdid, &event, "controller", now);
                            }
                        }
                        _ => {
                            journal.outcome = Some(WorkflowOutcome::Failed(why));
                            self.conclude(journal, version, now)?;
                            return Ok(journal
                                .outcome
                                .clone()
                                .unwrap_or(WorkflowOutcome::Failed(String::new())));
                        }
                    }
                }
            }
            version = Some(self.save(journal, version, now)?);
        }
        journal.outcome = Some(if journal.compensating {
            WorkflowOutcome::Compensated("lend step failed; device returned".into())
        } else {
            WorkflowOutcome::Succeeded
        });
        self.conclude(journal, version, now)?;
        Ok(journal
            .outcome
            .clone()
            .unwrap_or(WorkflowOutcome::Succeeded))
    }

    /// Writes a finished journal and applies its outcome to the device in one transaction.
    fn conclude(
        &self,
        journal: &Journal,
        version: Option<u64>,
        now: Millis,
    ) -> Result<(), ControlError> {
        let fdid = parse_fdid(&journal.fdid, journal.id)?;
        let Some(event) = Self::outcome_event(journal) else {
            self.save(journal, version, now)?;
            return Ok(());
        };
        match self.transition_with(fdid, &event, "controller", now, Some((journal, version))) {
            Ok(_) => {}
            // The device moved on (an operator, a fence): the journal still has to be finished.
            Err(ControlError::Transition(_) | ControlError::Conflict(_)) => {
                self.save(journal, version, now)?;
            }
            Err(e) => return Err(e),
        }
        if let (WorkflowKind::Lend, Some(WorkflowOutcome::Failed(why))) =
            (&journal.kind, &journal.outcome)
        {
            // Even the compensation's escalated reset failed: the device is unsafe to lend again.
            let fault = Event::Fault {
                reason: format!("reset failed while undoing a lend: {why}"),
            };
            let _ = self.transition(fdid, &fault, "controller", now);
        }
        Ok(())
    }

    /// The device event a finished journal stands for.
    fn outcome_event(journal: &Journal) -> Option<Event> {
        let w = WorkflowId(journal.id);
        Some(match (&journal.kind, journal.outcome.as_ref()?) {
            (WorkflowKind::Lend, WorkflowOutcome::Succeeded) => Event::LendDone {
                workflow: w,
                attached: journal.ctx.attached,
            },
            (
                WorkflowKind::Lend,
                WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why),
            ) => Event::LendFailed {
                workflow: w,
                reason: why.clone(),
            },
            (WorkflowKind::Return, WorkflowOutcome::Succeeded) => Event::ReturnDone { workflow: w },
            (
                WorkflowKind::Return,
                WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why),
            ) => Event::ReturnFailed {
                workflow: w,
                reason: why.clone(),
            },
        })
    }

    /// Applies a finished journal's outcome to the device's state (resume, after an older crash window).
    fn finish(&self, journal: &Journal, now: Millis) -> Result<(), ControlError> {
        let fdid = parse_fdid(&journal.fdid, journal.id)?;
        let w = WorkflowId(journal.id);
        let event = match (&journal.kind, &journal.outcome) {
            (WorkflowKind::Lend, Some(WorkflowOutcome::Succeeded)) => Event::LendDone {
                workflow: w,
                attached: journal.ctx.attached,
            },
            (WorkflowKind::Lend, Some(WorkflowOutcome::Compensated(why))) => Event::LendFailed {
                workflow: w,
                reason: why.clone(),
            },
            (WorkflowKind::Lend, Some(WorkflowOutcome::Failed(why))) => {
                // Even the compensation's escalated reset failed: the device is unsafe to lend again.
                let _ = self.transition(
                    fdid,
                    &Event::LendFailed {
                        workflow: w,
                        reason: why.clone(),
                    },
                    "controller",
                    now,
                );
                Event::Fault {
                    reason: format!("reset failed while undoing a lend: {why}"),
                }
            }
            (WorkflowKind::Return, Some(WorkflowOutcome::Succeeded)) => {
                Event::ReturnDone { workflow: w }
            }
            (
                WorkflowKind::Return,
                Some(WorkflowOutcome::Compensated(why) | WorkflowOutcome::Failed(why)),
            ) => Event::ReturnFailed {
                workflow: w,
                reason: why.clone(),
            },
            (_, None) => return Ok(()),
        };
        match self.transition(fdid, &event, "controller", now) {
            Ok(_) | Err(ControlError::Transition(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Releases a lease (tenant `None` = operator, any lease) and runs the return workflow.
    ///
    /// # Errors
    /// Unknown lease, another tenant's lease, conflicts.
    pub fn release(
        &self,
        exec: &mut impl Executor,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        now: Millis,
    ) -> Result<(), ControlError> {
        let (fdid, held) = match self.lease_of(lease, tenant) {
            Ok(found) => found,
            Err(e) => {
                self.refused(actor, &lease.to_string(), "release", "", &e, now);
                return Err(e);
            }
        };
        // A voluntary release never yanks a device from under programs that still use it on the
        // borrower: wait a little for them to finish, then refuse and say so (the lease stays).
        if held.model != AccessModel::Shared {
            let ctx = self.context(fdid, &held)?;
            let mut waited = 0;
            loop {
                match exec.run(pcipool_backend::Step::BorrowerQuiesceCheck, &ctx) {
                    // Nothing on a borrower nobody can reach uses the device any more.
                    Ok(_) => break,
                    Err(e) if e.kind == StepErrorKind::HostDown => break,
                    Err(why) if waited >= self.release_wait_ms => {
                        let e = ControlError::Busy(format!(
                            "{why}; waited {waited} ms: stop them and release again"
                        ));
                        self.refused(actor, &lease.to_string(), "release", "", &e, now);
                        return Err(e);
                    }
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(RELEASE_POLL_MS));
                        waited += RELEASE_POLL_MS;
                    }
                }
            }
        }
        let workflow = self.store.next("workflow")?;
        let (_, commands) = self.transition(
            fdid,
            &Event::Release {
                lease,
                workflow: WorkflowId(workflow),
            },
            actor,
            now,
        )?;
        self.run_returns(exec, fdid, &commands, now)
    }

    /// The device and the lease `lease`, when `tenant` (None = operator) may act on it.
    fn lease_of(
        &self,
        lease: LeaseId,
        tenant: Option<&str>,
    ) -> Result<(Fdid, Lease), ControlError> {
        let (fdid, held) = self.find_lease(lease)?;
        if tenant.is_some_and(|t| t != held.tenant) {
            return Err(ControlError::NotYours(lease));
        }
        Ok((fdid, held))
    }

    /// Records in the audit chain what another part of the pool reports (the fabric's data path:
    /// mappings torn down and why). Short, plain fields only: `action` is `[a-z_]{1,40}`, `target` at most
    /// 100 characters, `result` at most 500.
    ///
    /// # Errors
    /// Fields out of shape, or the store failed.
    pub fn record(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        result: &str,
        now: Millis,
    ) -> Result<(), ControlError> {
        let plain_action = !action.is_empty()
            && action.len() <= 40
            && action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !plain_action || target.is_empty() || target.len() > 100 || result.len() > 500 {
            return Err(ControlError::BadRequest(
                "an audit record needs an action of a-z and _ (1-40), a target (1-100 characters) and a result (at most 500)".into(),
            ));
        }
        self.store.audit(&[AuditEntry {
            at: now,
            actor,
            target,
            action,
            before: "",
            after: "",
            result,
        }])?;
        Ok(())
    }

    /// Downgrades an exclusive shared-model lease (tenant `None` = operator): its holder has
    /// initialised the device and lets up to `max_sharers` hosts share it.
    ///
    /// # Errors
    /// Unknown lease, another tenant's lease, a lease that is not exclusive.
    pub fn downgrade(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        max_sharers: u32,
        now: Millis,
    ) -> Result<(), ControlError> {
        let result = self.lease_of(lease, tenant).and_then(|(fdid, _)| {
            self.transition(fdid, &Event::Downgrade { lease, max_sharers }, actor, now)
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let detail = format!("max_sharers {max_sharers}");
                self.refused(actor, &lease.to_string(), "downgrade", &detail, &e, now);
                Err(e)
            }
        }
    }

    fn run_returns(
        &self,
        exec: &mut impl Executor,
        fdid: Fdid,
        commands: &[pcipool_pool::Command],
        now: Millis,
    ) -> Result<(), ControlError> {
        for c in commands {
            if let pcipool_pool::Command::StartReturn {
                leases, workflow, ..
            } = c
            {
                for l in leases {
                    let ctx = self.context(fdid, l)?;
                    let mut journal = Journal::new(
                        workflow.0,
                        WorkflowKind::Return,
                        fdid.to_string(),
                        ctx,
                        self.fabric.attachment,
                    );
                    let existing = self.store.workflow(workflow.0)?.map(|v| v.version);
                    self.save(&journal, existing, now)?;
                    self.run(exec, &mut journal, now)?;
                }
            }
        }
        Ok(())
    }

    /// Renews a lease.
    ///
    /// # Errors
    /// Unknown lease or a stale epoch.
    pub fn heartbeat(&self, lease: LeaseId, epoch: Epoch, now: Millis) -> Result<(), ControlError> {
        let (fdid, _) = self.find_lease(lease)?;
        self.transition(fdid, &Event::Heartbeat { lease, epoch }, "agent", now)
            .map(|_| ())
    }

    /// Renews `lease` for its tenant (None = operator): how an application keeps a shared-model lease
    /// alive (its host's agent carries only what its kernel holds). Nothing is written while more than
    /// half the lease is left, so frequent renewals cost nothing.
    ///
    /// # Errors
    /// Unknown lease, another tenant's lease, a stale epoch (the lease was fenced and granted anew).
    pub fn renew(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        epoch: Epoch,
        now: Millis,
    ) -> Result<(), ControlError> {
        let (fdid, held) = self.lease_of(lease, tenant)?;
        if held.epoch == epoch && held.expires_at.saturating_sub(now) > held.ttl / 2 {
            return Ok(());
        }
        self.transition(fdid, &Event::Heartbeat { lease, epoch }, actor, now)
            .map(|_| ())
    }

    /// What a borrower's agent carries according to the store: the step context of every lease its
    /// kernel holds (lent devices and VFs; shared-model leases are the applications' to keep alive), so
    /// a restarted agent picks up heartbeating (and, later, tearing down) what its host still has.
    ///
    /// # Errors
    /// Store errors.
    pub fn borrowed_by(&self, borrower: NodeId) -> Result<Vec<StepContext>, ControlError> {
        let mut out = Vec::new();
        for (fdid, lease, _) in self.leases()? {
            if lease.borrower == borrower && lease.model != AccessModel::Shared {
                out.push(self.context(fdid, &lease)?);
            }
        }
        Ok(out)
    }

    /// Renews the leases a borrower's agent still carries. Returns the leases renewed and those refused
    /// (unknown, fenced, stale epoch, or held by another host): the agent must tear those down.
    ///
    /// # Errors
    /// Store errors.
    pub fn borrower_heartbeat(
        &self,
        borrower: NodeId,
        beats: &[(LeaseId, Epoch)],
        now: Millis,
    ) -> Result<(Vec<LeaseId>, Vec<LeaseId>), ControlError> {
        let leases = self.leases()?;
        let (mut renewed, mut refused) = (Vec::new(), Vec::new());
        for &(id, epoch) in beats {
            let held = leases
                .iter()
                .find(|(_, l, _)| l.id == id && l.borrower == borrower);
            let ok = match held {
                // More than half the lease left: alive, and nothing to write (a 1 s heartbeat would
                // otherwise add an audit record per lease per second).
                Some((_, l, _))
                    if l.epoch == epoch && l.expires_at.saturating_sub(now) > l.ttl / 2 =>
                {
                    true
                }
                Some((fdid, _, _)) => match self.transition(
                    *fdid,
                    &Event::Heartbeat { lease: id, epoch },
                    "agent",
                    now,
                ) {
                    Ok(_) => true,
                    Err(ControlError::Store(e)) => return Err(ControlError::Store(e)),
                    Err(_) => false,
                },
                None => false,
            };
            if ok {
                renewed.push(id);
            } else {
                refused.push(id);
            }
        }
        Ok((renewed, refused))
    }

    /// A lender stopped answering: every device it lends becomes `Lost` and its borrowers are told.
    /// Returns how many devices changed.
    ///
    /// # Errors
    /// Store errors.
    pub fn lender_lost(&self, lender: NodeId, now: Millis) -> Result<usize, ControlError> {
        let mut changed = 0;
        for row in self.store.devices()? {
            let fdid = row.value.info.fdid;
            if fdid.node != lender || matches!(row.value.state, DeviceState::Lost { .. }) {
                continue;
            }
            match self.transition(fdid, &Event::LenderLost, "controller", now) {
                Ok(_) => changed += 1,
                Err(ControlError::Store(e)) => return Err(ControlError::Store(e)),
                Err(_) => {}
            }
        }
        Ok(changed)
    }

    /// A lost lender answers again: idle devices return to the pool, leases that were active when it
    /// vanished are fenced and returned (the borrower may have lost its mappings with the lender).
    /// Returns how many devices changed.
    ///
    /// # Errors
    /// Store errors.
    pub fn lender_back(
        &self,
        exec: &mut impl Executor,
        lender: NodeId,
        now: Millis,
    ) -> Result<usize, ControlError> {
        let mut changed = 0;
        for row in self.store.devices()? {
            let fdid = row.value.info.fdid;
            if fdid.node != lender || !matches!(row.value.state, DeviceState::Lost { .. }) {
                continue;
            }
            let workflow = WorkflowId(self.store.next("workflow")?);
            match self.transition(fdid, &Event::LenderBack { workflow }, "controller", now) {
                Ok((_, commands)) => {
                    changed += 1;
                    self.run_returns(exec, fdid, &commands, now)?;
                }
                Err(ControlError::Store(e)) => return Err(ControlError::Store(e)),
                Err(_) => {}
            }
        }
        Ok(changed)
    }

    /// Expires leases whose time is up and runs their returns.
    ///
    /// # Errors
    /// Store errors.
    pub fn tick(&self, exec: &mut impl Executor, now: Millis) -> Result<usize, ControlError> {
        let mut expired = 0;
        for row in self.store.devices()? {
            let due = row.value.state.leases().iter().any(|l| l.expires_at <= now);
            if !due {
                continue;
            }
            let workflow = self.store.next("workflow")?;
            if let Ok((_, commands)) = self.transition(
                row.value.info.fdid,
                &Event::Tick {
                    workflow: WorkflowId(workflow),
                },
                "controller",
                now,
            ) {
                expired += 1;
                self.run_returns(exec, row.value.info.fdid, &commands, now)?;
            }
        }
        Ok(expired)
    }

    /// Resumes every unfinished workflow from its journal (after a controller restart).
    ///
    /// # Errors
    /// Store errors or unreadable journals.
    pub fn resume(&self, exec: &mut impl Executor, now: Millis) -> Result<usize, ControlError> {
        let ids = self.store.unfinished_workflows()?;
        for id in &ids {
            let body = self
                .store
                .workflow(*id)?
                .ok_or(ControlError::Journal(*id))?;
            let mut journal: Journal =
                serde_json::from_str(&body.value).map_err(|_| ControlError::Journal(*id))?;
            self.run(exec, &mut journal, now)?;
        }
        // A crash can fall between two writes: after the journal's last step but before the device's
        // transition, or after the transition but before the journal's first save. Close both gaps.
        for row in self.store.devices()? {
            let fdid = row.value.info.fdid;
            let (kind, workflow, leases) = match &row.value.state {
                DeviceState::Lending { lease, workflow } => {
                    (WorkflowKind::Lend, *workflow, vec![lease.clone()])
                }
                DeviceState::Returning {
                    leases, workflow, ..
                } => (WorkflowKind::Return, *workflow, leases.clone()),
                _ => continue,
            };
            match self.store.workflow(workflow.0)? {
                Some(body) => {
                    let journal: Journal = serde_json::from_str(&body.value)
                        .map_err(|_| ControlError::Journal(workflow.0))?;
                    if journal.outcome.is_some() {
                        self.finish(&journal, now)?;
                    }
                }
                None => {
                    for lease in &leases {
                        let ctx = self.context(fdid, lease)?;
                        let mut journal = Journal::new(
                            workflow.0,
                            kind,
                            fdid.to_string(),
                            ctx,
                            self.fabric.attachment,
                        );
                        let existing = self.store.workflow(workflow.0)?.map(|v| v.version);
                        self.save(&journal, existing, now)?;
                        self.run(exec, &mut journal, now)?;
                    }
                }
            }
        }
        Ok(ids.len())
    }

    /// Checks every lent device against the hardware after a restart: a lease whose borrower can no
    /// longer reach its device (the lab was restarted, a host rebooted) is fenced and returned, so the store
    /// never claims a lease the fabric does not carry. Returns how many were fenced.
    ///
    /// # Errors
    /// Store errors.
    pub fn reconcile(&self, exec: &mut impl Executor, now: Millis) -> Result<usize, ControlError> {
        let mut fenced = 0;
        for row in self.store.devices()? {
            let DeviceState::Lent { lease } = &row.value.state else {
                continue;
            };
            let fdid = row.value.info.fdid;
            let ctx = self.context(fdid, lease)?;
            if exec
                .run(pcipool_backend::Step::BorrowerVerify, &ctx)
                .is_ok()
            {
                continue;
            }
            let workflow = self.store.next("workflow")?;
            let (_, commands) = self.transition(
                fdid,
                &Event::Fence {
                    workflow: WorkflowId(workflow),
                },
                "controller",
                now,
            )?;
            self.run_returns(exec, fdid, &commands, now)?;
            fenced += 1;
        }
        Ok(fenced)
    }

    /// Applies an operator event to a device (drain, undrain, clear a quarantine).
    ///
    /// # Errors
    /// Illegal in the device's state, unknown device, conflicts.
    pub fn operate(
        &self,
        fdid: Fdid,
        event: &Event,
        actor: &str,
        now: Millis,
    ) -> Result<&'static str, ControlError> {
        let result = self
            .transition(fdid, event, actor, now)
            .map(|(s, _)| s.name());
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
