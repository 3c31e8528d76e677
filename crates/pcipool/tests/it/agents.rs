//! The controller, one agent per simulated host and the simulated fabric as separate real processes
//! (`pcipool server`, `pcipool agent`, `pcipool sim serve`), as the recovery tests need them: a killed
//! controller or agent leaves the hardware as it was.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pcipool_client::{Client, ClientError};
use pcipool_pool::AuditChain;
use pcipool_store::Store;
use pcipool_wire::BorrowRequest;

use crate::cluster::Cluster;
use crate::support::nvme_for;

fn state_of(c: &Cluster, fdid: &str) -> String {
    c.devices()
        .into_iter()
        .find(|d| d.fdid.to_string() == fdid)
        .map(|d| d.state)
        .unwrap_or_default()
}

#[test]
fn a_lend_crosses_processes_and_the_hardware_follows() {
    let c = Cluster::start();
    let client = c.client();
    let granted = client.borrow(&nvme_for(3)).expect("borrow");
    let lease = granted[0].lease_id.0;
    let during = c.hardware();
    let show = client
        .device(&granted[0].fdid.to_string())
        .expect("device show");
    client.release(lease).expect("release");
    let after = c.hardware();
    assert_eq!(
        (
            during.0.contains(&lease),
            during.1,
            show.state.as_str(),
            show.leases.len(),
            after.0.is_empty(),
            after.1
        ),
        (true, 1, "lent", 1, true, 0)
    );
}

#[test]
fn agents_enforce_fencing_epochs() {
    let c = Cluster::start();
    let client = c.client();
    let first = client.borrow(&nvme_for(3)).expect("borrow");
    client.release(first[0].lease_id.0).expect("release");
    // Borrow the same device again: a newer epoch.
    let second = client
        .borrow(&BorrowRequest {
            selector: pcipool_pool::schedule::Selector {
                fdid: Some(first[0].fdid),
                ..Default::default()
            },
            ..nvme_for(3)
        })
        .expect("second borrow");
    assert!(second[0].epoch.0 > first[0].epoch.0);
    // The controller dies; a stale one that still believes in the first lease (its store holds the
    // agents' addresses and secrets) replays one of the first lease's steps on the lender.
    let mut c = c;
    c.kill_server();
    let agents = c.store().agents().expect("agent records");
    let (_, body) = agents
        .iter()
        .find(|(n, _)| n.0 == first[0].fdid.node.0)
        .expect("lender agent recorded");
    let record: serde_json::Value = serde_json::from_str(body).expect("record");
    let url = record["url"].as_str().expect("url");
    let secret = record["secret"].as_str().expect("secret");
    // A reset of the device under its current borrower: the harm fencing prevents.
    let stale = serde_json::json!({
        "step": "lender_reset",
        "ctx": {
            "lender": first[0].fdid.node.to_string(),
            "bdf": first[0].fdid.bdf.to_string(),
            "borrower": "n3",
            "attached": first[0].attached.map(|a| a.to_string()),
            "lease": first[0].lease_id.0,
            "epoch": first[0].epoch.0,
            "bars": [],
            "dma_window": 0,
            "driver": null
        }
    });
    let call = |token: &str| {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        let agent: ureq::Agent = config.into();
        let mut resp = agent
            .post(&format!("{url}/v1/steps"))
            .header("authorization", &format!("Bearer {token}"))
            .send_json(&stale)
            .expect("agent answers");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.body_mut().read_json().unwrap_or_default();
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    };
    let wrong_secret = call("not-the-controller");
    let replay = call(secret);
    let hardware = c.hardware();
    assert_eq!(
        (
            wrong_secret,
            replay,
            hardware.0.contains(&second[0].lease_id.0)
        ),
        (
            (401, "UNAUTHORIZED".to_owned()),
            (409, "STALE_EPOCH".to_owned()),
            true
        )
    );
}

