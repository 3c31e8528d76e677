//! `recovery`: injected faults, each of which must end in a correct state.

use pcipool_fabric::Fdid;
use pcipool_qualify::AccessModel;

use super::{Options, Progress, Recorder, TENANT, audit_evidence, cannot_tell, whole_lendable};
use crate::report::{Check, Suite};
use crate::target::Target;

/// The outcome of one recovery scenario on a device: no lease left, no mapping left for it, the device
/// in one of the states that count as a correct end.
fn settled(
    r: &mut Recorder<'_>,
    t: &dyn Target,
    scenario: &str,
    fdid: Fdid,
    lease: Option<pcipool_fabric::LeaseId>,
    allowed: &[&str],
    micros: u64,
) {
    let name = fdid.to_string();
    let state = t.state(fdid).unwrap_or_default();
    r.check(
        &format!("{scenario}: device ends {}", allowed.join(" or ")),
        &name,
        allowed.contains(&state.as_str()),
        vec![format!("state {state}")],
        micros,
    );
    let leases = t.leases_of(fdid);
    r.check(
        &format!("{scenario}: no lease left"),
        &name,
        leases.as_ref().is_ok_and(Vec::is_empty),
        vec![match &leases {
            Ok(leases) => format!("leases {leases:?}"),
            Err(why) => cannot_tell("leases", why),
        }],
        0,
    );
    if let Some(lease) = lease {
        let mapped = t.mapped_leases().map(|m| m.contains(&lease.0));
        r.check(
            &format!("{scenario}: no mapping left"),
            &name,
            mapped == Ok(false),
            vec![match &mapped {
                Ok(mapped) => format!("{lease} still mapped on the fabric: {mapped}"),
                Err(why) => cannot_tell("fabric mappings", why),
            }],
            0,
        );
    }
    if state == "quarantined" {
        let _ = t.clear_quarantine(fdid);
    }
}

/// `recovery`: injected faults, each of which must end in a correct state within the lease deadline
/// with nothing lost: a borrower crash and a borrower link down (the lease expires, the lender fences and
/// takes the device back), a lender crash (the device is `lost`, and returns fenced when the lender is
/// back), a device hang and a failed reset during a return (the return escalates or quarantines), agents
/// killed (a lend to a host whose agent is dead is undone; a device whose lender's agent is dead is lost
/// until it is back, then fenced), and a controller killed in the middle of a lend (the next controller
/// finishes it from the journal).
pub fn recovery(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let devices = whole_lendable(t, o);
    let mut r = Recorder::new(Suite::Recovery, progress, 7 * devices.len() as u64, failed);
    if devices.is_empty() {
        r.check("a lendable device", "pool", false, vec!["none".into()], 0);
        return r.checks;
    }
    for fdid in devices {
        recover_device(t, &mut r, fdid);
    }
    r.check(
        "audit chain intact after every fault",
        "pool",
        t.audit_intact(),
        vec!["the audit hash chain does not verify".into()],
        0,
    );
    r.checks
}

/// Injects a fault; a target that cannot is a failed check (the scenario proves nothing without it).
fn inject(t: &dyn Target, r: &mut Recorder<'_>, fault: crate::target::Fault) {
    if let Err(e) = t.inject(fault) {
        r.check(&format!("inject {fault:?}"), "pool", false, vec![e], 0);
    }
}

