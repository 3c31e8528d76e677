//! `pcipool server --store etcd://...`: the whole system (simulated fabric, agents as processes) on a
//! real etcd, a second controller refused while the first leads, and the first SIGKILLed: the next
//! one leads once the first's leadership lease has run out, and finds the pool where it was.

use std::time::{Duration, Instant};

use pcipool_testkit::etcd::Cluster as Etcd;

use crate::cluster::{Cluster, Spec};
use crate::support::nvme_for;

#[test]
fn a_pool_on_etcd_lends_refuses_a_second_leader_and_survives_its_controllers_death() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = match Etcd::start(dir.path(), 1) {
        Ok(e) => e,
        Err(why) if pcipool_testkit::etcd::program().is_err() => {
            pcipool_testkit::skip::skipped("pool_on_etcd", &why);
            return;
        }
        Err(why) => panic!("{why}"),
    };
    let store = format!(
        "etcd://{}",
        etcd.endpoints()[0].trim_start_matches("http://")
    );
    let mut c = Cluster::launch(&Spec {
        store: Some(&store),
        ..Spec::default()
    });
    let client = c.client();
    let granted = client.borrow(&nvme_for(2)).map(|g| g[0].lease_id);
    let lent = c.devices().iter().filter(|d| d.state == "lent").count();
    let released = granted
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|l| client.release(l.0).map_err(|e| e.to_string()));

    // A second controller on the same store is refused, naming the leader.
    let other = std::process::Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args([
            "server",
            "--data-dir",
            &dir.path().join("other").display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--store",
            &store,
        ])
        .output()
        .expect("pcipool runs");
    let other_err = String::from_utf8_lossy(&other.stderr).into_owned();

    // The leader is killed; the next controller leads once the lease (2 s) has run out.
    let audited = client.audit_verify().map(|v| v.records).unwrap_or(0);
    c.kill_server();
    let killed = Instant::now();
    let mut tries = 0;
    while !c.try_start_server() {
        tries += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no controller could lead within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took_over = killed.elapsed();
    eprintln!(
        "pool_on_etcd: a new controller led {:.2} s after the leader was killed ({tries} refused starts)",
        took_over.as_secs_f64()
    );
    c.wait_for(
        |c| {
            c.client()
                .hosts()
                .is_ok_and(|h| h.iter().all(|h| h.agent == "up"))
        },
        "the agents back with the new controller",
    );
    let again = c.client().borrow(&nvme_for(3)).map(|g| g.len());
    let verify = c
        .client()
        .audit_verify()
        .map(|v| (v.ok, v.records >= audited));
    assert_eq!(
        (
            granted.is_ok(),
            lent,
            released,
            (other.status.code(), other_err.contains("not the leader")),
            took_over < Duration::from_secs(10),
            c.devices().len(),
            again.map_err(|e| e.to_string()),
            verify.map_err(|e| e.to_string()),
        ),
        (
            true,
            1,
            Ok(()),
            (Some(1), true),
            true,
            9,
            Ok(1),
            Ok((true, true)),
        ),
        "second controller said: {other_err}"
    );
}
