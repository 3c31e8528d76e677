//! The store in memory: the same compare-and-swap and same-transaction audit semantics as the SQLite
//! store, without a disk. The whole-system simulation runs the real controller over it; clones share
//! the same state, so a simulated controller restart drops everything but this store and resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::{AuditChain, AuditEntry, AuditRecord};

use crate::{DeviceRow, Store, StoreError, Versioned, WorkflowWrite};

#[derive(Debug, Default)]
struct Inner {
    devices: BTreeMap<Fdid, Versioned<DeviceRow>>,
    workflows: BTreeMap<u64, Versioned<String>>,
    unfinished: BTreeSet<u64>,
    counters: BTreeMap<String, u64>,
    agents: BTreeMap<NodeId, String>,
    audit: Vec<AuditRecord>,
}

impl Inner {
    fn append(&mut self, entries: &[AuditEntry<'_>]) {
        let mut chain = AuditChain::resume(self.audit.last());
        for e in entries {
            let record = chain.append(e);
            self.audit.push(record);
        }
    }

    fn check_device(&self, fdid: Fdid, expected: Option<u64>) -> Result<u64, StoreError> {
        let found = self.devices.get(&fdid).map(|v| v.version);
        if found == expected {
            Ok(expected.map_or(1, |v| v + 1))
        } else {
            Err(StoreError::Conflict {
                key: fdid.to_string(),
                expected,
                found,
            })
        }
    }

    fn check_workflow(&self, id: u64, expected: Option<u64>) -> Result<u64, StoreError> {
        let found = self.workflows.get(&id).map(|v| v.version);
        if found == expected {
            Ok(expected.map_or(1, |v| v + 1))
        } else {
            Err(StoreError::Conflict {
                key: format!("workflow {id}"),
                expected,
                found,
            })
        }
    }

    fn write_workflow(&mut self, id: u64, version: u64, body: &str, finished: bool) {
        self.workflows.insert(
            id,
            Versioned {
                version,
                value: body.to_owned(),
            },
        );
        if finished {
            self.unfinished.remove(&id);
        } else {
            self.unfinished.insert(id);
        }
    }
}

/// The store in memory. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct MemStore(Arc<Mutex<Inner>>);

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many audit records the chain holds.
    pub fn audit_len(&self) -> usize {
        self.inner().audit.len()
    }
}

impl Store for MemStore {
    fn device(&self, fdid: Fdid) -> Result<Option<Versioned<DeviceRow>>, StoreError> {
        Ok(self.inner().devices.get(&fdid).cloned())
    }

    fn devices(&self) -> Result<Vec<Versioned<DeviceRow>>, StoreError> {
        Ok(self.inner().devices.values().cloned().collect())
    }

    fn put_device(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        let mut inner = self.inner();
        let next = inner.check_device(fdid, expected)?;
        inner.devices.insert(
            fdid,
            Versioned {
                version: next,
                value: row.clone(),
            },
        );
        inner.append(audit);
        Ok(next)
    }

    fn put_device_and_workflow(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
        workflow: WorkflowWrite<'_>,
    ) -> Result<(u64, u64), StoreError> {
        let mut inner = self.inner();
        let next = inner.check_device(fdid, expected)?;
        let wf_next = inner.check_workflow(workflow.id, workflow.expected)?;
        inner.devices.insert(
            fdid,
            Versioned {
                version: next,
                value: row.clone(),
            },
        );
        inner.write_workflow(workflow.id, wf_next, workflow.body, workflow.finished);
        inner.append(audit);
        Ok((next, wf_next))
    }

    fn next(&self, counter: &str) -> Result<u64, StoreError> {
        let mut inner = self.inner();
        let value = inner.counters.entry(counter.to_owned()).or_default();
        *value += 1;
        Ok(*value)
    }

    fn audit(&self, entries: &[AuditEntry<'_>]) -> Result<(), StoreError> {
        self.inner().append(entries);
        Ok(())
    }

    fn workflow(&self, id: u64) -> Result<Option<Versioned<String>>, StoreError> {
        Ok(self.inner().workflows.get(&id).cloned())
    }

    fn put_workflow(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
        finished: bool,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        let mut inner = self.inner();
        let next = inner.check_workflow(id, expected)?;
        inner.write_workflow(id, next, body, finished);
        inner.append(audit);
        Ok(next)
    }

    fn put_agent(
        &self,
        node: NodeId,
        body: &str,
        audit: &[AuditEntry<'_>],
    ) -> Result<(), StoreError> {
        let mut inner = self.inner();
        inner.agents.insert(node, body.to_owned());
        inner.append(audit);
        Ok(())
    }

    fn agents(&self) -> Result<Vec<(NodeId, String)>, StoreError> {
        Ok(self
            .inner()
            .agents
            .iter()
            .map(|(n, b)| (*n, b.clone()))
            .collect())
    }

    fn unfinished_workflows(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.inner().unfinished.iter().copied().collect())
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.inner().audit.len() as u64)
    }

    fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let inner = self.inner();
        let start = usize::try_from(from_seq.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(inner
            .audit
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }
}
