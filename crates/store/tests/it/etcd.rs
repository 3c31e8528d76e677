//! The etcd store against a real etcd on loopback (one member, and three for the concurrent writers):
//! the same guarantees as the SQLite store's tests, and a chain that stays a chain when several
//! stores (several controllers) append at once.

use pcipool_pool::{AuditChain, DeviceState};
use pcipool_store::{EtcdStore, Store, StoreError, WorkflowWrite};
use pcipool_testkit::etcd::Cluster;

use crate::sqlite::{append_records, entry, fdid, row};

/// A cluster of `n` members, or None after printing SKIPPED.
fn cluster(test: &str, dir: &std::path::Path, n: usize) -> Option<Cluster> {
    Cluster::start_or_skip(test, dir, n)
}

#[test]
fn etcd_cas_refuses_a_stale_version_and_records_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = cluster("etcd_cas", dir.path(), 1) else {
        return;
    };
    let store = EtcdStore::connect(&etcd.endpoints(), "pool-a").expect("connects");
    let first = store.put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")]);
    let second = store.put_device(
        fdid(),
        Some(1),
        &row(DeviceState::Maintenance),
        &[entry("drain")],
    );
    let stale = store.put_device(
        fdid(),
        Some(1),
        &row(DeviceState::Available),
        &[entry("stale")],
    );
    let again = store.put_device(
        fdid(),
        None,
        &row(DeviceState::Available),
        &[entry("again")],
    );
    let audit = store.all_audit().expect("audit");
    assert_eq!(
        (
            first.ok(),
            second.ok(),
            matches!(
                stale,
                Err(StoreError::Conflict {
                    expected: Some(1),
                    found: Some(2),
                    ..
                })
            ),
            matches!(again, Err(StoreError::Conflict { expected: None, .. })),
            store
                .device(fdid())
                .expect("read")
                .map(|r| (r.version, r.value.state)),
            audit.iter().map(|r| r.action.clone()).collect::<Vec<_>>(),
            AuditChain::verify(&audit),
        ),
        (
            Some(1),
            Some(2),
            true,
            true,
            Some((2, DeviceState::Maintenance)),
            vec!["add".to_owned(), "drain".to_owned()],
            Ok(2)
        )
    );
}

#[test]
fn etcd_workflows_counters_agents_and_prefixes_keep_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = cluster("etcd_workflows", dir.path(), 1) else {
        return;
    };
    let a = EtcdStore::connect(&etcd.endpoints(), "pool-a").expect("connects");
    let b = EtcdStore::connect(&etcd.endpoints(), "pool-b").expect("connects");
    let (dv, wv) = a
        .put_device_and_workflow(
            fdid(),
            None,
            &row(DeviceState::Available),
            &[entry("lend")],
            WorkflowWrite {
                id: 7,
                expected: None,
                body: "{\"steps\":[]}",
                finished: false,
            },
        )
        .expect("together");
    let unfinished = a.unfinished_workflows().expect("unfinished");
    let stale_journal = a.put_workflow(7, None, "{}", true, &[]);
    let finished = a.put_workflow(7, Some(1), "{\"done\":true}", true, &[entry("done")]);
    let counted: Vec<u64> = (0..3).map(|_| a.next("lease").expect("next")).collect();
    let many = a.next_many(&["lease", "epoch"]).expect("next many");
    a.put_agent(
        "n1".parse().expect("node"),
        "{\"url\":\"x\"}",
        &[entry("register")],
    )
    .expect("agent");
    assert_eq!(
        (
            (dv, wv),
            unfinished,
            matches!(stale_journal, Err(StoreError::Conflict { .. })),
            finished.ok(),
            a.unfinished_workflows().expect("unfinished"),
            a.workflow(7)
                .expect("journal")
                .map(|w| (w.version, w.value)),
            (counted, many),
            a.agents().expect("agents"),
            // Another prefix is another pool.
            (
                b.devices().expect("devices").len(),
                b.next("lease").expect("next")
            ),
            AuditChain::verify(&a.all_audit().expect("audit")),
            a.audit_records(2, 1)
                .expect("page")
                .iter()
                .map(|r| (r.seq, r.action.clone()))
                .collect::<Vec<_>>(),
        ),
        (
            (1, 1),
            vec![7],
            true,
            Some(2),
            Vec::<u64>::new(),
            Some((2, "{\"done\":true}".to_owned())),
            (vec![1, 2, 3], vec![4, 1]),
            vec![("n1".parse().expect("node"), "{\"url\":\"x\"}".to_owned())],
            (0, 1),
            Ok(3),
            vec![(2, "done".to_owned())],
        )
    );
}

