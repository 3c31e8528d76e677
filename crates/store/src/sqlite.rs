//! The SQLite store: one file, WAL journal, `BEGIN IMMEDIATE` transactions so writers serialise, and
//! `user_version` schema migrations.
//!
//! Durability with group commit: the connection commits with `synchronous = NORMAL` (in WAL mode a commit
//! then reaches the OS, so a killed process loses nothing, and the file stays consistent on power loss),
//! and every durable write method returns only after the WAL file has been flushed to disk past its
//! commit. Callers that commit while a flush is running wait for the next one, which covers all of them:
//! one `fdatasync` serves every concurrent request instead of one each. SQLite itself syncs the WAL
//! before a checkpoint and the database file after it, so commits a checkpoint moved out of the WAL are
//! durable too. Step progress (`put_workflow_progress`) skips the flush: steps are idempotent and rerun.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use pcipool_fabric::Fdid;
use pcipool_pool::{AuditChain, AuditEntry, AuditRecord};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{DeviceRow, Store, StoreError, Versioned, WorkflowWrite};

/// Migrations, applied in order; `user_version` counts how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE devices (
        fdid TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        body TEXT NOT NULL
     );
     CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL,
        before TEXT NOT NULL,
        after TEXT NOT NULL,
        result TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     );",
    "CREATE TABLE workflows (
        id INTEGER PRIMARY KEY,
        version INTEGER NOT NULL,
        finished INTEGER NOT NULL,
        body TEXT NOT NULL
     );
     CREATE INDEX workflows_unfinished ON workflows (finished);",
    "CREATE TABLE agents (
        node TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );",
];

/// SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The WAL file, flushed by the group commit.
    wal: PathBuf,
    /// Commits made (counted under the connection lock, so the count follows commit order).
    committed: AtomicU64,
    flush: Mutex<Flush>,
    flushed: Condvar,
    /// WAL flushes done (for the group-commit ratio benchmarks print).
    flushes: AtomicU64,
    /// Every device row as last committed, loaded on first read and updated by each device write under the
    /// connection lock (this process is the store's only writer: the controller). Spares placement and
    /// lease lookups a JSON decode of every row on every request.
    rows: Mutex<Option<std::collections::BTreeMap<Fdid, Versioned<DeviceRow>>>>,
}

type Rows = std::collections::BTreeMap<Fdid, Versioned<DeviceRow>>;

