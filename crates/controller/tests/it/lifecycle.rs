//! Lend, return, expiry, fencing and restart of single leases and gangs.

use pcipool_agent::Local;
use pcipool_backend::{Executor, Step, StepContext, StepError, StepErrorKind, StepOutput};
use pcipool_controller::{ControlError, Controller};
use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::policy::Policy;
use pcipool_pool::schedule::{Request, Selector};
use pcipool_pool::{AuditChain, DeviceState};
use pcipool_qualify::AccessModel;
use pcipool_sim::Sim;
use pcipool_store::{SqliteStore, Store};

use crate::support::*;

#[test]
fn borrow_lends_and_binds_native_driver_on_borrower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let granted = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted");
    let g = &granted[0];
    let shadow = sim
        .host(BORROWER)
        .and_then(|h| h.devices.get(&g.attached.expect("the lend reports where")))
        .and_then(|d| d.driver.clone());
    assert_eq!(
        (
            state(&ctl, g.fdid),
            shadow,
            sim.fabric.mappings().count() >= 2
        ),
        ("lent", Some("nvme".to_owned()), true)
    );
}

#[test]
fn release_returns_device_unmapped_and_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    ctl.release(&mut Local(&mut sim), "admin", Some("t"), g.lease_id, 10)
        .expect("released");
    let clean = sim
        .device(g.fdid.node, g.fdid.bdf)
        .map(|d| d.dev.is_reset_state());
    // The lender's own driver is bound again, as before the lend.
    let local = sim
        .device(g.fdid.node, g.fdid.bdf)
        .map(|d| d.driver.clone());
    let audit = AuditChain::verify(&ctl.store().all_audit().expect("audit")).is_ok();
    assert_eq!(
        (
            state(&ctl, g.fdid),
            sim.fabric.is_idle(),
            sim.host(BORROWER).map(|h| h.devices.len()),
            clean,
            local,
            audit
        ),
        (
            "available",
            true,
            Some(0),
            Some(true),
            Some(Some("nvme".to_owned())),
            true
        )
    );
}

#[test]
fn second_exclusive_borrow_of_the_same_device_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    let mut again = nvme(1);
    again.selector.fdid = Some(g.fdid);
    let err = ctl
        .borrow(&mut Local(&mut sim), "admin", "u", again, None, 0)
        .map(|_| ());
    assert_eq!(err.map_err(|e| e.code()), Err("CONFLICT"));
}

#[test]
fn tenant_cannot_release_another_tenants_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "alice", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    let err = ctl.release(&mut Local(&mut sim), "bob", Some("bob"), g.lease_id, 1);
    assert!(matches!(err, Err(ControlError::NotYours(_))));
}

#[test]
fn failed_lend_is_compensated_and_device_stays_available() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let nvme_fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    sim.hang_next_unbind(nvme_fdid.node, nvme_fdid.bdf);
    let mut r = nvme(1);
    r.selector.fdid = Some(nvme_fdid);
    let err = ctl.borrow(&mut Local(&mut sim), "admin", "t", r, None, 0);
    assert_eq!(
        (
            err.map_err(|e| e.code()).map(|_| ()),
            state(&ctl, nvme_fdid),
            sim.fabric.is_idle()
        ),
        (Err("LEND_FAILED"), "available", true)
    );
}

#[test]
fn expired_lease_is_fenced_and_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), Some(1), 0)
        .expect("granted")
        .remove(0);
    let expired = ctl.tick(&mut Local(&mut sim), 5_000).expect("tick");
    assert_eq!(
        (expired, state(&ctl, g.fdid), sim.fabric.is_idle()),
        (1, "available", true)
    );
}

#[test]
fn heartbeat_with_stale_epoch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    let err = ctl
        .heartbeat(
            &mut Local(&mut sim),
            g.lease_id,
            pcipool_pool::Epoch(g.epoch.0 - 1),
            1,
        )
        .map_err(|e| e.code());
    assert_eq!(err, Err("STALE_EPOCH"));
}

#[test]
fn failed_reset_escalates_then_device_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    sim.fail_next_reset(g.fdid.node, g.fdid.bdf);
    ctl.release(&mut Local(&mut sim), "admin", None, g.lease_id, 1)
        .expect("released");
    let escalated = ctl
        .store()
        .all_audit()
        .expect("audit")
        .iter()
        .any(|r| r.action == "return_failed");
    assert_eq!((state(&ctl, g.fdid), escalated), ("available", true));
}

#[test]
fn gang_takes_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    // The lab has two NVMe drives; three cannot be had, and neither may be left taken.
    let err = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(3), None, 0)
        .map_err(|e| e.code())
        .map(|_| ());
    let taken = ctl.leases().expect("leases").len();
    assert_eq!((err, taken), (Err("NO_CAPACITY"), 0));
}

