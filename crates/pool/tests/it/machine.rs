use std::collections::BTreeMap;

use pcipool_fabric::{LeaseId, NodeId};
use pcipool_pool::state::{DeviceState as S, Event as E};
use pcipool_pool::{Command, Epoch, Lease, TransitionError, WorkflowId, apply};
use pcipool_qualify::AccessModel;
use proptest::prelude::*;

fn lease(id: u64, epoch: u64, expires_at: u64) -> Lease {
    Lease {
        id: LeaseId(id),
        borrower: NodeId(2),
        tenant: "t".into(),
        model: AccessModel::Lend,
        epoch: Epoch(epoch),
        expires_at,
        ttl: 1000,
        request: None,
        attached: None,
    }
}

/// One sample of every state.
fn states() -> Vec<S> {
    let mut shared = BTreeMap::new();
    shared.insert(LeaseId(1), lease(1, 1, 5000));
    vec![
        S::Discovered,
        S::Qualified {
            models: vec![AccessModel::Lend],
        },
        S::Rejected {
            reasons: vec!["BACKS_ROOT_FS".into()],
        },
        S::Available,
        S::Lending {
            lease: lease(1, 1, 5000),
            workflow: WorkflowId(1),
        },
        S::Lent {
            lease: lease(1, 1, 5000),
        },
        S::Shared {
            leases: shared,
            max_sharers: 4,
        },
        S::Returning {
            leases: vec![lease(1, 1, 5000)],
            reason: pcipool_pool::ReturnReason::Released,
            workflow: WorkflowId(1),
            escalated: false,
        },
        S::Quarantined {
            reason: "hang".into(),
        },
        S::Lost { leases: vec![] },
        S::Maintenance,
        S::Local,
    ]
}

/// One sample of every event, aimed at the samples above (lease 1, workflow 1).
fn events() -> Vec<E> {
    vec![
        E::Qualified {
            models: vec![AccessModel::Lend],
            reasons: vec![],
        },
        E::AddToPool,
        E::Assign {
            lease: lease(2, 2, 5000),
            workflow: WorkflowId(2),
        },
        E::LendDone {
            workflow: WorkflowId(1),
            attached: None,
        },
        E::LendFailed {
            workflow: WorkflowId(1),
            reason: "probe failed".into(),
            quarantine: false,
        },
        E::Share {
            lease: lease(3, 3, 5000),
            max_sharers: 4,
        },
        E::Downgrade {
            lease: LeaseId(1),
            max_sharers: 4,
        },
        E::Release {
            lease: LeaseId(1),
            workflow: WorkflowId(1),
        },
        E::Heartbeat {
            lease: LeaseId(1),
            epoch: Epoch(1),
        },
        E::Tick {
            workflow: WorkflowId(9),
        },
        E::Fence {
            workflow: WorkflowId(9),
        },
        E::ReturnDone {
            workflow: WorkflowId(1),
        },
        E::ReturnFailed {
            workflow: WorkflowId(1),
            reason: "FLR timeout".into(),
            escalated: false,
        },
        E::Fault {
            reason: "hang".into(),
        },
        E::LenderLost,
        E::LenderBack {
            workflow: WorkflowId(9),
        },
        E::Drain { to_local: false },
        E::Undrain,
        E::ClearQuarantine,
    ]
}

/// The expected table: for each state (row), which events are accepted (1) or refused (0).
/// Columns follow `events()`: qualified add assign lend_done lend_failed share downgrade release heartbeat tick fence
/// return_done return_failed fault lender_lost lender_back drain undrain clear_quarantine.
const TABLE: [(&str, [u8; 19]); 12] = [
    (
        "discovered",
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    ),
    (
        "qualified",
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    ),
    (
        "rejected",
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    ),
    (
        "available",
        [0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0],
    ),
    (
        "lending",
        [0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0],
    ),
    (
        "lent",
        [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0],
    ),
    (
        "shared",
        [0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0],
    ),
    (
        "returning",
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0],
    ),
    (
        "quarantined",
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1],
    ),
    (
        "lost",
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0],
    ),
    (
        "maintenance",
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0],
    ),
    (
        "local",
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0],
    ),
];

#[test]
fn transition_table_matches_every_state_event_pair() {
    let mut mismatches = Vec::new();
    for (state, (name, row)) in states().iter().zip(TABLE) {
        assert_eq!(state.name(), name, "table rows follow states()");
        for (event, expected) in events().iter().zip(row) {
            let ok = apply(state, event, 0).is_ok();
            if ok != (expected == 1) {
                mismatches.push(format!(
                    "{name} + {}: got {}",
                    event.name(),
                    if ok { "accepted" } else { "refused" }
                ));
            }
        }
    }
    assert_eq!(mismatches, Vec::<String>::new());
}

