//! The pool's state in etcd (v3), for control planes that must outlive one machine. It speaks etcd's
//! own HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, base64 keys and values), which etcd serves on
//! its client port, so no gRPC stack or protobuf compiler is needed to build pcipool.
//!
//! Every write is one etcd transaction that compares what it read: a device's or a workflow's key
//! `version` (1 when created, +1 per put, the same numbering as [`crate::Versioned`]) and, when audit
//! records ride along, the `mod_revision` of the chain's head. So the chain stays a chain under
//! concurrent writers: a writer whose head moved reads the new head and tries again, while a writer
//! whose row moved gets [`StoreError::Conflict`].
//!
//! Keys, under a prefix (default `/pcipool/`):
//! - `devices/FDID`: a device row (JSON);
//! - `workflows/ID` (20 digits): a workflow journal; `unfinished/ID` while it is not finished;
//! - `counters/NAME`: a counter, whose number is the key's version;
//! - `agents/NODE`: how to reach a host's agent;
//! - `audit/SEQ` (20 digits): an audit record (JSON, with its hashes); `audit-head`: the last one;
//! - `leader`: the controller that may write, on an etcd lease it keeps alive ([`EtcdStore::lead`]).
//!
//! Leadership fences every write: once a store leads, each of its transactions also compares the
//! `leader` key's creation revision with its own, so a controller whose lease ran out (paused, cut
//! off) cannot write any more, even if it does not know yet: its write fails with
//! [`StoreError::NotLeader`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::{AuditChain, AuditEntry, AuditRecord};
use serde_json::{Value, json};

use crate::{DeviceRow, Store, StoreError, Versioned, WorkflowWrite};

mod keeper;
use keeper::{KeepAlive, Keeper};

/// How long one request to a member may take.
const REQUEST: Duration = Duration::from_secs(5);
/// How often a write retries after another writer moved the audit chain's head under it.
const HEAD_RETRIES: usize = 1000;

/// The pool's state in an etcd cluster.
#[derive(Debug)]
pub struct EtcdStore {
    /// Client URLs of the members (`http://HOST:PORT`).
    endpoints: Vec<String>,
    /// The member that answered last: asked first next time.
    current: AtomicUsize,
    prefix: String,
    http: ureq::Agent,
    /// While this store leads: the `leader` key's creation revision every write compares.
    fence: AtomicU64,
    /// The thread keeping the leadership's lease alive.
    keeper: Mutex<Option<Keeper>>,
    /// The fault tests' mutant: writes no longer compare the leadership.
    unfenced: AtomicBool,
    /// Requests made and their summed time in microseconds, reads and transactions apart (for
    /// `pcipool bench api --store etcd`).
    calls: [AtomicU64; 2],
    call_us: [AtomicU64; 2],
    /// The audit chain's head as this store last wrote it (its `mod_revision` and record), so the
    /// next append need not read it first; a write whose compare fails reads it again.
    head: Mutex<Option<(u64, AuditRecord)>>,
}

/// What an etcd store asked of etcd, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Reads (`range`) made.
    pub reads: u64,
    /// Their summed time.
    pub read_time: Duration,
    /// Transactions and lease calls made.
    pub writes: u64,
    /// Their summed time.
    pub write_time: Duration,
}

/// One key as etcd returns it.
#[derive(Debug, Clone)]
struct Kv {
    key: String,
    value: String,
    version: u64,
    mod_revision: u64,
    create_revision: u64,
}

/// A comparison of a transaction.
fn compare(key: &str, target: &str, value: u64) -> Value {
    let field = match target {
        "VERSION" => "version",
        "CREATE" => "create_revision",
        _ => "mod_revision",
    };
    json!({ "key": B64.encode(key), "target": target, "result": "EQUAL", field: value.to_string() })
}

fn put(key: &str, value: &str) -> Value {
    json!({ "request_put": { "key": B64.encode(key), "value": B64.encode(value) } })
}

fn delete(key: &str) -> Value {
    json!({ "request_delete_range": { "key": B64.encode(key) } })
}

