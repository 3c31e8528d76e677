//! The control plane's benchmarks: durable borrow+release cycles through the HTTP API, and a
//! controller restart over a large store. Timing lives here, never in tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pcipool_api::{Principal, Role};
use pcipool_controller::Controller;
use pcipool_fabric::{Fdid, LeaseId};
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::DeviceInfo;
use pcipool_qualify::AccessModel;
use pcipool_sim::FabricDesc;
use pcipool_store::{SqliteStore, Store};
use pcipool_wire::BorrowRequest;

/// `pcipool bench api`: durable borrow+release cycles per second through the HTTP API, measured end to
/// end with real clients on loopback against a real SQLite file.
///
/// # Errors
/// Setup failures.
pub fn bench(fabric: Option<&Path>, clients: usize, cycles: usize) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("pcipool-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (_, desc) = crate::sim_cmd::load_or(fabric, "built-in rack-64", crate::sim_cmd::RACK_64)?;
    let borrowers: Vec<u32> = desc
        .hosts
        .iter()
        .filter(|h| h.devices.is_empty())
        .map(|h| h.node.0)
        .collect();
    let lab = crate::dev::open_lab(&dir, &desc, Policy::default())?;
    let token = crate::dev::random_token()?;
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
        .context("starting tokio")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding")?;
    let addr = listener.local_addr().context("address")?;
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
    for w in workers {
        if let Ok((l, d, f)) = w.join() {
            latencies.extend(l);
            done += d;
            for (code, n) in f {
                *refusals.entry(code).or_default() += n;
            }
        }
    }
    let failed: usize = refusals.values().sum();
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = runtime.block_on(server);
    latencies.sort_by(f64::total_cmp);
    // Nearest-rank percentile over the sorted latencies; `per_mille` avoids float-to-index casts.
    let pct = |per_mille: usize| {
        let n = latencies.len();
        latencies
            .get((n * per_mille / 1000).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "api benchmark: {clients} clients, {done} durable borrow+release cycles ({failed} refused) in {elapsed:.2} s"
    );
    println!(
        "  {:.0} cycles/s   (target >= 1,000/s)",
        done as f64 / elapsed.max(1e-9)
    );
    println!(
        "  borrow latency p50 {:.2} ms, p99 {:.2} ms",
        pct(500),
        pct(990)
    );
    if !refusals.is_empty() {
        let list: Vec<String> = refusals.iter().map(|(c, n)| format!("{n} {c}")).collect();
        println!("  refused: {}", list.join(", "));
    }
    let (commits, flushes) = stats.controller().store().commit_stats();
    let (commits, flushes) = (commits - commits_before, flushes - flushes_before);
    println!(
        "  {commits} durable commits served by {flushes} disk flushes ({:.2} commits per flush, {:.1} flushes per cycle)",
        commits as f64 / flushes.max(1) as f64,
        flushes as f64 / done.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// `pcipool bench restart`: a store holding `leases` active leases and `audit` audit records is opened the
/// way a restarting controller opens it (migrations, device table, unfinished workflows, audit tail) and
/// the API is ready to serve; prints the time.
///
/// # Errors
/// Setup failures.
pub fn bench_restart(leases: u64, audit: u64) -> anyhow::Result<ExitCode> {
    use pcipool_pool::schedule::DeviceClass;
    use pcipool_pool::{DeviceState, Epoch, Lease};
    use pcipool_store::DeviceRow;

    let dir = std::env::temp_dir().join(format!("pcipool-bench-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("pool.db");
    let setup = std::time::Instant::now();
    {
        let store = SqliteStore::open(&path).context("store")?;
        let mut rows = Vec::new();
        for i in 0..leases {
            let node = pcipool_fabric::NodeId(u32::try_from(1 + i / 256).unwrap_or(u32::MAX));
            let bus = u8::try_from(i % 256).unwrap_or(0);
            let fdid = Fdid {
                node,
                bdf: pcipool_pcie::Bdf::new(0, bus, 0, 0).context("address")?,
                vf: None,
            };
            let lease = Lease {
                id: LeaseId(i + 1),
                borrower: pcipool_fabric::NodeId(100_000),
                tenant: "bench".into(),
                model: AccessModel::Lend,
                epoch: Epoch(i + 1),
                expires_at: u64::MAX / 2,
                ttl: 86_400_000,
                request: None,
                attached: None,
            };
            let info = DeviceInfo {
                fdid,
                class: 0x01_08_02,
                vendor_id: 0x144d,
                device_id: 0xa808,
                name: "nvme".into(),
                labels: BTreeMap::new(),
                link_width: 4,
                link_gts_x10: 80,
                largest_bar: 0x4000,
                models: vec![AccessModel::Lend],
                bars: vec![(0, 0x4000)],
                driver: Some("nvme".into()),
                function: None,
                local_driver: None,
                local_vfs: 0,
            };
            let _ = DeviceClass::of(info.class);
            rows.push((
                fdid,
                DeviceRow {
                    info,
                    state: DeviceState::Lent { lease },
                },
            ));
        }
        let entries: Vec<pcipool_pool::AuditEntry<'_>> = (0..audit)
            .map(|i| pcipool_pool::AuditEntry {
                at: i,
                actor: "bench",
                target: "n1:0000:00:00.0",
                action: "heartbeat",
                before: "",
                after: "",
                result: "ok",
            })
            .collect();
        store.bulk_load(&rows, &entries).context("bulk load")?;
    }
    let setup = setup.elapsed();
    // The restart: what a controller does before it serves again.
    let started = std::time::Instant::now();
    let store = SqliteStore::open(&path).context("reopen")?;
    let devices = store.devices().context("devices")?;
    let active: usize = devices.iter().map(|d| d.value.state.leases().len()).sum();
    let unfinished = store.unfinished_workflows().context("workflows")?;
    let tail = store.last_audit().context("audit tail")?;
    let lab_topology =
        FabricDesc::parse(crate::sim_cmd::LAB_4).map_err(|e| crate::BadInput(e.to_string()))?;
    let controller = Controller::new(store, Policy::default(), lab_topology.topology);
    let ready = started.elapsed();
    drop(controller);
    println!(
        "restart benchmark: {leases} leases, {audit} audit records (built in {:.1} s)",
        setup.as_secs_f64()
    );
    println!(
        "  store reopened, {active} active leases loaded, {} unfinished workflows, audit tail at seq {}: ready in {:.3} s   (target < 2 s)",
        unfinished.len(),
        tail.map_or(0, |r| r.seq),
        ready.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}
