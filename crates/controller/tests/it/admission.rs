//! Quotas, placement budgets, sharing limits, keyed requests, concurrency and refusals.

use pcipool_agent::Local;
use pcipool_backend::{Executor, Step, StepContext, StepError, StepOutput};
use pcipool_controller::{ControlError, Controller};
use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::AuditChain;
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{DeviceClass, Request, Selector};
use pcipool_qualify::AccessModel;
use pcipool_sim::Sim;
use pcipool_store::{SqliteStore, Store};

use crate::support::*;

#[test]
fn class_quota_also_binds_requests_that_name_a_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim0 = sim();
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("store");
    let policy =
        Policy::parse("[[tenant]]\nname = \"acme\"\nquota = { nvme = 1 }\n").expect("policy");
    let ctl = Controller::new(store, policy, sim0.fabric.topology().clone());
    for info in infos(&sim0) {
        ctl.register(info, vec![], 0).expect("register");
    }
    let mut sim = sim0;
    let first = ctl
        .borrow(&mut Local(&mut sim), "acme", "acme", nvme(1), None, 0)
        .expect("within quota")
        .remove(0);
    // The other NVMe drive, asked for by address rather than by class.
    let other = ctl
        .store()
        .devices()
        .expect("devices")
        .into_iter()
        .map(|d| d.value.info)
        .find(|i| DeviceClass::of(i.class) == DeviceClass::Nvme && i.fdid != first.fdid)
        .expect("a second NVMe drive");
    let by_address = Request {
        selector: Selector {
            fdid: Some(other.fdid),
            ..Selector::default()
        },
        count: 1,
        model: AccessModel::Lend,
        borrower: BORROWER,
        max_sharers: None,
        request_id: None,
    };
    let err = ctl
        .borrow(&mut Local(&mut sim), "acme", "acme", by_address, None, 0)
        .map(|_| ())
        .map_err(|e| e.code());
    assert_eq!(
        (err, state(&ctl, other.fdid)),
        (Err("OVER_QUOTA"), "available")
    );
}

#[test]
fn borrower_heartbeats_renew_late_and_refuse_what_is_not_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), Some(10), 0)
        .expect("granted")
        .remove(0);
    let records = |ctl: &Controller<SqliteStore>| ctl.store().all_audit().expect("audit").len();
    let expiry = |ctl: &Controller<SqliteStore>| {
        ctl.leases()
            .expect("leases")
            .first()
            .map(|(_, l, _)| l.expires_at)
    };
    let before = records(&ctl);
    // Early in the lease: alive, nothing written.
    let early = ctl
        .borrower_heartbeat(
            &mut Local(&mut sim),
            BORROWER,
            &[(g.lease_id, g.epoch)],
            1_000,
        )
        .expect("heartbeat");
    let quiet = records(&ctl) == before;
    // Past half of the 10 s lease: renewed from now.
    let late = ctl
        .borrower_heartbeat(
            &mut Local(&mut sim),
            BORROWER,
            &[(g.lease_id, g.epoch)],
            6_000,
        )
        .expect("heartbeat");
    let renewed_to = expiry(&ctl);
    let stale = ctl
        .borrower_heartbeat(
            &mut Local(&mut sim),
            BORROWER,
            &[(g.lease_id, pcipool_pool::Epoch(g.epoch.0 - 1))],
            6_500,
        )
        .expect("heartbeat");
    let other_host = ctl
        .borrower_heartbeat(
            &mut Local(&mut sim),
            pcipool_fabric::NodeId(BORROWER.0 + 1),
            &[(g.lease_id, g.epoch)],
            6_500,
        )
        .expect("heartbeat");
    assert_eq!(
        (early, quiet, late, renewed_to, stale.1, other_host.1),
        (
            (vec![g.lease_id], vec![]),
            true,
            (vec![g.lease_id], vec![]),
            Some(16_000),
            vec![g.lease_id],
            vec![g.lease_id]
        )
    );
}