/// Group-commit state.
#[derive(Debug, Default)]
struct Flush {
    /// Every commit up to this count is on disk.
    durable: u64,
    /// A flush is running (its caller is the leader; the others wait for it).
    running: bool,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    entries: &[AuditEntry<'_>],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let last = tx
        .prepare_cached(
            "SELECT seq, at, actor, target, action, before, after, result, prev_hash, hash
             FROM audit ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([], row_to_record)
        .optional()?;
    let mut chain = AuditChain::resume(last.as_ref());
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, target, action, before, after, result, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for e in entries {
        let r = chain.append(e);
        insert.execute(params![
            to_i64(r.seq),
            to_i64(r.at),
            r.actor,
            r.target,
            r.action,
            r.before,
            r.after,
            r.result,
            r.prev_hash,
            r.hash
        ])?;
    }
    Ok(())
}

/// Writes a workflow journal with CAS on its version, and its audit entries, in one transaction.
fn write_workflow(
    c: &mut Connection,
    id: u64,
    expected: Option<u64>,
    body: &str,
    finished: bool,
    audit: &[AuditEntry<'_>],
) -> Result<u64, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<i64> = tx
        .prepare_cached("SELECT version FROM workflows WHERE id = ?1")?
        .query_row([to_i64(id)], |r| r.get(0))
        .optional()?;
    let found = found.map(to_u64);
    if found != expected {
        return Err(StoreError::Conflict {
            key: format!("workflow {id}"),
            expected,
            found,
        });
    }
    let next = expected.map_or(1, |v| v + 1);
    tx.prepare_cached("INSERT INTO workflows (id, version, finished, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET version = excluded.version, finished = excluded.finished, body = excluded.body")?.execute(
        params![to_i64(id), to_i64(next), i64::from(finished), body],
    )?;
    append_audit(&tx, audit)?;
    tx.commit()?;
    Ok(next)
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: to_u64(row.get(0)?),
        at: to_u64(row.get(1)?),
        actor: row.get(2)?,
        target: row.get(3)?,
        action: row.get(4)?,
        before: row.get(5)?,
        after: row.get(6)?,
        result: row.get(7)?,
        prev_hash: row.get(8)?,
        hash: row.get(9)?,
    })
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the store at `path`.
    ///
    /// # Errors
    /// Database errors, or a file from a newer pcipool.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // Exclusive: this process keeps the file lock for as long as it runs, so a second controller cannot
        // open the same store (two writers would split the pool's state), and no per-transaction file
        // locking is paid. The lock goes with the process, also when it is killed.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        let in_use = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::InUse(path.to_path_buf())
            }
            _ => StoreError::Database(e),
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(in_use)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Take the write lock now (exclusive mode keeps it): a second opener fails here, not later.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(in_use)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )?;
            tx.commit()?;
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let store = Self {
            conn: Mutex::new(conn),
            wal: PathBuf::from(wal),
            committed: AtomicU64::new(1),
            flush: Mutex::new(Flush::default()),
            flushed: Condvar::new(),
            flushes: AtomicU64::new(0),
            rows: Mutex::new(None),
        };
        // The WAL file exists from here on; make its directory entry durable once.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        }
        store.wait_durable(1)?;
        Ok(store)
    }

    /// Runs `f` on the cached device rows (loading them first if needed); call with the connection held.
    fn rows<T>(&self, c: &Connection, f: impl FnOnce(&mut Rows) -> T) -> Result<T, StoreError> {
        let mut cache = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let loaded = match cache.take() {
            Some(rows) => rows,
            None => {
                let mut stmt = c.prepare_cached("SELECT fdid, version, body FROM devices")?;
                let raw: Vec<(String, i64, String)> = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let mut loaded = Rows::new();
                for (k, v, b) in &raw {
                    let row = decode(k, *v, b)?;
                    loaded.insert(row.value.info.fdid, row);
                }
                loaded
            }
        };
        Ok(f(cache.insert(loaded)))
    }

    /// (durable commits, WAL flushes) since the store was opened: their ratio is how many commits each
    /// flush served.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.committed.load(Ordering::SeqCst).saturating_sub(1),
            self.flushes.load(Ordering::Relaxed),
        )
    }

    /// Runs a write and returns once it is on disk (group commit, see the module documentation).
    fn durable<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (value, seq) = self.with(|c| {
            let value = f(c)?;
            Ok((value, self.committed.fetch_add(1, Ordering::SeqCst) + 1))
        })?;
        self.wait_durable(seq)?;
        Ok(value)
    }

    /// Waits until commit number `seq` is on disk, flushing the WAL when no one else is.
    fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        let lock = || {
            self.flush
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let mut state = lock();
        loop {
            if state.durable >= seq {
                return Ok(());
            }
            if state.running {
                state = self
                    .flushed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            state.running = true;
            // Every commit counted so far has been written to the WAL: one flush covers them all.
            let target = self.committed.load(Ordering::SeqCst);
            drop(state);
            let result = match std::fs::File::open(&self.wal) {
                Ok(f) => f.sync_data(),
                // No WAL file: a checkpoint moved everything into the (synced) database file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            self.flushes.fetch_add(1, Ordering::Relaxed);
            state = lock();
            state.running = false;
            if result.is_ok() {
                state.durable = state.durable.max(target);
            }
            self.flushed.notify_all();
            result?;
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A poisoned lock means a panic mid-call; the connection itself is still consistent (SQLite
        // rolled the transaction back), so keep serving.
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn)
    }

    /// Bulk-loads devices and audit records in one transaction (benchmarks and imports): the audit chain is
    /// extended exactly as individual writes would extend it.
    ///
    /// # Errors
    /// Database errors.
    pub fn bulk_load(
        &self,
        devices: &[(Fdid, DeviceRow)],
        audit: &[AuditEntry<'_>],
    ) -> Result<(), StoreError> {
        self.durable(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO devices (fdid, version, body) VALUES (?1, 1, ?2)",
                )?;
                for (fdid, row) in devices {
                    let body =
                        serde_json::to_string(row).map_err(|source| StoreError::Corrupt {
                            key: fdid.to_string(),
                            source,
                        })?;
                    insert.execute(params![fdid.to_string(), body])?;
                }
            }
            append_audit(&tx, audit)?;
            tx.commit()?;
            *self
                .rows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            Ok(())
        })
    }

    /// The last audit record (what a restarting controller needs to continue the chain).
    ///
    /// # Errors
    /// Database errors.
    pub fn last_audit(&self) -> Result<Option<AuditRecord>, StoreError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT seq, at, actor, target, action, before, after, result, prev_hash, hash
                 FROM audit ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([], row_to_record)
            .optional()?)
        })
    }
}