/// SISCI's exclusive borrow: a shared-model lease admitting one sharer, refused while anyone holds the
/// device, and downgraded by its holder once the device is initialised.
#[test]
fn an_exclusive_holder_downgrades_and_only_then_others_share() {
    let share = |id: u64, max_sharers: u32| {
        let mut l = lease(id, id, 5000);
        l.model = AccessModel::Shared;
        E::Share {
            lease: l,
            max_sharers,
        }
    };
    let (exclusive, _) = apply(&S::Available, &share(1, 1), 0).expect("exclusive on a free device");
    let second_while_exclusive = apply(&exclusive, &share(2, 4), 0).map(|_| ());
    let downgrade_by_stranger = apply(
        &exclusive,
        &E::Downgrade {
            lease: LeaseId(9),
            max_sharers: 4,
        },
        0,
    )
    .map(|_| ());
    let (downgraded, _) = apply(
        &exclusive,
        &E::Downgrade {
            lease: LeaseId(1),
            max_sharers: 4,
        },
        0,
    )
    .expect("the holder downgrades");
    let (two, _) = apply(&downgraded, &share(2, 4), 0).expect("a sharer joins");
    let exclusive_while_shared = apply(&two, &share(3, 1), 0).map(|_| ());
    let downgrade_again = apply(
        &two,
        &E::Downgrade {
            lease: LeaseId(1),
            max_sharers: 8,
        },
        0,
    )
    .map(|_| ());
    assert_eq!(
        (
            second_while_exclusive,
            downgrade_by_stranger,
            exclusive_while_shared,
            downgrade_again.is_err(),
            two.name()
        ),
        (
            Err(TransitionError::SharersFull { max: 1 }),
            Err(TransitionError::Unknown { what: "lease" }),
            Err(TransitionError::Conflict { state: "shared" }),
            true,
            "shared"
        )
    );
}

#[test]
fn assign_while_lent_is_a_conflict() {
    let lent = S::Lent {
        lease: lease(1, 1, 5000),
    };
    let err = apply(
        &lent,
        &E::Assign {
            lease: lease(2, 2, 5000),
            workflow: WorkflowId(2),
        },
        0,
    );
    assert_eq!(err, Err(TransitionError::Conflict { state: "lent" }));
}

#[test]
fn stale_epoch_heartbeat_is_refused() {
    let lent = S::Lent {
        lease: lease(1, 5, 5000),
    };
    let err = apply(
        &lent,
        &E::Heartbeat {
            lease: LeaseId(1),
            epoch: Epoch(4),
        },
        0,
    );
    assert_eq!(
        err,
        Err(TransitionError::StaleEpoch {
            got: Epoch(4),
            current: Epoch(5)
        })
    );
}

#[test]
fn expiry_unmaps_before_reset() {
    let lent = S::Lent {
        lease: lease(1, 1, 1000),
    };
    let (next, commands) = apply(
        &lent,
        &E::Tick {
            workflow: WorkflowId(7),
        },
        1000,
    )
    .expect("legal");
    let start = commands
        .iter()
        .find(|c| matches!(c, Command::StartReturn { .. }));
    assert_eq!(
        (
            next.name(),
            start.map(|c| matches!(
                c,
                Command::StartReturn {
                    escalate: false,
                    ..
                }
            ))
        ),
        ("returning", Some(true))
    );
}

#[test]
fn failed_reset_escalates_once_then_quarantines() {
    let returning = S::Returning {
        leases: vec![lease(1, 1, 0)],
        reason: pcipool_pool::ReturnReason::Released,
        workflow: WorkflowId(1),
        escalated: false,
    };
    let failed = E::ReturnFailed {
        workflow: WorkflowId(1),
        reason: "FLR timeout".into(),
        escalated: false,
    };
    let (escalated, _) = apply(&returning, &failed, 0).expect("escalates");
    let (quarantined, _) = apply(&escalated, &failed, 0).expect("quarantines");
    assert_eq!(
        (escalated.name(), quarantined.name()),
        ("returning", "quarantined")
    );
}

// ---- model test: random event sequences over a small pool ----

