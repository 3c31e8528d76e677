//! The SQLite store: one file, WAL journal, `synchronous = FULL` (every commit reaches the disk),
//! `BEGIN IMMEDIATE` transactions so writers serialise, and `user_version` schema migrations.

use std::path::Path;
use std::sync::Mutex;

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
        .query_row(
            "SELECT seq, at, actor, target, action, before, after, result, prev_hash, hash
             FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            row_to_record,
        )
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
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
        Ok(Self {
            conn: Mutex::new(conn),
        })
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
        self.with(|c| {
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
            Ok(())
        })
    }

    /// The last audit record (what a restarting controller needs to continue the chain).
    ///
    /// # Errors
    /// Database errors.
    pub fn last_audit(&self) -> Result<Option<AuditRecord>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT seq, at, actor, target, action, before, after, result, prev_hash, hash
                 FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                row_to_record,
            )
            .optional()?)
        })
    }

    /// Every audit record, for verification.
    ///
    /// # Errors
    /// Database errors.
    pub fn all_audit(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_records(1, usize::MAX)
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
        let key = fdid.to_string();
        self.with(|c| {
            let row: Option<(i64, String)> = c
                .query_row(
                    "SELECT version, body FROM devices WHERE fdid = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            row.map(|(v, b)| decode(&key, v, &b)).transpose()
        })
    }

    fn devices(&self) -> Result<Vec<Versioned<DeviceRow>>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT fdid, version, body FROM devices ORDER BY fdid")?;
            let rows: Vec<(String, i64, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            rows.iter().map(|(k, v, b)| decode(k, *v, b)).collect()
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<i64> = tx
                .query_row("SELECT version FROM devices WHERE fdid = ?1", [&key], |r| {
                    r.get(0)
                })
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
            tx.execute(
                "INSERT INTO devices (fdid, version, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(fdid) DO UPDATE SET version = excluded.version, body = excluded.body",
                params![key, to_i64(next), body],
            )?;
            append_audit(&tx, audit)?;
            tx.commit()?;
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<i64> = tx
                .query_row("SELECT version FROM devices WHERE fdid = ?1", [&key], |r| r.get(0))
                .optional()?;
            let found = found.map(to_u64);
            if found != expected {
                return Err(StoreError::Conflict { key, expected, found });
            }
            let wf_found: Option<i64> = tx
                .query_row("SELECT version FROM workflows WHERE id = ?1", [to_i64(workflow.id)], |r| r.get(0))
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
            tx.execute(
                "INSERT INTO devices (fdid, version, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(fdid) DO UPDATE SET version = excluded.version, body = excluded.body",
                params![key, to_i64(next), body],
            )?;
            tx.execute(
                "INSERT INTO workflows (id, version, finished, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET version = excluded.version, finished = excluded.finished, body = excluded.body",
                params![to_i64(workflow.id), to_i64(wf_next), i64::from(workflow.finished), workflow.body],
            )?;
            append_audit(&tx, audit)?;
            tx.commit()?;
            Ok((next, wf_next))
        })
    }

    fn next(&self, counter: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
                 ON CONFLICT(name) DO UPDATE SET value = value + 1",
                [counter],
            )?;
            let v: i64 = tx.query_row(
                "SELECT value FROM counters WHERE name = ?1",
                [counter],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(to_u64(v))
        })
    }

    fn audit(&self, entries: &[AuditEntry<'_>]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            append_audit(&tx, entries)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn workflow(&self, id: u64) -> Result<Option<Versioned<String>>, StoreError> {
        self.with(|c| {
            let row: Option<(i64, String)> = c
                .query_row(
                    "SELECT version, body FROM workflows WHERE id = ?1",
                    [to_i64(id)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<i64> = tx
                .query_row("SELECT version FROM workflows WHERE id = ?1", [to_i64(id)], |r| r.get(0))
                .optional()?;
            let found = found.map(to_u64);
            if found != expected {
                return Err(StoreError::Conflict { key: format!("workflow {id}"), expected, found });
            }
            let next = expected.map_or(1, |v| v + 1);
            tx.execute(
                "INSERT INTO workflows (id, version, finished, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET version = excluded.version, finished = excluded.finished, body = excluded.body",
                params![to_i64(id), to_i64(next), i64::from(finished), body],
            )?;
            append_audit(&tx, audit)?;
            tx.commit()?;
            Ok(next)
        })
    }

    fn put_workflow_progress(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
    ) -> Result<u64, StoreError> {
        // In WAL mode a NORMAL commit reaches the OS (so a killed process loses nothing) without an fsync.
        self.with(|c| {
            c.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(())
        })?;
        let result = self.put_workflow(id, expected, body, false, &[]);
        self.with(|c| {
            c.pragma_update(None, "synchronous", "FULL")?;
            Ok(())
        })?;
        result
    }

    fn next_many(&self, counters: &[&str]) -> Result<Vec<u64>, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(counters.len());
            for counter in counters {
                tx.execute(
                    "INSERT INTO counters (name, value) VALUES (?1, 1)
                     ON CONFLICT(name) DO UPDATE SET value = value + 1",
                    [counter],
                )?;
                let v: i64 = tx.query_row(
                    "SELECT value FROM counters WHERE name = ?1",
                    [counter],
                    |r| r.get(0),
                )?;
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO agents (node, body) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET body = excluded.body",
                params![node.to_string(), body],
            )?;
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