/// The recovery scenarios on one device.
fn recover_device(t: &dyn Target, r: &mut Recorder<'_>, fdid: Fdid) {
    use crate::target::Fault;
    const LEASE_SECS: u64 = 2;
    let name = fdid.to_string();
    let Some(borrower) = t.borrowers(fdid).first().copied() else {
        r.check("a borrower", &name, false, vec!["no other host".into()], 0);
        return;
    };
    let lend = |r: &mut Recorder<'_>, scenario: &str| match t.borrow_for(
        TENANT,
        fdid,
        AccessModel::Lend,
        borrower,
        Some(LEASE_SECS),
    ) {
        Ok(h) => Some(h.lease),
        Err(e) => {
            r.check(&format!("{scenario}: lend"), &name, false, vec![e], 0);
            None
        }
    };
    let expire = LEASE_SECS * 1000 + 500;

    // Borrower crash: its lease runs out, the lender fences (unmaps first) and resets.
    if let Some(lease) = lend(r, "borrower crash") {
        inject(t, r, Fault::HostCrash(borrower));
        t.advance(expire);
        settled(r, t, "borrower crash", fdid, Some(lease), &["available"], 0);
        inject(t, r, Fault::HostBack(borrower));
        t.advance(1);
    }
    r.step();

    // Borrower link down: same deadline, same end.
    if let Some(lease) = lend(r, "link down") {
        inject(t, r, Fault::LinkDown(borrower));
        t.advance(expire);
        settled(r, t, "link down", fdid, Some(lease), &["available"], 0);
        inject(t, r, Fault::LinkUp(borrower));
        t.advance(1);
    }
    r.step();

    // Lender crash: the device is lost while the lender is away, then fenced and returned.
    if let Some(lease) = lend(r, "lender crash") {
        inject(t, r, Fault::HostCrash(fdid.node));
        t.advance(1);
        let state = t.state(fdid).unwrap_or_default();
        r.check(
            "lender crash: device marked lost",
            &name,
            state == "lost",
            vec![format!("state {state}")],
            0,
        );
        inject(t, r, Fault::HostBack(fdid.node));
        t.advance(1);
        settled(r, t, "lender crash", fdid, Some(lease), &["available"], 0);
    }
    r.step();

    // Device hang while lent: the release resets it back to life or quarantines it.
    if let Err(why) = t.can_inject(Fault::DeviceHang(fdid)) {
        r.not_run("device hang", &name, why);
    } else if let Some(lease) = lend(r, "device hang") {
        inject(t, r, Fault::DeviceHang(fdid));
        let released = t.release(Some(TENANT), lease);
        r.check(
            "device hang: release answered",
            &name,
            released.is_ok(),
            vec![format!("{released:?}")],
            0,
        );
        settled(
            r,
            t,
            "device hang",
            fdid,
            Some(lease),
            &["available", "quarantined"],
            0,
        );
    }
    r.step();

    // A reset that fails during the return: escalated once, then the device is back (or quarantined).
    if let Err(why) = t.can_inject(Fault::ResetFails(fdid)) {
        r.not_run("reset failure", &name, why);
    } else if let Some(lease) = lend(r, "reset failure") {
        let head = t.audit_head();
        inject(t, r, Fault::ResetFails(fdid));
        let _ = t.release(Some(TENANT), lease);
        let escalated = t
            .audit_after(head)
            .is_ok_and(|a| a.iter().any(|a| a.action == "return_failed"));
        r.check(
            "reset failure: the return escalated",
            &name,
            escalated,
            audit_evidence(t, head, &name),
            0,
        );
        settled(
            r,
            t,
            "reset failure",
            fdid,
            Some(lease),
            &["available", "quarantined"],
            0,
        );
    }
    r.step();

    // The borrower's agent is killed before a lend: the lend cannot finish on the borrower and is
    // undone; then the lender's agent is killed while the device is lent: the device is lost until the
    // agent is back, then fenced and returned.
    inject(t, r, Fault::AgentKill(borrower));
    let during = t.borrow(TENANT, fdid, AccessModel::Lend, borrower);
    r.check(
        "borrower agent killed: the lend is refused",
        &name,
        during.is_err(),
        vec![format!("{during:?}")],
        0,
    );
    settled(
        r,
        t,
        "borrower agent killed",
        fdid,
        during.as_ref().ok().map(|h| h.lease),
        &["available"],
        0,
    );
    inject(t, r, Fault::AgentBack(borrower));
    t.advance(1);
    if let Some(lease) = lend(r, "lender agent killed") {
        inject(t, r, Fault::AgentKill(fdid.node));
        t.advance(1);
        let state = t.state(fdid).unwrap_or_default();
        r.check(
            "lender agent killed: device marked lost",
            &name,
            state == "lost",
            vec![format!("state {state}")],
            0,
        );
        inject(t, r, Fault::AgentBack(fdid.node));
        t.advance(1);
        settled(
            r,
            t,
            "lender agent killed",
            fdid,
            Some(lease),
            &["available"],
            0,
        );
    }
    r.step();

    // The controller is killed just before the borrower hot-adds the device: the next one finishes the
    // lend from its journal; the lease is then released normally.
    match t.kill_controller_during_lend(fdid, borrower, pcipool_backend::Step::BorrowerHotAdd) {
        Ok(()) => {
            let seen = t.leases_of(fdid);
            let leases = seen.clone().unwrap_or_default();
            let state = t.state(fdid).unwrap_or_default();
            let mapped = leases
                .first()
                .is_some_and(|l| t.mapped_leases().is_ok_and(|m| m.contains(&l.0)));
            r.check(
                "controller killed mid-lend: the next controller finished the lend",
                &name,
                state == "lent" && leases.len() == 1 && mapped,
                vec![format!("state {state}, leases {seen:?}, mapped {mapped}")],
                0,
            );
            let lease = leases.first().copied();
            if let Some(l) = lease {
                let _ = t.release(Some(TENANT), l);
            }
            settled(
                r,
                t,
                "controller killed mid-lend",
                fdid,
                lease,
                &["available"],
                0,
            );
        }
        Err(e) => {
            r.check("controller killed mid-lend", &name, false, vec![e], 0);
        }
    }
    r.step();
}
