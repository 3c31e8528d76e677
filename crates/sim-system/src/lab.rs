//! The hardware under the simulated controller: the simulated fabric and hosts, shared between the
//! controller's steps and the workload's fault verbs, with the agents that can die and the mutants that
//! prove the invariants bite.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pcipool_agent::Local;
use pcipool_backend::{
    Executor, SharedExecutor, Step, StepContext, StepError, StepErrorKind, StepOutput,
};
use pcipool_fabric::NodeId;
use pcipool_pool::{DeviceState, Lease};
use pcipool_sim::Sim;
use pcipool_store::{DeviceRow, MemStore, Store, StoreError, Versioned, WorkflowWrite};

/// A bug planted on purpose: a run with one must fail, or the invariants prove nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutant {
    /// None: the system as built.
    #[default]
    None,
    /// The fabric's unmap reports success and unmaps nothing, so a reset runs while the borrower still
    /// reaches the device.
    SkipUnmap,
    /// The store drops the write that puts a device into quarantine (and says it succeeded).
    DropQuarantine,
}

impl Mutant {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::SkipUnmap => "skip-unmap",
            Self::DropQuarantine => "drop-quarantine",
        }
    }
}

impl std::fmt::Display for Mutant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mutant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "skip-unmap" => Ok(Self::SkipUnmap),
            "drop-quarantine" => Ok(Self::DropQuarantine),
            other => Err(format!(
                "unknown mutant '{other}' (none, skip-unmap, drop-quarantine)"
            )),
        }
    }
}

/// The simulated hardware, shared: the controller's executor and the workload hold clones.
#[derive(Debug, Clone)]
pub struct Lab {
    sim: Arc<Mutex<Sim>>,
    /// Hosts whose agent is dead (the host may run on): their steps cannot run.
    dead_agents: Arc<Mutex<BTreeSet<NodeId>>>,
    mutant: Mutant,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lab {
    /// The lab over `sim`.
    pub fn new(sim: Sim, mutant: Mutant) -> Self {
        Self {
            sim: Arc::new(Mutex::new(sim)),
            dead_agents: Arc::new(Mutex::new(BTreeSet::new())),
            mutant,
        }
    }

    /// The simulator, locked.
    pub fn sim(&self) -> MutexGuard<'_, Sim> {
        guard(&self.sim)
    }

    /// The agent of `node` dies (or comes back).
    pub fn set_agent_dead(&self, node: NodeId, dead: bool) {
        let mut dead_agents = guard(&self.dead_agents);
        if dead {
            dead_agents.insert(node);
        } else {
            dead_agents.remove(&node);
        }
    }

    /// Whether the agent of `node` is dead.
    pub fn agent_dead(&self, node: NodeId) -> bool {
        guard(&self.dead_agents).contains(&node)
    }
}

impl SharedExecutor for Lab {
    fn run_step(&self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        if let Some(node) = step.node(ctx)
            && self.agent_dead(node)
        {
            return Err(StepError::new(
                StepErrorKind::HostDown,
                format!("the agent of {node} is not answering"),
            ));
        }
        if self.mutant == Mutant::SkipUnmap && step == Step::Unmap {
            return Ok(StepOutput::Done);
        }
        Local(&mut *self.sim()).run(step, ctx)
    }
}

/// The store under the controller, with the [`Mutant::DropQuarantine`] bug when asked for.
#[derive(Debug, Clone)]
pub struct LabStore {
    inner: MemStore,
    mutant: Mutant,
}

impl LabStore {
    /// Over `inner`.
    pub fn new(inner: MemStore, mutant: Mutant) -> Self {
        Self { inner, mutant }
    }

    /// The store itself, for the checks.
    pub fn mem(&self) -> &MemStore {
        &self.inner
    }

    fn dropped(&self, row: &DeviceRow) -> bool {
        self.mutant == Mutant::DropQuarantine
            && matches!(row.state, DeviceState::Quarantined { .. })
    }
}

impl Store for LabStore {
    fn device(
        &self,
        fdid: pcipool_fabric::Fdid,
    ) -> Result<Option<Versioned<DeviceRow>>, StoreError> {
        self.inner.device(fdid)
    }
    fn devices(&self) -> Result<Vec<Versioned<DeviceRow>>, StoreError> {
        self.inner.devices()
    }
    fn put_device(
        &self,
        fdid: pcipool_fabric::Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[pcipool_pool::AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        if self.dropped(row) {
            return Ok(expected.map_or(1, |v| v + 1));
        }
        self.inner.put_device(fdid, expected, row, audit)
    }
    fn put_device_and_workflow(
        &self,
        fdid: pcipool_fabric::Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[pcipool_pool::AuditEntry<'_>],
        workflow: WorkflowWrite<'_>,
    ) -> Result<(u64, u64), StoreError> {
        if self.dropped(row) {
            return Ok((
                expected.map_or(1, |v| v + 1),
                workflow.expected.map_or(1, |v| v + 1),
            ));
        }
        self.inner
            .put_device_and_workflow(fdid, expected, row, audit, workflow)
    }
    fn next(&self, counter: &str) -> Result<u64, StoreError> {
        self.inner.next(counter)
    }
    fn audit(&self, entries: &[pcipool_pool::AuditEntry<'_>]) -> Result<(), StoreError> {
        self.inner.audit(entries)
    }
    fn workflow(&self, id: u64) -> Result<Option<Versioned<String>>, StoreError> {
        self.inner.workflow(id)
    }
    fn put_workflow(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
        finished: bool,
        audit: &[pcipool_pool::AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        self.inner.put_workflow(id, expected, body, finished, audit)
    }
    fn put_agent(
        &self,
        node: NodeId,
        body: &str,
        audit: &[pcipool_pool::AuditEntry<'_>],
    ) -> Result<(), StoreError> {
        self.inner.put_agent(node, body, audit)
    }
    fn agents(&self) -> Result<Vec<(NodeId, String)>, StoreError> {
        self.inner.agents()
    }
    fn unfinished_workflows(&self) -> Result<Vec<u64>, StoreError> {
        self.inner.unfinished_workflows()
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        Store::audit_len(&self.inner)
    }

    fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<pcipool_pool::AuditRecord>, StoreError> {
        self.inner.audit_records(from_seq, limit)
    }
}

/// Every lease a device's state holds.
pub fn leases_of(state: &DeviceState) -> Vec<Lease> {
    state.leases().into_iter().cloned().collect()
}
