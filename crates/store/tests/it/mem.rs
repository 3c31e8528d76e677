use pcipool_pool::{AuditChain, DeviceState};
use pcipool_store::{MemStore, Store, StoreError, WorkflowWrite};

use crate::sqlite::{entry, fdid, row};

#[test]
fn mem_cas_refuses_a_stale_version_and_records_nothing() {
    let store = MemStore::new();
    store
        .put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")])
        .expect("first write");
    let stale = store.put_device(
        fdid(),
        None,
        &row(DeviceState::Maintenance),
        &[entry("drain")],
    );
    assert_eq!(
        (
            matches!(
                stale,
                Err(StoreError::Conflict {
                    expected: None,
                    found: Some(1),
                    ..
                })
            ),
            store.all_audit().expect("audit").len()
        ),
        (true, 1)
    );
}

#[test]
fn mem_workflow_and_device_write_together_and_clones_share_them() {
    let store = MemStore::new();
    let shared = store.clone();
    store
        .put_device(fdid(), None, &row(DeviceState::Available), &[entry("add")])
        .expect("device");
    store
        .put_device_and_workflow(
            fdid(),
            Some(1),
            &row(DeviceState::Maintenance),
            &[entry("drain"), entry("workflow")],
            WorkflowWrite {
                id: 7,
                expected: None,
                body: "{}",
                finished: false,
            },
        )
        .expect("both");
    let unfinished = shared.unfinished_workflows().expect("workflows");
    shared
        .put_workflow(7, Some(1), "{\"done\":1}", true, &[entry("finish")])
        .expect("finish");
    let audit = shared.all_audit().expect("audit");
    assert_eq!(
        (
            unfinished,
            shared.unfinished_workflows().expect("workflows"),
            AuditChain::verify(&audit),
            shared.next("lease").expect("counter"),
            store.next("lease").expect("counter"),
        ),
        (vec![7], vec![], Ok(4), 1, 2)
    );
}