fn decode(fdid: &str, version: i64, body: &str) -> Result<Versioned<DeviceRow>, StoreError> {
    let value = serde_json::from_str(body).map_err(|source| StoreError::Corrupt {
        key: fdid.to_owned(),
        source,
    })?;
    Ok(Versioned {
        version: to_u64(version),
        value,
    })
}

impl Store for SqliteStore {
    fn device(&self, fdid: Fdid) -> Result<Option<Versioned<DeviceRow>>, StoreError> {
        self.with(|c| self.rows(c, |rows| rows.get(&fdid).cloned()))
    }

    fn devices(&self) -> Result<Vec<Versioned<DeviceRow>>, StoreError> {
        self.with(|c| self.rows(c, |rows| rows.values().cloned().collect()))
    }

    fn device_of_lease(
        &self,
        lease: pcipool_fabric::LeaseId,
    ) -> Result<Option<Versioned<DeviceRow>>, StoreError> {
        // Scan the cache in place: only the one row found is copied.
        self.with(|c| {
            self.rows(c, |rows| {
                rows.values()
                    .find(|d| d.value.state.leases().iter().any(|l| l.id == lease))
                    .cloned()
            })
        })
    }

    fn put_device(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        let key = fdid.to_string();
        let body = serde_json::to_string(row).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?;
        self.durable(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<i64> = tx
                .prepare_cached("SELECT version FROM devices WHERE fdid = ?1")?
                .query_row([&key], |r| r.get(0))
                .optional()?;
            let found = found.map(to_u64);
            if found != expected {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    found,
                });
            }
            let next = expected.map_or(1, |v| v + 1);
            tx.prepare_cached(
                "INSERT INTO devices (fdid, version, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(fdid) DO UPDATE SET version = excluded.version, body = excluded.body",
            )?
            .execute(params![key, to_i64(next), body])?;
            append_audit(&tx, audit)?;
            tx.commit()?;
            self.rows(c, |rows| {
                rows.insert(
                    fdid,
                    Versioned {
                        version: next,
                        value: row.clone(),
                    },
                )
            })?;
            Ok(next)
        })
    }

    fn put_device_and_workflow(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
        workflow: WorkflowWrite<'_>,
    ) -> Result<(u64, u64), StoreError> {
        let key = fdid.to_string();
        let body = serde_json::to_string(row).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?;
        self.durable(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<i64> = tx
                .prepare_cached("SELECT version FROM devices WHERE fdid = ?1")?.query_row( [&key], |r| r.get(0))
                .optional()?;
            let found = found.map(to_u64);
            if found != expected {
                return Err(StoreError::Conflict { key, expected, found });
            }
            let wf_found: Option<i64> = tx
                .prepare_cached("SELECT version FROM workflows WHERE id = ?1")?.query_row( [to_i64(workflow.id)], |r| r.get(0))
                .optional()?;
            let wf_found = wf_found.map(to_u64);
            if wf_found != workflow.expected {
                return Err(StoreError::Conflict {
                    key: format!("workflow {}", workflow.id),
                    expected: workflow.expected,
                    found: wf_found,
                });
            }
            let next = expected.map_or(1, |v| v + 1);
            let wf_next = workflow.expected.map_or(1, |v| v + 1);
            tx.prepare_cached("INSERT INTO devices (fdid, version, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(fdid) DO UPDATE SET version = excluded.version, body = excluded.body")?.execute(
                params![key, to_i64(next), body],
            )?;
            tx.prepare_cached("INSERT INTO workflows (id, version, finished, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET version = excluded.version, finished = excluded.finished, body = excluded.body")?.execute(
                params![to_i64(workflow.id), to_i64(wf_next), i64::from(workflow.finished), workflow.body],
            )?;
            append_audit(&tx, audit)?;
            tx.commit()?;
            self.rows(c, |rows| {
                rows.insert(
                    fdid,
                    Versioned {
                        version: next,
                        value: row.clone(),
                    },
                )
            })?;
            Ok((next, wf_next))
        })
    }

    // Counters are committed without waiting for the disk: a number is only handed out through a later
    // durable write (an assignment, a journal), whose flush covers the counter's commit before it.
    fn next(&self, counter: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
                 ON CONFLICT(name) DO UPDATE SET value = value + 1",
            )?
            .execute([counter])?;
            let v: i64 = tx
                .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
                .query_row([counter], |r| r.get(0))?;
            tx.commit()?;
            Ok(to_u64(v))
        })
    }

    fn audit(&self, entries: &[AuditEntry<'_>]) -> Result<(), StoreError> {
        self.durable(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            append_audit(&tx, entries)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn workflow(&self, id: u64) -> Result<Option<Versioned<String>>, StoreError> {
        self.with(|c| {
            let row: Option<(i64, String)> = c
                .prepare_cached("SELECT version, body FROM workflows WHERE id = ?1")?
                .query_row([to_i64(id)], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.map(|(v, body)| Versioned {
                version: to_u64(v),
                value: body,
            }))
        })
    }

    fn put_workflow(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
        finished: bool,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        self.durable(|c| write_workflow(c, id, expected, body, finished, audit))
    }

    fn put_workflow_progress(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
    ) -> Result<u64, StoreError> {
        // Committed (a killed process loses nothing) but not waited for: the next durable write flushes it.
        self.with(|c| write_workflow(c, id, expected, body, false, &[]))
    }

    fn next_many(&self, counters: &[&str]) -> Result<Vec<u64>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(counters.len());
            for counter in counters {
                tx.prepare_cached(
                    "INSERT INTO counters (name, value) VALUES (?1, 1)
                     ON CONFLICT(name) DO UPDATE SET value = value + 1",
                )?
                .execute([counter])?;
                let v: i64 = tx
                    .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
                    .query_row([counter], |r| r.get(0))?;
                out.push(to_u64(v));
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn put_agent(
        &self,
        node: pcipool_fabric::NodeId,
        body: &str,
        audit: &[AuditEntry<'_>],
    ) -> Result<(), StoreError> {
        self.durable(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO agents (node, body) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![node.to_string(), body])?;
            append_audit(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn agents(&self) -> Result<Vec<(pcipool_fabric::NodeId, String)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT node, body FROM agents ORDER BY node")?;
            let rows: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows.into_iter()
                .map(|(node, body)| {
                    serde_json::from_value(serde_json::Value::String(node.clone()))
                        .map(|n| (n, body))
                        .map_err(|source| StoreError::Corrupt {
                            key: format!("agent {node}"),
                            source,
                        })
                })
                .collect()
        })
    }

    fn unfinished_workflows(&self) -> Result<Vec<u64>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id FROM workflows WHERE finished = 0 ORDER BY id")?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u64))
                .collect::<Result<_, _>>()?;
            Ok(ids)
        })
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let n: i64 =
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at, actor, target, action, before, after, result, prev_hash, hash
                 FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![to_i64(from_seq), limit], row_to_record)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }
}