#[test]
fn placement_respects_the_link_bandwidth_budget() {
    let gpu = Request {
        selector: Selector {
            class: Some(DeviceClass::Gpu),
            ..Selector::default()
        },
        count: 1,
        model: AccessModel::Lend,
        borrower: BORROWER,
        max_sharers: None,
        request_id: None,
    };
    let run = |pct: u32| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sim = sim();
        let store = SqliteStore::open(&dir.path().join("pool.db")).expect("store");
        let policy =
            Policy::parse(&format!("link_oversubscription_pct = {pct}\n")).expect("policy");
        let ctl = Controller::new(store, policy, sim.fabric.topology().clone());
        for info in infos(&sim) {
            ctl.register(info, vec![], 0).expect("register");
        }
        let first = ctl
            .borrow(&mut Local(&mut sim), "admin", "t", gpu.clone(), None, 0)
            .map(|g| g.len());
        let second = ctl
            .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
            .map(|g| g.len())
            .map_err(|e| (e.code(), e.to_string().contains("MB/s")));
        (first.is_ok(), second)
    };
    // The borrower's link is x8 gen3 (7,880 MB/s) and so is each device's: at 100 % the GPU fills it.
    assert_eq!(
        (run(100), run(200)),
        ((true, Err(("NO_CAPACITY", true))), (true, Ok(1)))
    );
}

#[test]
fn the_first_sharer_sets_how_many_may_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    let shared = |b: u32, max: Option<u32>| Request {
        selector: Selector {
            fdid: Some(fdid),
            ..Selector::default()
        },
        count: 1,
        model: AccessModel::Shared,
        borrower: NodeId(b),
        max_sharers: max,
        request_id: None,
    };
    let zero = ctl
        .borrow(
            &mut Local(&mut sim),
            "admin",
            "a",
            shared(3, Some(0)),
            None,
            0,
        )
        .map(|_| ())
        .map_err(|e| e.code());
    let first = ctl
        .borrow(
            &mut Local(&mut sim),
            "admin",
            "a",
            shared(3, Some(2)),
            None,
            0,
        )
        .map(|g| g.len());
    // A later sharer cannot raise the limit the first one set.
    let second = ctl
        .borrow(
            &mut Local(&mut sim),
            "admin",
            "b",
            shared(4, Some(8)),
            None,
            0,
        )
        .map(|g| g.len());
    // Full, and an exclusive borrow while others share: refused at once as held (no retries).
    let third = ctl
        .borrow(&mut Local(&mut sim), "admin", "c", shared(2, None), None, 0)
        .map(|_| ())
        .map_err(|e| (e.code(), matches!(e, ControlError::Held(_))));
    let exclusive = ctl
        .borrow(
            &mut Local(&mut sim),
            "admin",
            "c",
            shared(2, Some(1)),
            None,
            0,
        )
        .map(|_| ())
        .map_err(|e| (e.code(), matches!(e, ControlError::Held(_))));
    assert_eq!(
        (zero, first.ok(), second.ok(), third, exclusive),
        (
            Err("BAD_REQUEST"),
            Some(1),
            Some(1),
            Err(("CONFLICT", true)),
            Err(("CONFLICT", true))
        )
    );
}

#[test]
fn a_keyed_request_repeated_gets_the_same_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let keyed = |key: &str| Request {
        request_id: Some(key.to_owned()),
        ..nvme(1)
    };
    let first = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", keyed("job-7"), None, 0)
        .expect("granted");
    let again = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", keyed("job-7"), None, 1)
        .expect("replayed");
    // The key belongs to its tenant: another tenant's same key is another request.
    let other_tenant = ctl
        .borrow(&mut Local(&mut sim), "admin", "u", keyed("job-7"), None, 2)
        .expect("granted");
    let held = ctl.leases().expect("leases").len();
    ctl.release(
        &mut Local(&mut sim),
        "admin",
        Some("t"),
        first[0].lease_id,
        3,
    )
    .expect("released");
    // Once its lease is gone, the key asks for a new one.
    let after_release = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", keyed("job-7"), None, 4)
        .expect("granted");
    let bad = ctl
        .borrow(
            &mut Local(&mut sim),
            "admin",
            "t",
            keyed("has space"),
            None,
            5,
        )
        .map(|_| ())
        .map_err(|e| e.code());
    assert_eq!(
        (
            again[0].lease_id == first[0].lease_id,
            other_tenant[0].lease_id != first[0].lease_id,
            held,
            after_release[0].lease_id != first[0].lease_id,
            bad
        ),
        (true, true, 2, true, Err("BAD_REQUEST"))
    );
}

