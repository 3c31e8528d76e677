//! Durable borrow+release cycles through the HTTP API: the controller of `pcipool dev` (in-process
//! simulated lab) on a SQLite file, and on etcd (one member and three) when asked, served on loopback
//! to real clients on threads; a large fabric is measured beside the 64-host rack in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pcipool_api::{Principal, Role};
use pcipool_controller::Service;
use pcipool_pool::policy::Policy;
use pcipool_qualify::AccessModel;
use pcipool_sim::{FabricDesc, RACK_64};
use pcipool_store::{EtcdStore, SqliteStore, Store};
use pcipool_wire::BorrowRequest;

use crate::BenchError;

/// Which stores `pcipool bench api` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreChoice {
    /// A SQLite file (what `pcipool dev` and a one-controller `pcipool server` use).
    #[default]
    Sqlite,
    /// SQLite, then etcd with one member and with three (on loopback, started here), side by side.
    Etcd,
}

/// One measured configuration.
struct Measured {
    label: String,
    done: usize,
    elapsed: f64,
    latencies: Vec<f64>,
    refusals: BTreeMap<String, usize>,
    /// Where the time went, in words.
    notes: Vec<String>,
}

/// Durable borrow+release cycles per second through the HTTP API, measured end to end with real
/// clients on loopback: the fabric asked for (default: the 64-host rack) on SQLite; beside it the
/// 64-host rack when another fabric is asked for; and etcd with one and three members with
/// `--store etcd`.
///
/// # Errors
/// Setup failures (etcd not installed, with `--store etcd`).
pub fn run(
    fabric: Option<&Path>,
    clients: usize,
    cycles: usize,
    store: StoreChoice,
) -> Result<String, BenchError> {
    let mut out = String::new();
    let loaded = FabricDesc::load_or(fabric, "built-in rack-64", RACK_64)?;
    let mut rows = Vec::new();
    let hosts = loaded.desc.hosts.len();
    rows.push(on_sqlite(
        &loaded.desc,
        &format!("{} ({hosts} hosts), SQLite", loaded.name),
        clients,
        cycles,
    )?);
    if fabric.is_some() {
        let rack = FabricDesc::load_or(None, "built-in rack-64", RACK_64)?;
        rows.push(on_sqlite(
            &rack.desc,
            &format!("{} (64 hosts), SQLite", rack.name),
            clients,
            cycles,
        )?);
    }
    if store == StoreChoice::Etcd {
        for members in [1, 3] {
            rows.push(on_etcd(&loaded.desc, members, clients, cycles)?);
        }
    }
    writeln!(
        out,
        "api benchmark: {clients} clients, {cycles} durable borrow+release cycles per configuration"
    )?;
    writeln!(
        out,
        "  {:<44} {:>9} {:>10} {:>10} {:>8}",
        "configuration", "cycles/s", "borrow p50", "borrow p99", "refused"
    )?;
    let rate = |m: &Measured| m.done as f64 / m.elapsed.max(1e-9);
    for m in &rows {
        let mut l = m.latencies.clone();
        l.sort_by(f64::total_cmp);
        writeln!(
            out,
            "  {:<44} {:>9.0} {:>8.2}ms {:>8.2}ms {:>8}",
            m.label,
            rate(m),
            crate::per_mille(&l, 500),
            crate::per_mille(&l, 990),
            m.refusals.values().sum::<usize>()
        )?;
    }
    for m in &rows {
        if !m.refusals.is_empty() {
            let list: Vec<String> = m.refusals.iter().map(|(c, n)| format!("{n} {c}")).collect();
            writeln!(out, "  refused on {}: {}", m.label, list.join(", "))?;
        }
        for n in &m.notes {
            writeln!(out, "  {}: {n}", m.label)?;
        }
    }
    if fabric.is_some() && rows.len() >= 2 {
        writeln!(
            out,
            "  cycles/s of the 64-host rack / this fabric's: {:.2} (target: at most 2)",
            rate(&rows[1]) / rate(&rows[0]).max(1e-9)
        )?;
    }
    if store == StoreChoice::Etcd {
        writeln!(
            out,
            "  cycles/s of SQLite / etcd with three members: {:.2}",
            rate(&rows[0]) / rate(&rows[rows.len() - 1]).max(1e-9)
        )?;
    }
    Ok(out)
}

/// The hosts that lend nothing: where the clients borrow to.
fn borrowers(desc: &FabricDesc) -> Vec<u32> {
    desc.hosts
        .iter()
        .filter(|h| h.devices.is_empty())
        .map(|h| h.node.0)
        .collect()
}

fn on_sqlite(
    desc: &FabricDesc,
    label: &str,
    clients: usize,
    cycles: usize,
) -> Result<Measured, BenchError> {
    let dir = crate::scratch_dir("api")?;
    let store = SqliteStore::open(&dir.join("pool.db"))
        .map_err(|e| BenchError::Failed(format!("opening the store: {e}")))?;
    let service = Arc::new(pcipool_serve::dev::open_service_on(
        store,
        desc,
        Policy::default(),
    )?);
    let (commits_before, flushes_before) = service.controller().store().commit_stats();
    let mut m = measure(service.clone(), desc, label, clients, cycles)?;
    let (commits, flushes) = service.controller().store().commit_stats();
    let (commits, flushes) = (commits - commits_before, flushes - flushes_before);
    m.notes.push(format!(
        "{commits} durable commits served by {flushes} disk flushes ({:.2} commits per flush, {:.1} flushes per cycle)",
        commits as f64 / flushes.max(1) as f64,
        flushes as f64 / m.done.max(1) as f64
    ));
    drop(service);
    std::fs::remove_dir_all(&dir).map_err(BenchError::context("removing the scratch directory"))?;
    Ok(m)
}