fn get(key: &str) -> Value {
    json!({ "request_range": { "key": B64.encode(key) } })
}

/// The smallest key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

fn decode_text(key: &str, b64: &Value) -> Result<String, StoreError> {
    let bytes = B64
        .decode(b64.as_str().unwrap_or_default())
        .map_err(|e| StoreError::Etcd(format!("{key}: not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|e| StoreError::Etcd(format!("{key}: not UTF-8: {e}")))
}

fn kvs(answer: &Value) -> Result<Vec<Kv>, StoreError> {
    answer["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let key = decode_text("a key", &kv["key"])?;
            Ok(Kv {
                value: decode_text(&key, &kv["value"])?,
                version: number(&kv["version"]),
                mod_revision: number(&kv["mod_revision"]),
                create_revision: number(&kv["create_revision"]),
                key,
            })
        })
        .collect()
}

fn corrupt(key: &str, source: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        source,
    }
}

/// What a transaction that also appends audit records needs: the head it read, the records, the
/// compare and the writes for them.
struct Appended {
    compare: Option<Value>,
    writes: Vec<Value>,
    /// The chain's new head once written.
    newest: Option<AuditRecord>,
}

impl EtcdStore {
    /// A store on the cluster whose members answer at `endpoints` (`HOST:PORT` or `http://HOST:PORT`),
    /// with every key under `prefix`. Checks that a member answers.
    ///
    /// # Errors
    /// [`StoreError::Etcd`] when no member answers.
    pub fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Etcd("no etcd endpoint given".into()));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let e = e.trim_end_matches('/');
                if e.starts_with("http://") || e.starts_with("https://") {
                    e.to_owned()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST))
            .build()
            .into();
        let store = Self {
            endpoints,
            current: AtomicUsize::new(0),
            prefix: format!("/{}/", prefix.trim_matches('/')),
            http,
            fence: AtomicU64::new(0),
            keeper: Mutex::new(None),
            unfenced: AtomicBool::new(false),
            calls: [AtomicU64::new(0), AtomicU64::new(0)],
            call_us: [AtomicU64::new(0), AtomicU64::new(0)],
            head: Mutex::new(None),
        };
        store.range(&store.key("audit-head"))?;
        Ok(store)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Requests made to etcd so far, and the time they took.
    pub fn call_stats(&self) -> CallStats {
        let n = |i: usize| self.calls[i].load(Ordering::Relaxed);
        let t = |i: usize| Duration::from_micros(self.call_us[i].load(Ordering::Relaxed));
        CallStats {
            reads: n(0),
            read_time: t(0),
            writes: n(1),
            write_time: t(1),
        }
    }

    /// Posts `body` to `path` on a member: the one that answered last, then the others in turn.
    fn call(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let started = Instant::now();
        let answer = self.call_members(path, body);
        let kind = usize::from(path != "/v3/kv/range");
        self.calls[kind].fetch_add(1, Ordering::Relaxed);
        self.call_us[kind].fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        answer
    }

    fn call_members(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let at = (first + i) % self.endpoints.len();
            let url = format!("{}{path}", self.endpoints[at]);
            match self.http.post(&url).send_json(body) {
                Ok(mut resp) => {
                    let ok = resp.status().is_success();
                    let answer: Value = resp
                        .body_mut()
                        .read_json()
                        .map_err(|e| StoreError::Etcd(format!("{url}: unexpected answer: {e}")))?;
                    if !ok {
                        return Err(StoreError::Etcd(format!(
                            "{url}: {}",
                            answer["error"].as_str().unwrap_or("refused")
                        )));
                    }
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        Err(StoreError::Etcd(format!(
            "no etcd member answered: {}",
            failures.join("; ")
        )))
    }

    fn range(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let answer = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }))?;
        Ok(kvs(&answer)?.into_iter().next())
    }

    /// Every key under `prefix` (after the store's own), in key order, from `from` on, at most
    /// `limit` (0: all).
    fn range_prefix(
        &self,
        prefix: &str,
        from: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Kv>, StoreError> {
        let prefix = self.key(prefix);
        let start = from.map_or_else(|| prefix.clone(), |f| self.key(f));
        let answer = self.call(
            "/v3/kv/range",
            &json!({
                "key": B64.encode(&start),
                "range_end": B64.encode(prefix_end(&prefix)),
                "limit": limit.to_string(),
            }),
        )?;
        kvs(&answer)
    }

    /// Runs a transaction that, while this store leads, also compares the leadership.
    fn fenced_txn(
        &self,
        mut compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<(bool, Value), StoreError> {
        let fence = self.fence.load(Ordering::SeqCst);
        if fence != 0 && !self.unfenced.load(Ordering::Relaxed) {
            compare.push(self::compare(&self.key("leader"), "CREATE", fence));
        }
        self.txn(compare, success, failure)
    }

    /// Fails with [`StoreError::NotLeader`] when this store led and the `leader` key (as `answer`, a
    /// failed transaction's range of it) is no longer the one it created.
    fn still_leader(&self, answer: Option<&Value>) -> Result<(), StoreError> {
        let fence = self.fence.load(Ordering::SeqCst);
        if fence == 0 {
            return Ok(());
        }
        let now = match answer {
            Some(a) => kvs(&a["response_range"])?.into_iter().next(),
            None => self.range(&self.key("leader"))?,
        };
        match now {
            Some(kv) if kv.create_revision == fence => Ok(()),
            other => Err(StoreError::NotLeader(
                other.map_or_else(|| "nobody".to_owned(), |kv| kv.value),
            )),
        }
    }

    /// Makes this store the pool's only writer: takes the `leader` key as `holder` on an etcd lease of
    /// `ttl`, kept alive by a thread of its own, and fences every later write on it.
    ///
    /// # Errors
    /// [`StoreError::NotLeader`] naming the holder when another store leads; etcd errors.
    pub fn lead(&self, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        let secs = ttl.as_secs().max(1);
        let granted = self.call("/v3/lease/grant", &json!({ "TTL": secs.to_string() }))?;
        let lease = granted["ID"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Etcd(format!("no lease granted: {granted}")))?;
        let key = self.key("leader");
        let (won, answer) = self.txn(
            vec![compare(&key, "CREATE", 0)],
            vec![
                json!({ "request_put": {
                    "key": B64.encode(&key), "value": B64.encode(holder), "lease": lease } }),
                get(&key),
            ],
            vec![get(&key)],
        )?;
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        let kv = responses
            .last()
            .map(|r| kvs(&r["response_range"]))
            .transpose()?
            .and_then(|k| k.into_iter().next());
        if !won {
            // The lease is not needed: let it go at once rather than at its expiry.
            let _revoked = self.call("/v3/lease/revoke", &json!({ "ID": lease }));
            return Err(StoreError::NotLeader(
                kv.map_or_else(|| "nobody".to_owned(), |kv| kv.value),
            ));
        }
        let fence = kv
            .map(|kv| kv.create_revision)
            .ok_or_else(|| StoreError::Etcd("the leader key was not read back".into()))?;
        self.fence.store(fence, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let keep = KeepAlive {
            endpoints: self.endpoints.clone(),
            http: self.http.clone(),
            lease: lease.clone(),
            every: Duration::from_secs(secs) / 3,
            ttl: Duration::from_secs(secs),
            stop: stop.clone(),
            lost: lost.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("etcd-lease".into())
            .spawn(move || keep.run())
            .map_err(|e| StoreError::Etcd(format!("starting the lease keeper: {e}")))?;
        *self
            .keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Keeper {
            lease,
            stop,
            lost,
            thread: Some(thread),
        });
        Ok(())
    }

    /// The mutant the fault tests must catch: from now on this store's writes do not compare the
    /// leadership, so a deposed leader's late writes go through. Never for production.
    pub fn drop_leadership_compare(&self) {
        self.unfenced.store(true, Ordering::Relaxed);
    }

    /// Whether this store still leads as far as it knows: it took the leadership, keeps its lease
    /// alive, and etcd has not said the lease is gone. (A lease can run out before the keeper hears of
    /// it; the fence on every write is what makes that safe.)
    pub fn leads(&self) -> bool {
        self.fence.load(Ordering::SeqCst) != 0
            && self
                .keeper
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_some_and(|k| !k.lost.load(Ordering::SeqCst))
    }

    /// The `leader` key's value (what its holder wrote when it took the leadership), if anyone leads.
    ///
    /// # Errors
    /// etcd errors.
    pub fn leader(&self) -> Result<Option<String>, StoreError> {
        Ok(self.range(&self.key("leader"))?.map(|kv| kv.value))
    }

    /// A value every controller of the pool shares under `shared/NAME`: the one in the store, or
    /// `make()`'s, written when there was none (the first controller's wins a race). Not fenced: a
    /// controller reads it before it leads.
    ///
    /// # Errors
    /// etcd errors.
    pub fn shared(&self, name: &str, make: impl FnOnce() -> String) -> Result<String, StoreError> {
        let key = self.key(&format!("shared/{name}"));
        if let Some(kv) = self.range(&key)? {
            return Ok(kv.value);
        }
        let (_, answer) = self.txn(
            vec![compare(&key, "CREATE", 0)],
            vec![put(&key, &make()), get(&key)],
            vec![get(&key)],
        )?;
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        responses
            .last()
            .map(|r| kvs(&r["response_range"]))
            .transpose()?
            .and_then(|k| k.into_iter().next())
            .map(|kv| kv.value)
            .ok_or_else(|| StoreError::Etcd(format!("{key} was not read back")))
    }

    /// Stops keeping the leadership's lease alive (a paused or cut-off controller, as tests make
    /// one): the lease runs out at its TTL and another store may lead; this one's writes then fail.
    pub fn stop_keeping_alive(&self) {
        let keeper = self
            .keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(keeper);
    }

    /// Runs a transaction: whether its comparisons held, and its answers.
    fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<(bool, Value), StoreError> {
        let answer = self.call(
            "/v3/kv/txn",
            &json!({ "compare": compare, "success": success, "failure": failure }),
        )?;
        Ok((answer["succeeded"].as_bool().unwrap_or(false), answer))
    }

    /// Reads the chain's head and builds the records of `entries` after it, with the compare that
    /// makes the transaction fail if another writer appended meanwhile.
    fn append(&self, entries: &[AuditEntry<'_>]) -> Result<Appended, StoreError> {
        if entries.is_empty() {
            return Ok(Appended {
                compare: None,
                writes: Vec::new(),
                newest: None,
            });
        }
        let head_key = self.key("audit-head");
        let cached = self
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (revision, last) = match cached {
            Some((revision, record)) => (Some(revision), Some(record)),
            None => match self.range(&head_key)? {
                Some(kv) => (
                    Some(kv.mod_revision),
                    Some(serde_json::from_str(&kv.value).map_err(|e| corrupt(&head_key, e))?),
                ),
                None => (None, None),
            },
        };
        let mut chain = AuditChain::resume(last.as_ref());
        let mut writes = Vec::new();
        let mut newest = None;
        for e in entries {
            let r = chain.append(e);
            let body = serde_json::to_string(&r).map_err(|e| corrupt(&head_key, e))?;
            writes.push(put(&self.key(&format!("audit/{:020}", r.seq)), &body));
            newest = Some((r, body));
        }
        let compare = match revision {
            Some(rev) => compare(&head_key, "MOD", rev),
            None => compare(&head_key, "VERSION", 0),
        };
        let newest = newest.map(|(record, body)| {
            writes.push(put(&head_key, &body));
            record
        });
        Ok(Appended {
            compare: Some(compare),
            writes,
            newest,
        })
    }

    /// Runs a write that compares `rows` (key, expected version; None = must not exist), puts
    /// `writes`, and appends `entries` to the audit chain, all in one transaction. A moved chain head
    /// is read again and the write retried; a moved row is [`StoreError::Conflict`]. Returns the rows'
    /// new versions.
    fn write(
        &self,
        rows: &[(String, Option<u64>)],
        writes: &[Value],
        entries: &[AuditEntry<'_>],
    ) -> Result<Vec<u64>, StoreError> {
        for _ in 0..HEAD_RETRIES {
            let mut appended = self.append(entries)?;
            let newest = appended.newest.take();
            let mut compares: Vec<Value> = rows
                .iter()
                .map(|(k, expected)| compare(k, "VERSION", expected.unwrap_or(0)))
                .collect();
            compares.extend(appended.compare);
            let success: Vec<Value> = writes.iter().cloned().chain(appended.writes).collect();
            let mut failure: Vec<Value> = rows.iter().map(|(k, _)| get(k)).collect();
            failure.push(get(&self.key("leader")));
            let (done, answer) = self.fenced_txn(compares, success, failure)?;
            let mut head = self
                .head
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if done {
                // Every key a transaction writes gets its revision: the head's new mod_revision.
                if let Some(record) = newest {
                    *head = Some((number(&answer["header"]["revision"]), record));
                }
                return Ok(rows.iter().map(|(_, e)| e.unwrap_or(0) + 1).collect());
            }
            // The head may have moved: read it again next time.
            *head = None;
            drop(head);
            // Which comparison failed: leadership lost, a row someone else wrote, or only the chain's
            // head.
            let responses = answer["responses"].as_array().cloned().unwrap_or_default();
            self.still_leader(responses.last())?;
            for ((key, expected), response) in rows.iter().zip(&responses) {
                let found = kvs(&response["response_range"])?
                    .first()
                    .map(|kv| kv.version);
                if found != *expected {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        found,
                    });
                }
            }
        }
        Err(StoreError::Etcd(format!(
            "the audit chain's head moved under {HEAD_RETRIES} tries in a row"
        )))
    }

    fn device_key(&self, fdid: Fdid) -> String {
        self.key(&format!("devices/{fdid}"))
    }

    fn workflow_writes(&self, w: &WorkflowWrite<'_>) -> (String, Vec<Value>) {
        let key = self.key(&format!("workflows/{:020}", w.id));
        let marker = self.key(&format!("unfinished/{:020}", w.id));
        let writes = vec![
            put(&key, w.body),
            if w.finished {
                delete(&marker)
            } else {
                put(&marker, "")
            },
        ];
        (key, writes)
    }
}

impl Drop for EtcdStore {
    /// A controller that stops leads no more: its lease is revoked, so another can lead at once
    /// instead of at the lease's expiry (a killed one's lease just runs out).
    fn drop(&mut self) {
        let keeper = self
            .keeper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(k) = keeper
            && let Err(e) = self.call("/v3/lease/revoke", &json!({ "ID": k.lease }))
        {
            tracing::warn!(error = %e, "revoking the leadership's lease; it runs out at its TTL");
        }
    }
}

fn decode_device(kv: &Kv) -> Result<Versioned<DeviceRow>, StoreError> {
    Ok(Versioned {
        version: kv.version,
        value: serde_json::from_str(&kv.value).map_err(|e| corrupt(&kv.key, e))?,
    })
}

impl Store for EtcdStore {
    fn device(&self, fdid: Fdid) -> Result<Option<Versioned<DeviceRow>>, StoreError> {
        self.range(&self.device_key(fdid))?
            .as_ref()
            .map(decode_device)
            .transpose()
    }

    fn devices(&self) -> Result<Vec<Versioned<DeviceRow>>, StoreError> {
        let mut rows = self
            .range_prefix("devices/", None, 0)?
            .iter()
            .map(decode_device)
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by_key(|r| r.value.info.fdid);
        Ok(rows)
    }

    fn put_device(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        let key = self.device_key(fdid);
        let body = serde_json::to_string(row).map_err(|e| corrupt(&key, e))?;
        let versions = self.write(&[(key.clone(), expected)], &[put(&key, &body)], audit)?;
        Ok(versions[0])
    }

    fn put_device_and_workflow(
        &self,
        fdid: Fdid,
        expected: Option<u64>,
        row: &DeviceRow,
        audit: &[AuditEntry<'_>],
        workflow: WorkflowWrite<'_>,
    ) -> Result<(u64, u64), StoreError> {
        let key = self.device_key(fdid);
        let body = serde_json::to_string(row).map_err(|e| corrupt(&key, e))?;
        let (wf_key, mut writes) = self.workflow_writes(&workflow);
        writes.push(put(&key, &body));
        let versions = self.write(
            &[(key, expected), (wf_key, workflow.expected)],
            &writes,
            audit,
        )?;
        Ok((versions[0], versions[1]))
    }

    fn next(&self, counter: &str) -> Result<u64, StoreError> {
        Ok(self.next_many(&[counter])?[0])
    }

    /// Each counter is a key whose version counts its puts: one transaction puts and reads them all.
    fn next_many(&self, counters: &[&str]) -> Result<Vec<u64>, StoreError> {
        let keys: Vec<String> = counters
            .iter()
            .map(|c| self.key(&format!("counters/{c}")))
            .collect();
        let success: Vec<Value> = keys
            .iter()
            .map(|k| put(k, ""))
            .chain(keys.iter().map(|k| get(k)))
            .collect();
        let (done, answer) = self.fenced_txn(Vec::new(), success, Vec::new())?;
        if !done {
            self.still_leader(None)?;
            return Err(StoreError::Etcd(
                "a counter transaction failed with leadership held".into(),
            ));
        }
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                kvs(&responses.get(keys.len() + i).cloned().unwrap_or_default()["response_range"])?
                    .first()
                    .map(|kv| kv.version)
                    .ok_or_else(|| StoreError::Etcd(format!("{k}: the counter was not read back")))
            })
            .collect()
    }

    fn audit(&self, entries: &[AuditEntry<'_>]) -> Result<(), StoreError> {
        self.write(&[], &[], entries).map(|_| ())
    }

    fn workflow(&self, id: u64) -> Result<Option<Versioned<String>>, StoreError> {
        Ok(self
            .range(&self.key(&format!("workflows/{id:020}")))?
            .map(|kv| Versioned {
                version: kv.version,
                value: kv.value,
            }))
    }

    fn put_workflow(
        &self,
        id: u64,
        expected: Option<u64>,
        body: &str,
        finished: bool,
        audit: &[AuditEntry<'_>],
    ) -> Result<u64, StoreError> {
        let (key, writes) = self.workflow_writes(&WorkflowWrite {
            id,
            expected,
            body,
            finished,
        });
        Ok(self.write(&[(key, expected)], &writes, audit)?[0])
    }

    fn put_agent(
        &self,
        node: NodeId,
        body: &str,
        audit: &[AuditEntry<'_>],
    ) -> Result<(), StoreError> {
        let key = self.key(&format!("agents/{node}"));
        self.write(&[], &[put(&key, body)], audit).map(|_| ())
    }

    fn agents(&self) -> Result<Vec<(NodeId, String)>, StoreError> {
        self.range_prefix("agents/", None, 0)?
            .into_iter()
            .map(|kv| {
                let name = kv.key.rsplit('/').next().unwrap_or_default();
                let node = name
                    .parse::<NodeId>()
                    .map_err(|_| StoreError::Etcd(format!("{}: not a node id", kv.key)))?;
                Ok((node, kv.value))
            })
            .collect()
    }

    fn unfinished_workflows(&self) -> Result<Vec<u64>, StoreError> {
        self.range_prefix("unfinished/", None, 0)?
            .into_iter()
            .map(|kv| {
                kv.key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| StoreError::Etcd(format!("{}: not a workflow id", kv.key)))
            })
            .collect()
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        let key = self.key("audit-head");
        match self.range(&key)? {
            Some(kv) => serde_json::from_str::<AuditRecord>(&kv.value)
                .map(|r| r.seq)
                .map_err(|e| corrupt(&key, e)),
            None => Ok(0),
        }
    }

    fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = if limit == usize::MAX { 0 } else { limit };
        self.range_prefix("audit/", Some(&format!("audit/{from_seq:020}")), limit)?
            .into_iter()
            .map(|kv| serde_json::from_str(&kv.value).map_err(|e| corrupt(&kv.key, e)))
            .collect()
    }
}