/// For decisions that need no hardware (renewals): any step at all fails the test.
struct NoSteps;

impl Executor for NoSteps {
    fn run(&mut self, step: Step, _: &StepContext) -> Result<StepOutput, StepError> {
        panic!("a renewal asked for a step: {step:?}")
    }
}

/// Runs steps on a simulator shared by several threads.
struct Shared<'a>(&'a std::sync::Mutex<Sim>);

impl Executor for Shared<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let mut sim = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Local(&mut *sim).run(step, ctx)
    }
}

#[test]
fn concurrent_requests_cannot_jointly_overrun_a_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim0 = sim();
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("store");
    // 100 %: the borrower's x8 link carries exactly one x8 device at a time.
    let policy = Policy::parse("link_oversubscription_pct = 100\n").expect("policy");
    let ctl = Controller::new(store, policy, sim0.fabric.topology().clone());
    for info in infos(&sim0) {
        ctl.register(info, vec![], 0).expect("register");
    }
    let sim = std::sync::Mutex::new(sim0);
    let any = |_: u32| Request {
        selector: Selector::default(),
        ..nvme(1)
    };
    let results: Vec<Result<usize, &'static str>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (ctl, sim) = (&ctl, &sim);
                s.spawn(move || {
                    ctl.borrow(&mut Shared(sim), "admin", "t", any(i), None, 0)
                        .map(|g| g.len())
                        .map_err(|e| e.code())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let granted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| **r == Err("NO_CAPACITY")).count();
    assert_eq!((granted, refused), (1, 3), "{results:?}");
}

#[test]
fn a_gang_whose_lend_fails_gives_back_the_members_already_lent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    // The drive with a bound driver: its unbind hangs, so its lend fails and is compensated.
    let stuck: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    sim.hang_next_unbind(stuck.node, stuck.bdf);
    let err = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(2), None, 0)
        .map(|_| ())
        .map_err(|e| e.code());
    let states: Vec<&str> = ["n1:0000:03:00.0", "n1:0000:04:00.0"]
        .iter()
        .map(|f| state(&ctl, f.parse().expect("fdid")))
        .collect();
    assert_eq!(
        (
            err,
            states,
            ctl.leases().expect("leases").len(),
            sim.fabric.is_idle()
        ),
        (Err("LEND_FAILED"), vec!["available", "available"], 0, true)
    );
}

#[test]
fn refused_requests_and_actions_are_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let too_many = ctl.borrow(&mut Local(&mut sim), "alice", "t", nvme(9), None, 0);
    let unknown = ctl.release(
        &mut Local(&mut sim),
        "bob",
        None,
        pcipool_fabric::LeaseId(999),
        1,
    );
    let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    let illegal = ctl.operate(
        &mut Local(&mut sim),
        fdid,
        &pcipool_pool::Event::ClearQuarantine,
        "ops",
        2,
    );
    let audit = ctl.store().all_audit().expect("audit");
    let refusals: Vec<(String, String, String)> = audit
        .iter()
        .filter(|r| r.result.starts_with("refused"))
        .map(|r| {
            (
                r.actor.clone(),
                r.action.clone(),
                r.result.split(':').next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        (
            too_many.is_err() && unknown.is_err() && illegal.is_err(),
            refusals,
            AuditChain::verify(&audit).is_ok()
        ),
        (
            true,
            vec![
                (
                    "alice".into(),
                    "borrow".into(),
                    "refused NO_CAPACITY".into()
                ),
                (
                    "bob".into(),
                    "release".into(),
                    "refused NO_SUCH_LEASE".into()
                ),
                (
                    "ops".into(),
                    "clear_quarantine".into(),
                    "refused ILLEGAL_TRANSITION".into()
                ),
            ],
            true
        )
    );
}

#[test]
fn a_release_waits_for_the_borrowers_users_then_refuses_rather_than_forcing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let ctl = ctl.with_release_wait(100);
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    sim.set_users(BORROWER, g.attached.expect("lent"), 2);
    let busy = ctl
        .release(&mut Local(&mut sim), "admin", Some("t"), g.lease_id, 1)
        .map_err(|e| e.code());
    let still = (state(&ctl, g.fdid), sim.fabric.is_idle());
    sim.set_users(BORROWER, g.attached.expect("lent"), 0);
    let released = ctl
        .release(&mut Local(&mut sim), "admin", Some("t"), g.lease_id, 2)
        .map_err(|e| e.code());
    assert_eq!(
        (busy, still, released, state(&ctl, g.fdid)),
        (Err("BUSY"), ("lent", false), Ok(()), "available")
    );
}

