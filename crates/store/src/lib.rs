//! Durable state of the pool: devices with their ownership state, counters (lease, workflow and epoch
//! numbers) and the audit chain.
//!
//! Every write is a compare-and-swap on the row's version, and the audit records describing the change are
//! appended in the same transaction, so a crash can never persist a transition without its audit trail
//! (or the reverse). The [`Store`] trait is shaped so an etcd implementation fits (revisions for CAS,
//! transactions, watches added later).
//!
//! # Layout
//! - [`Store`], [`DeviceRow`], [`StoreError`]: the interface.
//! - [`sqlite`]: the embedded default (one file, WAL, synchronous commits, schema migrations).
//! - [`etcd`]: the same on an etcd cluster, for control planes that outlive one machine (its
//!   `keeper` keeps the leadership's lease alive).
//! - [`mem`]: the same semantics in memory, for the whole-system simulation.
#![deny(missing_docs)]

pub mod etcd;
pub mod mem;
pub mod sqlite;

use pcipool_fabric::Fdid;
use pcipool_pool::schedule::DeviceInfo;
use pcipool_pool::{AuditEntry, AuditRecord, DeviceState};
use serde::{Deserialize, Serialize};

pub use etcd::{CallStats, EtcdStore};
pub use mem::MemStore;
pub use sqlite::SqliteStore;

/// One device as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRow {
    /// Static facts.
    pub info: DeviceInfo,
    /// Ownership state.
    pub state: DeviceState,
}

/// A row with the version its next write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Version (1 for a new row, +1 per write).
    pub version: u64,
    /// Value.
    pub value: T,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the row first.
    #[error("{key}: version conflict (expected {expected:?}, found {found:?})")]
    Conflict {
        /// The row.
        key: String,
        /// Version the caller read.
        expected: Option<u64>,
        /// Version in the store.
        found: Option<u64>,
    },
    /// A stored row does not decode (damaged file or a newer writer).
    #[error("{key}: stored value is unreadable")]
    Corrupt {
        /// The row.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The database itself failed.
    #[error("database error")]
    Database(#[from] rusqlite::Error),
    /// Another process (another controller) has the store open.
    #[error("{0}: the store is in use by another process (one controller per store)")]
    InUse(std::path::PathBuf),
    /// Flushing the store's files to disk failed: the last write may not be durable.
    #[error("flushing the store to disk")]
    Flush(#[from] std::io::Error),
    /// The etcd cluster did not answer, or answered something unexpected.
    #[error("etcd: {0}")]
    Etcd(String),
    /// Another controller leads the store (named), or this one's leadership ran out: nothing written.
    #[error("not the leader: the store is led by {0}")]
    NotLeader(String),
    /// The file was written by a newer pcipool.
    #[error("store schema version {found} is newer than this pcipool ({supported})")]
    SchemaTooNew {
        /// Found.
        found: i64,
        /// Supported.
        supported: i64,
    },
}

/// A workflow journal write that rides along with a device write (one transaction for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowWrite<'a> {
    /// Workflow id.
    pub id: u64,
    /// Version the caller read (`None` = new).
    pub expected: Option<u64>,
    /// Journal body (JSON).
    pub body: &'a str,
    /// The workflow is finished.
    pub finished: bool,
}

/// Durable pool state.
pub trait Store {
    /// One device.
    ///
    /// # Errors
    /// Database or decode errors.
    fn device(&self, fdid: Fdid) -> Result<Option<Versioned<DeviceRow>>, StoreError>;

    /// Every device, in fdid order.
    ///
    /// # Errors
    /// Database or decode errors.
    fn devices(&self) -> Result<Vec<Versioned<DeviceRow>>, StoreError>;

    /// The device holding `lease` (a release or heartbeat names only the lease).
    ///
    /// # Errors
    /// Database or decode errors.
    fn device_of_lease(
        &self,
        lease: pcipool_fabric::LeaseId,
    ) -> Result<Option<Versioned<DeviceRow>>, StoreError> {
        Ok(self
            .devices()?
            .into_iter()
            .find(|d| d.value.state.leases().iter().any(|l| l.id == lease)))
    }

    /// Writes a device if its version is still `expected` (`None` = must not exist yet), appending the
    /// audit entries in the same transaction. Returns the new version.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when someone else wrote first.
    fn put_device(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError>;

    /// Writes a device and a workflow journal atomically (both CAS-checked), with audit entries: a
    /// transition and the journal record that explains it can never be separated by a crash.
    /// Returns (device version, workflow version).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when either was written by someone else first.
    fn put_device_and_workflow(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
        workflow: WorkflowWrite<'_>,
    ) -> Result<(u64, u64), StoreError>;

    /// Allocates the next number of a named counter (lease ids, workflow ids, epochs). A running store
    /// never hands a number out twice; the allocation may become durable only with the caller's next
    /// durable write, which is where a number first leaves the controller (a power loss before it can
    /// only re-issue numbers nobody saw).
    ///
    /// # Errors
    /// Database errors.
    fn next(&self, counter: &str) -> Result<u64, StoreError>;

    /// Appends audit entries on their own (requests refused, operator actions).
    ///
    /// # Errors
    /// Database errors.
    fn audit(&self, entries: &[AuditEntry<'_>]) -> Result<(), StoreError>;

    /// One workflow's journal (JSON body) with its version.
    ///
    /// # Errors
    /// Database errors.
    fn workflow(&self, id: u64) -> Result<Option<Versioned<String>>, StoreError>;

    /// Writes a workflow journal with CAS on its version, appending audit entries in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`].
    fn put_workflow(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
        finished: bool,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError>;

    /// Like [`Store::put_workflow`] for step progress: the write must survive a crash of this process but
    /// may skip the disk flush, because steps are idempotent and rerun if a power loss drops the record.
    /// The next durable commit flushes it anyway.
    ///
    /// # Errors
    /// [`StoreError::Conflict`].
    fn put_workflow_progress(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
    ) -> Result<u64, StoreError> {
        self.put_workflow(id, expected, body, false, &[])
    }

    /// Allocates the next number of several counters in one transaction.
    ///
    /// # Errors
    /// Database errors.
    fn next_many(&self, counters: &[&str]) -> Result<Vec<u64>, StoreError> {
        counters.iter().map(|c| self.next(c)).collect()
    }

    /// Records (or replaces) how to reach a host's agent, with audit entries in the same transaction, so a
    /// restarted controller can drive unfinished workflows before the agents announce themselves again.
    ///
    /// # Errors
    /// Database errors.
    fn put_agent(
        &self,
        node: pcipool_fabric::NodeId,
        body: &str,
        audit: &[AuditEntry<'_>],
    ) -> Result<(), StoreError>;

    /// Every recorded agent (node, body), in node order.
    ///
    /// # Errors
    /// Database errors, or a row that does not decode.
    fn agents(&self) -> Result<Vec<(pcipool_fabric::NodeId, String)>, StoreError>;

    /// Ids of workflows not marked finished (what a restarted controller resumes).
    ///
    /// # Errors
    /// Database errors.
    fn unfinished_workflows(&self) -> Result<Vec<u64>, StoreError>;

    /// Audit records from `from_seq` (inclusive), at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// How long the audit chain is: its last record's sequence number (0 when empty).
    ///
    /// # Errors
    /// Database errors.
    fn audit_len(&self) -> Result<u64, StoreError>;

    /// Every audit record, for verification.
    ///
    /// # Errors
    /// Database errors.
    fn all_audit(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_records(1, usize::MAX)
    }
}