#[derive(Debug, Clone)]
enum Op {
    Assign {
        dev: usize,
    },
    Share {
        dev: usize,
    },
    Progress {
        dev: usize,
        ok: bool,
    },
    Release {
        dev: usize,
        pick: usize,
    },
    Heartbeat {
        dev: usize,
        pick: usize,
        stale: bool,
    },
    Advance {
        ms: u64,
    },
    Fence {
        dev: usize,
    },
    Fault {
        dev: usize,
    },
    LenderLost {
        dev: usize,
    },
    LenderBack {
        dev: usize,
    },
    Clear {
        dev: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..4).prop_map(|dev| Op::Assign { dev }),
        (0usize..4).prop_map(|dev| Op::Share { dev }),
        (0usize..4, any::<bool>()).prop_map(|(dev, ok)| Op::Progress { dev, ok }),
        (0usize..4, 0usize..4).prop_map(|(dev, pick)| Op::Release { dev, pick }),
        (0usize..4, 0usize..4, any::<bool>()).prop_map(|(dev, pick, stale)| Op::Heartbeat {
            dev,
            pick,
            stale
        }),
        (0u64..3000).prop_map(|ms| Op::Advance { ms }),
        (0usize..4).prop_map(|dev| Op::Fence { dev }),
        (0usize..4).prop_map(|dev| Op::Fault { dev }),
        (0usize..4).prop_map(|dev| Op::LenderLost { dev }),
        (0usize..4).prop_map(|dev| Op::LenderBack { dev }),
        (0usize..4).prop_map(|dev| Op::Clear { dev }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..200)) {
        let mut devices = vec![S::Available; 4];
        let mut epochs = [0u64; 4];
        let mut now = 0u64;
        let mut next = 100u64;
        for op in ops {
            let (dev, event) = match op {
                Op::Assign { dev } => {
                    next += 1;
                    epochs[dev] += 1;
                    (dev, E::Assign { lease: lease(next, epochs[dev], now + 1000), workflow: WorkflowId(next) })
                }
                Op::Share { dev } => {
                    next += 1;
                    epochs[dev] += 1;
                    let mut l = lease(next, epochs[dev], now + 1000);
                    l.model = AccessModel::Shared;
                    (dev, E::Share { lease: l, max_sharers: 3 })
                }
                Op::Progress { dev, ok } => match &devices[dev] {
                    S::Lending { workflow, .. } if ok => (dev, E::LendDone { workflow: *workflow, attached: None }),
                    S::Lending { workflow, .. } => (dev, E::LendFailed { workflow: *workflow, reason: "x".into(), quarantine: false }),
                    S::Returning { workflow, .. } if ok => (dev, E::ReturnDone { workflow: *workflow }),
                    S::Returning { workflow, .. } => (dev, E::ReturnFailed { workflow: *workflow, reason: "x".into(), escalated: false }),
                    _ => continue,
                },
                Op::Release { dev, pick } => {
                    let ids: Vec<LeaseId> = devices[dev].leases().iter().map(|l| l.id).collect();
                    let Some(id) = ids.get(pick % ids.len().max(1)).copied() else { continue };
                    next += 1;
                    (dev, E::Release { lease: id, workflow: WorkflowId(next) })
                }
                Op::Heartbeat { dev, pick, stale } => {
                    let ls: Vec<Lease> = devices[dev].leases().into_iter().cloned().collect();
                    let Some(l) = ls.get(pick % ls.len().max(1)) else { continue };
                    let epoch = if stale { Epoch(l.epoch.0.saturating_sub(1)) } else { l.epoch };
                    (dev, E::Heartbeat { lease: l.id, epoch })
                }
                Op::Advance { ms } => {
                    now += ms;
                    next += 1;
                    for d in devices.iter_mut() {
                        if let Ok((s, _)) = apply(d, &E::Tick { workflow: WorkflowId(next) }, now) {
                            *d = s;
                        }
                    }
                    continue;
                }
                Op::Fence { dev } => { next += 1; (dev, E::Fence { workflow: WorkflowId(next) }) }
                Op::Fault { dev } => (dev, E::Fault { reason: "hang".into() }),
                Op::LenderLost { dev } => (dev, E::LenderLost),
                Op::LenderBack { dev } => { next += 1; (dev, E::LenderBack { workflow: WorkflowId(next) }) }
                Op::Clear { dev } => (dev, E::ClearQuarantine),
            };
            let before = devices[dev].clone();
            if let Ok((after, _)) = apply(&before, &event, now) {
                devices[dev] = after;
            }
            for d in &devices {
                // Never two exclusive holders: exclusive states hold exactly one lease.
                if let S::Lending { .. } | S::Lent { .. } = d {
                    prop_assert_eq!(d.leases().len(), 1);
                }
                if let S::Shared { leases, max_sharers } = d {
                    prop_assert!(!leases.is_empty() && leases.len() <= *max_sharers as usize);
                    prop_assert!(leases.values().all(|l| l.model == AccessModel::Shared));
                }
                // No lease outlives its expiry: every tick ends expired leases, so a state that grants access
                // only holds leases that are still in time.
                if let S::Lending { .. } | S::Lent { .. } | S::Shared { .. } = d {
                    prop_assert!(d.leases().iter().all(|l| l.expires_at > now), "expired lease still live in {}", d.name());
                }
            }
        }
        // Activity stops: drive every workflow to its end and let time run out.
        now += 1_000_000;
        for d in devices.iter_mut() {
            for _ in 0..6 {
                next += 1;
                let ev = match d {
                    S::Lending { workflow, .. } => E::LendDone { workflow: *workflow, attached: None },
                    S::Returning { workflow, .. } => E::ReturnDone { workflow: *workflow },
                    S::Lent { .. } | S::Shared { .. } => E::Tick { workflow: WorkflowId(next) },
                    _ => break,
                };
                if let Ok((s, _)) = apply(d, &ev, now) {
                    *d = s;
                }
            }
            prop_assert!(d.is_settled(), "device stuck in {}", d.name());
        }
    }
}