/// Sharers renewing their leases of one device at the same moment each change the same device row:
/// the loser of a race applies its renewal again to what the winner left instead of failing.
#[test]
fn concurrent_renewals_of_one_shared_device_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    let leases: Vec<(pcipool_fabric::LeaseId, pcipool_pool::Epoch)> = (2..=4)
        .chain([2])
        .enumerate()
        .map(|(i, b)| {
            let g = ctl
                .borrow(
                    &mut Local(&mut sim),
                    "admin",
                    &format!("t{i}"),
                    Request {
                        selector: Selector {
                            fdid: Some(fdid),
                            ..Selector::default()
                        },
                        count: 1,
                        model: AccessModel::Shared,
                        borrower: NodeId(b),
                        max_sharers: Some(4),
                        request_id: None,
                    },
                    Some(10),
                    0,
                )
                .expect("shared");
            (g[0].lease_id, g[0].epoch)
        })
        .collect();
    let failures: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = leases
            .iter()
            .enumerate()
            .map(|(i, &(lease, epoch))| {
                let ctl = &ctl;
                scope.spawn(move || {
                    // Each renewal comes when less than half the lease is left, so each one writes.
                    (1..=20u64)
                        .filter(|k| {
                            ctl.renew(
                                &mut NoSteps,
                                "app",
                                Some(&format!("t{i}")),
                                lease,
                                epoch,
                                k * 6_000,
                            )
                            .is_err()
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(usize::MAX))
            .sum()
    });
    assert_eq!((leases.len(), failures), (4, 0));
}

/// A lend whose borrower cannot bind the driver, on a device that no reset after the lend's first one
/// brings back.
struct UnresettableLend<'a> {
    sim: &'a mut Sim,
    resets: u32,
}

impl Executor for UnresettableLend<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        match step {
            Step::BorrowerBind => Err(StepError::failed("driver probe failed")),
            Step::LenderReset | Step::LenderResetEscalated if self.resets > 0 => {
                Err(StepError::failed("device did not come back"))
            }
            Step::LenderReset => {
                self.resets += 1;
                Local(&mut *self.sim).run(step, ctx)
            }
            _ => Local(&mut *self.sim).run(step, ctx),
        }
    }
}

#[test]
fn a_lend_whose_compensation_cannot_reset_quarantines_in_one_transition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let head = ctl
        .store()
        .last_audit()
        .expect("audit")
        .map_or(0, |r| r.seq);
    let err = ctl
        .borrow(
            &mut UnresettableLend {
                sim: &mut sim,
                resets: 0,
            },
            "admin",
            "t",
            nvme(1),
            None,
            0,
        )
        .map_err(|e| e.code());
    let records = ctl.store().audit_records(head + 1, 10_000).expect("audit");
    let decisions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.actor == "controller" && !r.action.starts_with("workflow "))
        .map(|r| (r.action.clone(), r.target.clone()))
        .collect();
    let fdid = decisions
        .first()
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let quarantined = ctl
        .store()
        .devices()
        .expect("devices")
        .iter()
        .filter(|d| d.value.state.name() == "quarantined")
        .count();
    assert_eq!(
        (err, decisions, quarantined),
        (
            Err("LEND_FAILED"),
            vec![("lend_failed".to_owned(), fdid)],
            1
        ),
        "one decision takes the device from lending to quarantined, with no second write to lose"
    );
}