#[test]
fn a_killed_lender_agent_makes_its_devices_lost_until_it_returns() {
    let mut c = Cluster::start();
    let client = c.client();
    let granted = client.borrow(&nvme_for(3)).expect("borrow");
    let fdid = granted[0].fdid.to_string();
    c.kill_agent(1);
    // The controller marks the lender's devices lost one after another: wait for the last one too.
    c.wait_for(
        |c| state_of(c, &fdid) == "lost" && state_of(c, "n1:0000:05:00.0") == "lost",
        "the lender's devices lost",
    );
    let idle_lost = state_of(&c, "n1:0000:05:00.0");
    c.start_agent(1);
    // Back: the lease that was active while the lender was gone is fenced and returned; idle devices
    // go straight back to the pool.
    c.wait_for(
        |c| state_of(c, &fdid) == "available" && state_of(c, "n1:0000:05:00.0") == "available",
        "the lender's devices back",
    );
    let leases = client.leases().expect("leases");
    let audit = client.audit(1, 10_000).expect("audit");
    assert_eq!(
        (
            idle_lost.as_str(),
            state_of(&c, "n1:0000:05:00.0").as_str(),
            leases.len(),
            c.hardware().0.len(),
            audit.iter().any(|r| r.action == "lender_lost"),
            audit.iter().any(|r| r.action == "lender_back"),
        ),
        ("lost", "available", 0, 0, true, true)
    );
}

