//! Durable borrow+release cycles through the HTTP API: the controller of `pcipool dev` (SQLite file,
//! in-process simulated lab) served on loopback, real clients on threads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use pcipool_api::{Principal, Role};
use pcipool_pool::policy::Policy;
use pcipool_qualify::AccessModel;
use pcipool_sim::{FabricDesc, RACK_64};
use pcipool_wire::BorrowRequest;

use crate::BenchError;

/// Durable borrow+release cycles per second through the HTTP API, measured end to
/// end with real clients on loopback against a real SQLite file.
///
/// # Errors
/// Setup failures.
pub fn run(fabric: Option<&Path>, clients: usize, cycles: usize) -> Result<String, BenchError> {
    let mut out = String::new();
    let dir = crate::scratch_dir("api")?;
    let desc = FabricDesc::load_or(fabric, "built-in rack-64", RACK_64)?.desc;
    let borrowers: Vec<u32> = desc
        .hosts
        .iter()
        .filter(|h| h.devices.is_empty())
        .map(|h| h.node.0)
        .collect();
    let lab = pcipool_serve::dev::open_service(&dir, &desc, Policy::default())?;
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
    let lab = Arc::new(lab);
    let stats = lab.clone();
    let (commits_before, flushes_before) = stats.controller().store().commit_stats();
    let server = runtime.spawn(pcipool_api::serve_service(
        lab,
        listener,
        tokens,
        axum::Router::new(),
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
    let failed: usize = refusals.values().sum();
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
    latencies.sort_by(f64::total_cmp);
    let pct = |pm: usize| crate::per_mille(&latencies, pm);
    writeln!(
        out,
        "api benchmark: {clients} clients, {done} durable borrow+release cycles ({failed} refused) in {elapsed:.2} s"
    )?;
    writeln!(
        out,
        "  {:.0} cycles/s   (target >= 1,000/s)",
        done as f64 / elapsed.max(1e-9)
    )?;
    writeln!(
        out,
        "  borrow latency p50 {:.2} ms, p99 {:.2} ms",
        pct(500),
        pct(990)
    )?;
    if !refusals.is_empty() {
        let list: Vec<String> = refusals.iter().map(|(c, n)| format!("{n} {c}")).collect();
        writeln!(out, "  refused: {}", list.join(", "))?;
    }
    let (commits, flushes) = stats.controller().store().commit_stats();
    let (commits, flushes) = (commits - commits_before, flushes - flushes_before);
    writeln!(
        out,
        "  {commits} durable commits served by {flushes} disk flushes ({:.2} commits per flush, {:.1} flushes per cycle)",
        commits as f64 / flushes.max(1) as f64,
        flushes as f64 / done.max(1) as f64
    )?;
    std::fs::remove_dir_all(&dir).map_err(BenchError::context("removing the scratch directory"))?;
    Ok(out)
}
