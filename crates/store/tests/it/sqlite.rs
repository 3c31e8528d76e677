use std::collections::BTreeMap;

use pcipool_fabric::Fdid;
use pcipool_pool::schedule::DeviceInfo;
use pcipool_pool::{AuditChain, AuditEntry, DeviceState};
use pcipool_qualify::AccessModel;
use pcipool_store::{DeviceRow, SqliteStore, Store, StoreError};

pub fn fdid() -> Fdid {
    "n1:0000:03:00.0".parse().expect("fdid")
}

pub fn row(state: DeviceState) -> DeviceRow {
    DeviceRow {
        info: DeviceInfo {
            fdid: fdid(),
            class: 0x01_08_02,
            vendor_id: 0x144d,
            device_id: 0xa808,
            name: "nvme".into(),
            labels: BTreeMap::new(),
            link_width: 4,
            link_gts_x10: 80,
            largest_bar: 0x4000,
            models: vec![AccessModel::Lend],
            bars: vec![],
            driver: None,
            function: None,
            local_driver: None,
            local_vfs: 0,
        },
        state,
    }
}

pub fn entry(action: &str) -> AuditEntry<'_> {
    AuditEntry {
        at: 1,
        actor: "test",
        target: "n1:0000:03:00.0",
        action,
        before: "",
        after: "",
        result: "ok",
    }
}

/// Writer `writer` appends `n` audit records of its own, one per transaction, each named by writer and
/// number (so a lost or doubled record shows).
pub fn append_records(store: &dyn Store, writer: usize, n: u64) {
    for i in 0..n {
        let who = format!("writer {writer} record {i}");
        store
            .audit(&[AuditEntry {
                at: i,
                actor: &who,
                target: "t",
                action: "a",
                before: "",
                after: "",
                result: "ok",
            }])
            .expect("audit");
    }
}

#[test]
fn cas_refuses_a_stale_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("opens");
    store
        .put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")])
        .expect("first write");
    store
        .put_device(
            fdid(),
            Some(1),
            &row(DeviceState::Maintenance),
            &[entry("drain")],
        )
        .expect("second write");
    let stale = store.put_device(
        fdid(),
        Some(1),
        &row(DeviceState::Available),
        &[entry("undrain")],
    );
    assert!(matches!(
        stale,
        Err(StoreError::Conflict {
            expected: Some(1),
            found: Some(2),
            ..
        })
    ));
}

#[test]
fn refused_write_leaves_no_audit_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("opens");
    store
        .put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")])
        .expect("first write");
    let _ = store.put_device(
        fdid(),
        None,
        &row(DeviceState::Available),
        &[entry("add again")],
    );
    assert_eq!(store.all_audit().expect("audit").len(), 1);
}

#[test]
fn state_and_audit_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pool.db");
    {
        let store = SqliteStore::open(&path).expect("opens");
        store
            .put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")])
            .expect("write");
        store.next("lease").expect("counter");
    }
    let store = SqliteStore::open(&path).expect("reopens");
    let device = store
        .device(fdid())
        .expect("reads")
        .map(|v| (v.version, v.value.state));
    assert_eq!(
        (
            device,
            store.next("lease").expect("counter"),
            AuditChain::verify(&store.all_audit().expect("audit"))
        ),
        (Some((1, DeviceState::Available)), 2, Ok(1))
    );
}

#[test]
fn audit_chain_spans_many_transactions_and_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("opens");
    let mut version = None;
    for i in 0..50 {
        let state = if i % 2 == 0 {
            DeviceState::Available
        } else {
            DeviceState::Maintenance
        };
        version = Some(
            store
                .put_device(
                    fdid(),
                    version,
                    &row(state),
                    &[entry("flip"), entry("note")],
                )
                .expect("write"),
        );
        store.audit(&[entry("request refused")]).expect("audit");
    }
    assert_eq!(
        AuditChain::verify(&store.all_audit().expect("audit")),
        Ok(150)
    );
}

#[test]
fn edited_audit_row_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pool.db");
    let store = SqliteStore::open(&path).expect("opens");
    store
        .audit(&[entry("a"), entry("b"), entry("c")])
        .expect("audit");
    drop(store);
    edit_behind_the_stores_back(&path);
    let store = SqliteStore::open(&path).expect("reopens");
    assert!(matches!(
        AuditChain::verify(&store.all_audit().expect("audit")),
        Err(pcipool_pool::AuditError::Tampered { .. })
    ));
}

/// Edits the file behind the store's back, as an attacker with file access would.
fn edit_behind_the_stores_back(path: &std::path::Path) {
    // Edit the bytes of one record in place (same length, so the file stays a valid database).
    let mut bytes = std::fs::read(path).expect("read db");
    let needle = b"test";
    if let Some(pos) = bytes.windows(needle.len()).rposition(|w| w == needle) {
        bytes[pos..pos + 4].copy_from_slice(b"evil");
    }
    std::fs::write(path, bytes).expect("write db");
}

#[test]
fn corrupt_row_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pool.db");
    let store = SqliteStore::open(&path).expect("opens");
    store
        .put_device(fdid(), None, &row(DeviceState::Available), &[])
        .expect("write");
    drop(store);
    let mut bytes = std::fs::read(&path).expect("read db");
    if let Some(pos) = bytes.windows(9).rposition(|w| w == b"available") {
        bytes[pos..pos + 9].copy_from_slice(b"availabXe");
    }
    std::fs::write(&path, bytes).expect("write db");
    let store = SqliteStore::open(&path).expect("reopens");
    assert!(matches!(
        store.device(fdid()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn counters_are_monotonic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("opens");
    let got: Vec<u64> = (0..3)
        .map(|_| store.next("epoch").expect("counter"))
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pool.db");
    let first = SqliteStore::open(&path).expect("opens");
    let second = SqliteStore::open(&path).map(|_| ());
    drop(first);
    let after = SqliteStore::open(&path).map(|_| ());
    assert!(
        matches!(second, Err(StoreError::InUse(_))) && after.is_ok(),
        "{second:?} {after:?}"
    );
}

#[test]
fn concurrent_durable_writers_share_flushes_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pool.db");
    let store = std::sync::Arc::new(SqliteStore::open(&path).expect("opens"));
    let (before, _) = store.commit_stats();
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                append_records(&*store, t, 50);
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let (commits, flushes) = store.commit_stats();
    drop(store);
    let reopened = SqliteStore::open(&path).expect("reopens");
    let audit = reopened.all_audit().expect("audit");
    // Every commit was flushed by some flush (never more flushes than commits); the chain is whole.
    assert_eq!(
        (
            commits - before,
            flushes <= commits,
            audit.len(),
            AuditChain::verify(&audit)
        ),
        (400, true, 400, Ok(400))
    );
}
