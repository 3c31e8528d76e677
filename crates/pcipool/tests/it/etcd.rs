//! `pcipool server --store etcd://...`: the whole system (simulated fabric, agents as processes) on a
//! real three-member etcd with two controllers. One leads, the other follows and passes writes on; the
//! leader SIGKILLed, the follower leads by itself once the leadership lease has run out, and finds the
//! pool where it was; the killed one, started again, follows.

use std::time::{Duration, Instant};

use pcipool_client::Client;
use pcipool_testkit::etcd::Cluster as Etcd;

use crate::cluster::{Cluster, Spec};
use crate::support::nvme_for;

/// A three-member etcd and its store URL, or None (SKIPPED printed) where etcd is not installed.
pub fn etcd_or_skip(dir: &std::path::Path, name: &str) -> Option<(Etcd, String)> {
    let etcd = Etcd::start_or_skip(name, dir, 3)?;
    let store = etcd.store_url();
    Some((etcd, store))
}

#[test]
fn two_controllers_on_etcd_one_leads_the_other_passes_writes_on_and_takes_over_when_it_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((_etcd, store)) = etcd_or_skip(dir.path(), "pool_on_etcd") else {
        return;
    };
    let mut c = Cluster::launch(&Spec {
        store: Some(&store),
        controllers: 2,
        ..Spec::default()
    });
    c.wait_for(|c| c.leader().is_some(), "a leader");
    let leader = c.leader().expect("a leader");
    let follower = 1 - leader;
    let view = c.controller_view(follower).expect("the follower answers");
    let through_follower = Client::new(&c.controller_url(follower), &c.token("admin.token"));

    // Writes through the follower reach the leader; reads there see them.
    let granted = through_follower.borrow(&nvme_for(2)).map(|g| g[0].lease_id);
    let seen = through_follower
        .leases()
        .map(|l| l.iter().map(|l| l.lease_id).collect::<Vec<_>>());
    let released = granted
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|l| through_follower.release(l.0).map_err(|e| e.to_string()));

    // The leader is killed; the follower leads by itself once the lease (2 s) has run out.
    let audited = through_follower
        .audit_verify()
        .map(|v| v.records)
        .unwrap_or(0);
    let granted_before = granted.as_ref().ok().copied();
    c.kill_controller(leader);
    let killed = Instant::now();
    let mut refused = 0;
    let again = loop {
        match through_follower.borrow(&nvme_for(3)) {
            Ok(g) => break Ok(g),
            Err(e) if e.code().is_some_and(pcipool_wire::ErrorCode::is_transient) => refused += 1,
            Err(e) => break Err(e.to_string()),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "no borrow succeeded within 20 s of the leader's death"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took_over = killed.elapsed();
    eprintln!(
        "pool_on_etcd: first borrow through the follower {:.2} s after the leader was killed ({refused} refused meanwhile)",
        took_over.as_secs_f64()
    );
    c.wait_for(
        |c| {
            c.client()
                .hosts()
                .is_ok_and(|h| h.iter().all(|h| h.agent == "up"))
        },
        "the agents up with the new leader",
    );
    // The killed controller comes back as a follower.
    c.start_controller(leader);
    c.wait_for(
        |c| {
            c.controller_view(leader)
                .is_some_and(|v| v.role == "follower" && v.leader.is_some())
        },
        "the restarted controller following",
    );
    let verify = c
        .client()
        .audit_verify()
        .map(|v| (v.ok, v.records > audited));
    assert_eq!(
        (
            view.role.as_str(),
            granted.is_ok(),
            seen.map(|s| s == granted_before.into_iter().collect::<Vec<_>>())
                .map_err(|e| e.to_string()),
            released,
            took_over < Duration::from_secs(5),
            c.leader(),
            c.devices().len(),
            again.map(|g| g.len()),
            verify.map_err(|e| e.to_string()),
        ),
        (
            "follower",
            true,
            Ok(true),
            Ok(()),
            true,
            Some(follower),
            9,
            Ok(1),
            Ok((true, true)),
        ),
    );
}