fn on_etcd(
    desc: &FabricDesc,
    members: usize,
    clients: usize,
    cycles: usize,
) -> Result<Measured, BenchError> {
    let dir = crate::scratch_dir("api-etcd")?;
    let cluster = pcipool_testkit::etcd::Cluster::start(&dir, members)
        .map_err(|e| BenchError::Failed(format!("starting etcd: {e}")))?;
    let store = EtcdStore::connect(&cluster.endpoints(), "bench")
        .map_err(|e| BenchError::Failed(format!("connecting to etcd: {e}")))?;
    // Led as a controller leads it: every write also compares the leadership.
    store
        .lead("bench", Duration::from_secs(2))
        .map_err(|e| BenchError::Failed(format!("leading the etcd store: {e}")))?;
    let service = Arc::new(pcipool_serve::dev::open_service_on(
        store,
        desc,
        Policy::default(),
    )?);
    let before = service.controller().store().call_stats();
    let label = format!(
        "same fabric, etcd with {members} member{}",
        if members == 1 { "" } else { "s" }
    );
    let mut m = measure(service.clone(), desc, &label, clients, cycles)?;
    let after = service.controller().store().call_stats();
    let cycles_done = m.done.max(1) as f64;
    let (reads, writes) = (after.reads - before.reads, after.writes - before.writes);
    let read_time = after.read_time.saturating_sub(before.read_time);
    let write_time = after.write_time.saturating_sub(before.write_time);
    let mean = |t: Duration, n: u64| t.as_secs_f64() * 1e3 / n.max(1) as f64;
    // Requests run concurrently: their summed time over the clients' summed time is the share.
    let busy = m.elapsed * clients as f64;
    m.notes.push(format!(
        "per cycle {:.1} reads of {:.2} ms and {:.1} transactions of {:.2} ms on average (each waits for etcd's durable log); {:.0}% of the clients' time waits on etcd",
        reads as f64 / cycles_done,
        mean(read_time, reads),
        writes as f64 / cycles_done,
        mean(write_time, writes),
        100.0 * (read_time + write_time).as_secs_f64() / busy.max(1e-9)
    ));
    drop(service);
    drop(cluster);
    std::fs::remove_dir_all(&dir).map_err(BenchError::context("removing the scratch directory"))?;
    Ok(m)
}

/// Serves `lab` on loopback and runs the clients against it.
fn measure<S: Store + Send + Sync + 'static>(
    lab: Arc<Service<S>>,
    desc: &FabricDesc,
    label: &str,
    clients: usize,
    cycles: usize,
) -> Result<Measured, BenchError> {
    let borrowers = borrowers(desc);
    let token = pcipool_serve::tokens::random_token()?;
    let mut tokens = BTreeMap::new();
    tokens.insert(
        token.clone(),
        Principal {
            name: "bench".into(),
            role: Role::Admin,
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::context("starting tokio"))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(BenchError::context("binding"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::context("address"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(pcipool_api::serve_service(
        lab,
        listener,
        tokens,
        pcipool_api::Beside::nothing(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let url = format!("http://{addr}");
    let per_client = cycles.div_ceil(clients.max(1));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (url, token) = (url.clone(), token.clone());
            let borrower = borrowers
                .get(c % borrowers.len().max(1))
                .copied()
                .unwrap_or(1);
            std::thread::spawn(move || {
                let client = pcipool_client::Client::new(&url, &token);
                let mut borrow_ms = Vec::with_capacity(per_client);
                let mut done = 0usize;
                let mut failed: BTreeMap<String, usize> = BTreeMap::new();
                let code = |e: &pcipool_client::ClientError| match e {
                    pcipool_client::ClientError::Api { code, .. } => code.clone(),
                    other => other.to_string(),
                };
                for _ in 0..per_client {
                    let request = BorrowRequest {
                        selector: pcipool_pool::schedule::Selector {
                            class: Some(pcipool_pool::schedule::DeviceClass::Nvme),
                            ..Default::default()
                        },
                        count: 1,
                        model: AccessModel::Lend,
                        borrower: pcipool_fabric::NodeId(borrower),
                        duration_secs: None,
                        max_sharers: None,
                        request_id: None,
                        wait: true,
                    };
                    let t = std::time::Instant::now();
                    match client.borrow(&request) {
                        Ok(g) => {
                            borrow_ms.push(t.elapsed().as_secs_f64() * 1e3);
                            for l in g {
                                match client.release(l.lease_id.0) {
                                    Ok(()) => done += 1,
                                    Err(e) => *failed.entry(code(&e)).or_default() += 1,
                                }
                            }
                        }
                        Err(e) => *failed.entry(code(&e)).or_default() += 1,
                    }
                }
                (borrow_ms, done, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut done = 0;
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut panicked = 0;
    for w in workers {
        let Ok((l, d, f)) = w.join() else {
            panicked += 1;
            continue;
        };
        {
            latencies.extend(l);
            done += d;
            for (code, n) in f {
                *refusals.entry(code).or_default() += n;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The server may already have stopped on an error; its result below says so.
    let _stopped = stop_tx.send(());
    runtime
        .block_on(server)
        .map_err(BenchError::context("the API server task"))?
        .map_err(BenchError::context("serving the API"))?;
    if panicked > 0 {
        return Err(BenchError::Failed(format!(
            "{panicked} client threads panicked"
        )));
    }
    Ok(Measured {
        label: label.to_owned(),
        done,
        elapsed,
        latencies,
        refusals,
        notes: Vec::new(),
    })
}