#[test]
fn etcd_writers_on_three_members_append_one_chain_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = cluster("etcd_writers", dir.path(), 3) else {
        return;
    };
    // Four stores, as four controllers would have, each starting at another member.
    let endpoints = etcd.endpoints();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let mut mine = endpoints.clone();
            mine.rotate_left(t % endpoints.len());
            std::thread::spawn(move || {
                let store = EtcdStore::connect(&mine, "pool").expect("connects");
                append_records(&store, t, 25);
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let store = EtcdStore::connect(&endpoints, "pool").expect("connects");
    let audit = store.all_audit().expect("audit");
    let mut actors: Vec<String> = audit.iter().map(|r| r.actor.clone()).collect();
    actors.sort();
    actors.dedup();
    assert_eq!(
        (audit.len(), actors.len(), AuditChain::verify(&audit)),
        (100, 100, Ok(100))
    );
}

#[test]
fn no_member_answering_is_a_typed_error() {
    let refused = EtcdStore::connect(&["127.0.0.1:1".to_owned()], "pool");
    assert!(
        matches!(&refused, Err(StoreError::Etcd(why)) if why.contains("no etcd member answered")),
        "{refused:?}"
    );
}

#[test]
fn one_store_leads_and_one_whose_lease_ran_out_cannot_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = cluster("etcd_leadership", dir.path(), 1) else {
        return;
    };
    let ttl = std::time::Duration::from_secs(1);
    let first = EtcdStore::connect(&etcd.endpoints(), "pool").expect("connects");
    let second = EtcdStore::connect(&etcd.endpoints(), "pool").expect("connects");
    let led = first.lead("controller-1", ttl);
    let refused = second.lead("controller-2", ttl);
    let wrote = first.put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")]);
    // Kept alive, the leadership outlives its TTL.
    std::thread::sleep(ttl * 3);
    let still = first.next("lease");
    // The first controller stops renewing (paused, cut off): its lease runs out, the second leads,
    // and the first's late writes fail, whatever they compare.
    first.stop_keeping_alive();
    let mut taken = second.lead("controller-2", ttl);
    let started = std::time::Instant::now();
    while taken.is_err() && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        taken = second.lead("controller-2", ttl);
    }
    let late_device = first.put_device(fdid(), Some(1), &row(DeviceState::Maintenance), &[]);
    let late_audit = first.audit(&[entry("late")]);
    let late_counter = first.next("lease");
    let new_leader = second.put_device(
        fdid(),
        Some(1),
        &row(DeviceState::Maintenance),
        &[entry("drain")],
    );
    let audit = second.all_audit().expect("audit");
    assert_eq!(
        (
            led.is_ok(),
            matches!(&refused, Err(StoreError::NotLeader(who)) if who == "controller-1"),
            wrote.ok(),
            still.ok(),
            taken.is_ok(),
            matches!(late_device, Err(StoreError::NotLeader(_))),
            matches!(late_audit, Err(StoreError::NotLeader(_))),
            matches!(late_counter, Err(StoreError::NotLeader(_))),
            new_leader.ok(),
            audit.iter().map(|r| r.action.clone()).collect::<Vec<_>>(),
        ),
        (
            true,
            true,
            Some(1),
            Some(1),
            true,
            true,
            true,
            true,
            Some(2),
            vec!["add".to_owned(), "drain".to_owned()],
        ),
        "refused {refused:?}"
    );
}