/// The crash test against the multi-process deployment: clients run borrow/release cycles while
/// the controller is SIGKILLed at pseudo-random points 20 times and restarted on the same data directory
/// and port. The agents and the hardware live on, so the restarted controller resumes unfinished
/// workflows through them; afterwards the store and the hardware must agree.
#[test]
fn sigkill_the_server_twenty_times_with_agents_running() {
    let mut c = Cluster::start();
    let granted: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    // Leases whose release did not get an answer (the controller died): clients retry them, as a real
    // client would, or the two NVMe devices would soon be held by leases nobody releases.
    let unreleased: Arc<Mutex<BTreeSet<u64>>> = Arc::new(Mutex::new(BTreeSet::new()));
    // Each client's borrow whose answer was lost, kept across controller restarts.
    let pending: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; 3]));
    let mut seed = 0x00c0_ffee_u64;
    let mut kills = 0;
    for round in 0..20 {
        if !c.server_running() {
            c.start_server();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..3u32)
            .map(|i| {
                let (client, stop, granted, unreleased) = (
                    c.client(),
                    stop.clone(),
                    granted.clone(),
                    unreleased.clone(),
                );
                let borrower = 2 + i;
                let pending = pending.clone();
                std::thread::spawn(move || {
                    let release = |lease: u64| match client.release(lease) {
                        Ok(()) | Err(ClientError::Api { .. }) => {}
                        Err(_) => {
                            unreleased.lock().expect("lock").insert(lease);
                        }
                    };
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let retry = unreleased.lock().expect("lock").pop_first();
                        if let Some(lease) = retry {
                            release(lease);
                            continue;
                        }
                        // A borrow whose answer was lost (the controller died) is retried with the
                        // same idempotency key: it gets the lease it was granted, not a second one.
                        let key = pending.lock().expect("lock")[i as usize]
                            .take()
                            .unwrap_or_else(|| {
                                n += 1;
                                format!("client{i}-round{round}-{n}")
                            });
                        let request = BorrowRequest {
                            request_id: Some(key.clone()),
                            ..nvme_for(borrower)
                        };
                        match client.borrow(&request) {
                            Ok(g) => {
                                for lease in g {
                                    granted.lock().expect("lock").push(lease.lease_id.0);
                                    release(lease.lease_id.0);
                                }
                            }
                            Err(ClientError::Api { .. }) => {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => {
                                pending.lock().expect("lock")[i as usize] = Some(key);
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                })
            })
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(30 + (seed >> 33) % 150));
        c.kill_server();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for t in clients {
            let _ = t.join();
        }
    }
    // One clean start finishes whatever the last kill interrupted; then release what clients could not.
    c.start_server();
    c.wait_for(|c| c.client().leases().is_ok(), "the server answering");
    let held_after_crashes = c.client().leases().expect("leases").len();
    let (mapped, _) = c.hardware();
    let stored: BTreeSet<u64> = c
        .client()
        .leases()
        .expect("leases")
        .iter()
        .map(|l| l.lease_id.0)
        .collect();
    for lease in &stored {
        c.client()
            .release(*lease)
            .expect("release after the crashes");
    }
    let (mapped_at_end, shadows_at_end) = c.hardware();
    c.kill_server();

    let store = c.store();
    let audit = store.all_audit().expect("audit");
    let granted = granted.lock().expect("lock").clone();
    let unique: BTreeSet<u64> = granted.iter().copied().collect();
    let recorded = |lease: u64| {
        audit
            .iter()
            .any(|r| r.action == "assign" && r.after.contains(&format!("\"id\":{lease},")))
    };
    let lost: Vec<u64> = unique.iter().copied().filter(|l| !recorded(*l)).collect();
    let devices = store.devices().expect("devices");
    let in_flight: Vec<String> = devices
        .iter()
        .filter(|d| !matches!(d.value.state.name(), "available"))
        .map(|d| format!("{} {}", d.value.info.fdid, d.value.state.name()))
        .collect();
    let resumed = audit
        .iter()
        .filter(|r| r.action.starts_with("workflow") && r.result == "running")
        .count();
    eprintln!(
        "crash test (agents): {} leases granted, {held_after_crashes} held after the last kill, {} audit records, {resumed} journals opened",
        granted.len(),
        audit.len()
    );
    assert_eq!(
        (
            kills,
            granted.len() == unique.len(),
            lost,
            // The hardware carried exactly the leases the store held.
            mapped == stored,
            store.unfinished_workflows().expect("workflows"),
            in_flight,
            (mapped_at_end.len(), shadows_at_end),
            AuditChain::verify(&audit).is_ok(),
            !granted.is_empty(),
        ),
        (
            20,
            true,
            vec![],
            true,
            vec![],
            Vec::<String>::new(),
            (0, 0),
            true,
            true
        )
    );
}

#[test]
fn a_restarted_borrower_agent_keeps_its_lease_alive() {
    let mut c = Cluster::start();
    let client = c.client();
    let granted = client
        .borrow(&BorrowRequest {
            duration_secs: Some(2),
            ..nvme_for(3)
        })
        .expect("borrow");
    let lease = granted[0].lease_id;
    c.kill_agent(3);
    c.start_agent(3);
    // Well past the 2 s lease: only the restarted agent's heartbeats can have kept it.
    std::thread::sleep(Duration::from_secs(4));
    let held = client.leases().expect("leases");
    assert_eq!(
        (
            held.iter().map(|l| l.lease_id).collect::<Vec<_>>(),
            c.hardware()
        ),
        (vec![lease], ([lease.0].into_iter().collect(), 1))
    );
}

#[test]
fn a_vanished_borrower_is_fenced_by_the_lender_and_cleans_up_when_back() {
    let mut c = Cluster::start();
    let client = c.client();
    let granted = client
        .borrow(&BorrowRequest {
            duration_secs: Some(1),
            ..nvme_for(3)
        })
        .expect("borrow");
    let fdid = granted[0].fdid.to_string();
    c.kill_agent(3);
    c.wait_for(
        |c| c.client().leases().is_ok_and(|l| l.is_empty()) && state_of(c, &fdid) == "available",
        "the lease fenced and the device returned",
    );
    // The lender cut the mappings; the borrower still shows the dead device until its agent is back.
    let while_gone = c.hardware();
    c.start_agent(3);
    c.wait_for(|c| c.hardware().1 == 0, "the leftover device removed");
    assert_eq!(while_gone, (BTreeSet::new(), 1));
}

#[test]
fn a_token_file_gives_tenants_their_own_view() {
    let c = Cluster::start_with(Some(&[
        ("acme", "tenant", "tenant-secret-0123456789"),
        ("n3", "agent", "n3-agent-secret-0123456789"),
    ]));
    let admin = c.client();
    let acme = Client::new(&c.url, "tenant-secret-0123456789");
    let agent = Client::new(&c.url, "agent-secret-0123456789");
    let mine = acme.borrow(&nvme_for(3)).expect("tenant borrows");
    let theirs = admin.borrow(&nvme_for(4)).expect("admin borrows");
    let seen: Vec<u64> = acme
        .leases()
        .expect("leases")
        .iter()
        .map(|l| l.lease_id.0)
        .collect();
    let release_other = acme
        .release(theirs[0].lease_id.0)
        .map_err(|e| e.to_string());
    let agent_borrows = agent.borrow(&nvme_for(3)).map_err(|e| e.to_string());
    let agent_releases = agent.release(mine[0].lease_id.0).map_err(|e| e.to_string());
    let verify_as_tenant = acme.audit_verify().map_err(|e| e.to_string());
    // A token named after a host speaks only for that host.
    let n3 = Client::new(&c.url, "n3-agent-secret-0123456789");
    let as_other_host = n3
        .agent_heartbeat(pcipool_fabric::NodeId(1), &Default::default())
        .map_err(|e| e.to_string());
    let as_itself = n3.agent_heartbeat(pcipool_fabric::NodeId(3), &Default::default());
    assert_eq!(
        (
            seen,
            release_other.is_err_and(|e| e.starts_with("FORBIDDEN")),
            agent_borrows.is_err_and(|e| e.starts_with("FORBIDDEN")),
            agent_releases.is_err_and(|e| e.starts_with("FORBIDDEN")),
            verify_as_tenant.is_err_and(|e| e.starts_with("FORBIDDEN")),
            as_other_host.is_err_and(|e| e.starts_with("FORBIDDEN")),
            as_itself.is_ok(),
        ),
        (vec![mine[0].lease_id.0], true, true, true, true, true, true)
    );
}

#[test]
fn a_bad_token_file_is_refused_with_exit_code_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        "[[token]]\nname = \"x\"\nrole = \"root\"\ntoken = \"0123456789abcdef\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("ctl"))
        .arg("--tokens")
        .arg(&path)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), stderr.contains("unknown role \"root\"")),
        (Some(3), true),
        "{stderr}"
    );
}