/// An executor that dies (panics) before a chosen step, like a controller killed mid-workflow.
struct Crashing<'a> {
    sim: &'a mut Sim,
    die_at: Step,
}

impl Executor for Crashing<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        assert!(
            step != self.die_at,
            "simulated controller crash before {step:?}"
        );
        Local(&mut *self.sim).run(step, ctx)
    }
}

#[test]
fn restart_resumes_an_interrupted_lend_from_its_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut exec = Crashing {
            sim: &mut sim,
            die_at: Step::BorrowerHotAdd,
        };
        ctl.borrow(&mut exec, "admin", "t", nvme(1), None, 0)
    }));
    drop(ctl);
    // A new controller process over the same file.
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("reopen");
    let ctl = Controller::new(store, Policy::default(), sim.fabric.topology().clone());
    let resumed = ctl.resume(&mut Local(&mut sim), 10).expect("resume");
    let lent: Vec<&str> = ctl
        .leases()
        .expect("leases")
        .iter()
        .map(|(_, _, s)| *s)
        .collect();
    assert_eq!((crashed.is_err(), resumed, lent), (true, 1, vec!["lent"]));
}

#[test]
fn shared_model_admits_several_borrowers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
    let shared = |b: u32| Request {
        selector: Selector {
            fdid: Some(fdid),
            ..Selector::default()
        },
        count: 1,
        model: AccessModel::Shared,
        borrower: NodeId(b),
        max_sharers: None,
        request_id: None,
    };
    ctl.borrow(&mut Local(&mut sim), "admin", "a", shared(3), None, 0)
        .expect("first sharer");
    ctl.borrow(&mut Local(&mut sim), "admin", "b", shared(4), None, 0)
        .expect("second sharer");
    assert_eq!(
        ctl.store().device(fdid).expect("read").map(
            |d| matches!(d.value.state, DeviceState::Shared { ref leases, .. } if leases.len() == 2)
        ),
        Some(true)
    );
}

#[test]
fn restart_onto_fresh_hardware_fences_stale_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), None, 0)
        .expect("granted")
        .remove(0);
    drop(ctl);
    // The lab restarted: hardware is back to power-on, the store still says lent.
    let mut fresh = self::sim();
    let store = SqliteStore::open(&dir.path().join("pool.db")).expect("reopen");
    let ctl = Controller::new(store, Policy::default(), fresh.fabric.topology().clone());
    let fenced = ctl
        .reconcile(&mut Local(&mut fresh), 10)
        .expect("reconcile");
    assert_eq!(
        (
            fenced,
            state(&ctl, g.fdid),
            ctl.leases().expect("leases").len()
        ),
        (1, "available", 0)
    );
}

/// An executor whose borrower host stopped answering.
struct BorrowerGone<'a> {
    sim: &'a mut Sim,
}

impl Executor for BorrowerGone<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        if step.side() == pcipool_backend::Side::Borrower {
            return Err(StepError::new(
                StepErrorKind::HostDown,
                format!("{} unreachable", ctx.borrower),
            ));
        }
        Local(&mut *self.sim).run(step, ctx)
    }
}

#[test]
fn a_vanished_borrower_does_not_block_the_fenced_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, mut sim) = setup(dir.path());
    let g = ctl
        .borrow(&mut Local(&mut sim), "admin", "t", nvme(1), Some(1), 0)
        .expect("granted")
        .remove(0);
    let expired = ctl
        .tick(&mut BorrowerGone { sim: &mut sim }, 5_000)
        .expect("tick");
    // The lender side unmapped and reset without the borrower's help; the journal says what was skipped.
    let journal_id = ctl
        .store()
        .audit_records(1, 10_000)
        .expect("audit")
        .iter()
        .filter_map(|r| {
            r.action
                .strip_prefix("workflow ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .expect("a return journal");
    let journal = ctl.journal(journal_id).expect("journal").expect("exists");
    let skipped = journal
        .steps
        .iter()
        .filter(|s| matches!(s.status, pcipool_pool::workflow::StepStatus::Skipped(_)))
        .count();
    let clean = sim
        .device(g.fdid.node, g.fdid.bdf)
        .map(|d| d.dev.is_reset_state());
    assert_eq!(
        (
            expired,
            state(&ctl, g.fdid),
            sim.fabric.is_idle(),
            clean,
            skipped,
            journal.outcome
        ),
        (
            1,
            "available",
            true,
            Some(true),
            2,
            Some(pcipool_pool::workflow::WorkflowOutcome::Succeeded)
        )
    );
}