#[test]
fn a_lend_whose_compensation_could_not_reset_is_quarantined_in_one_transition() {
    let lending = S::Lending {
        lease: lease(1, 1, 5000),
        workflow: WorkflowId(1),
    };
    let failed = E::LendFailed {
        workflow: WorkflowId(1),
        reason: "bus reset failed".into(),
        quarantine: true,
    };
    let (next, commands) = apply(&lending, &failed, 0).expect("legal");
    assert_eq!(
        (next.name(), commands.len()),
        ("quarantined", 1),
        "quarantined, and the borrower told"
    );
}

#[test]
fn a_return_that_already_escalated_its_reset_is_quarantined_at_once() {
    let returning = S::Returning {
        leases: vec![lease(1, 1, 0)],
        reason: pcipool_pool::ReturnReason::Released,
        workflow: WorkflowId(1),
        escalated: false,
    };
    let failed = E::ReturnFailed {
        workflow: WorkflowId(1),
        reason: "bus reset failed".into(),
        escalated: true,
    };
    let (next, commands) = apply(&returning, &failed, 0).expect("legal");
    assert_eq!((next.name(), commands), ("quarantined", vec![]));
}

/// Found by the whole-system simulation (`pcipool sim run --seed 1`): a quarantined device whose
/// lender was lost came back `available`, still hung. Outside the pool, a lost lender changes nothing.
#[test]
fn a_lost_lender_keeps_quarantines_drains_and_rejections() {
    let kept: Vec<&str> = [
        S::Quarantined {
            reason: "reset failed".into(),
        },
        S::Maintenance,
        S::Local,
        S::Rejected {
            reasons: vec!["no FLR".into()],
        },
    ]
    .iter()
    .map(|s| apply(s, &E::LenderLost, 0).map_or("refused", |(next, _)| next.name()))
    .collect();
    assert_eq!(
        kept,
        vec!["quarantined", "maintenance", "local", "rejected"]
    );
}

/// Found on real kernels (the VM lab): a lender killed while its whole drive was lent left the lease
/// listed and the drive in the borrower's kernel. A lost lender's leases end: borrowers are told and
/// cut off, the lease gives no access any more, and the lender's return still resets the device.
#[test]
fn a_lost_lender_ends_its_leases_and_cuts_the_borrower_off() {
    let lent = S::Lent {
        lease: lease(1, 1, 1_000),
    };
    let (lost, commands) = apply(&lent, &E::LenderLost, 0).expect("legal");
    let told: Vec<&str> = commands
        .iter()
        .map(|c| match c {
            Command::NotifyBorrower { .. } => "notify",
            Command::Unmap { .. } => "unmap",
            _ => "other",
        })
        .collect();
    let back = apply(
        &lost,
        &E::LenderBack {
            workflow: WorkflowId(9),
        },
        0,
    )
    .expect("legal");
    let returned: Vec<&str> = back
        .1
        .iter()
        .filter(|c| matches!(c, Command::StartReturn { .. }))
        .map(|_| "return")
        .collect();
    assert_eq!(
        (
            lost.name(),
            lost.leases().len(),
            told,
            back.0.name(),
            returned
        ),
        (
            "lost",
            0,
            vec!["notify", "unmap"],
            "returning",
            vec!["return"]
        )
    );
}