#[test]
fn vfs_of_one_nic_go_to_two_borrowers_and_hold_back_their_pf() {
    let c = Cluster::start();
    let client = c.client();
    let vf = |borrower: u32| BorrowRequest {
        selector: pcipool_pool::schedule::Selector {
            class: Some(pcipool_pool::schedule::DeviceClass::Nic),
            ..Default::default()
        },
        model: pcipool_qualify::AccessModel::Vf,
        ..nvme_for(borrower)
    };
    let first = client.borrow(&vf(3)).expect("a VF for n3");
    let second = client.borrow(&vf(4)).expect("a VF for n4");
    let pf: pcipool_fabric::Fdid = "n2:0000:03:00.0".parse().expect("fdid");
    let whole = client
        .borrow(&BorrowRequest {
            selector: pcipool_pool::schedule::Selector {
                fdid: Some(pf),
                ..Default::default()
            },
            ..nvme_for(3)
        })
        .map(|_| ())
        .map_err(|e| e.to_string());
    let (mapped, shadows) = c.hardware();
    for g in first.iter().chain(&second) {
        client.release(g.lease_id.0).expect("release");
    }
    let pf_after = client
        .borrow(&BorrowRequest {
            selector: pcipool_pool::schedule::Selector {
                fdid: Some(pf),
                ..Default::default()
            },
            ..nvme_for(3)
        })
        .map(|g| g.len());
    assert_eq!(
        (
            first[0].fdid.node == pf.node && first[0].fdid.bdf == pf.bdf,
            first[0].fdid.vf.is_some() && second[0].fdid.vf.is_some(),
            first[0].fdid != second[0].fdid,
            whole.is_err_and(|e| e.starts_with("CONFLICT")),
            mapped.len(),
            shadows,
            pf_after.ok(),
        ),
        (true, true, true, true, 2, 2, Some(1))
    );
}

#[test]
fn validate_runs_against_the_running_multi_process_pool() {
    let c = Cluster::start_with(Some(&[("mallory", "tenant", "mallory-secret-0123456789")]));
    let report = c.dir.path().join("remote.json");
    let out = Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["validate", "--cycles", "1", "--fabric-url", &c.fabric_url])
        .args(["--url", &c.url, "--token", "admin-secret-0123456789"])
        .args(["--intruder-token", "mallory-secret-0123456789"])
        .arg("--report")
        .arg(&report)
        .output()
        .expect("validate runs");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_default())
            .unwrap_or_default();
    let suites: Vec<String> = json["suites"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["suite"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let recovery_refused = Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args([
            "validate",
            "--suite",
            "recovery",
            "--fabric-url",
            &c.fabric_url,
        ])
        .args(["--url", &c.url, "--token", "admin-secret-0123456789"])
        .output()
        .expect("runs");
    assert_eq!(
        (out.status.code(), suites, recovery_refused.status.code()),
        (
            Some(0),
            vec![
                "cycles".to_owned(),
                "reset".into(),
                "rebind".into(),
                "load".into(),
                "isolation".into(),
                "datapath".into()
            ],
            Some(2)
        ),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
