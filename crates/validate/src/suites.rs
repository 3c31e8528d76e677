//! The suites. Each drives a [`Target`] and returns checks; a check carries the facts that show why it
//! failed. Positive controls sit next to the negative ones (the holder must reach its device before a
//! non-holder being refused means anything).

use std::time::Instant;

use pcipool_fabric::Fdid;
use pcipool_qualify::AccessModel;

use crate::report::{Check, Suite};
use crate::target::{Held, Target};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Suites, in order.
    pub suites: Vec<Suite>,
    /// Assign/release cycles per device and model.
    pub cycles: u32,
    /// Only these devices (empty: every pooled device).
    pub devices: Vec<Fdid>,
    /// Where the data-path suite reaches the pool's data path (None: the target offers none).
    pub data_path: Option<crate::datapath::DataPathAccess>,
}

/// Progress, for a live display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Suite running.
    pub suite: Suite,
    /// Steps done in it.
    pub done: u64,
    /// Steps it will take.
    pub total: u64,
    /// Checks failed so far (all suites).
    pub failed: usize,
}

/// The suites built so far (the others are refused by name until they are).
pub const BUILT: [Suite; 7] = Suite::ALL;

const TENANT: &str = "validate";

pub(crate) fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub(crate) struct Recorder<'a> {
    suite: Suite,
    pub(crate) checks: Vec<Check>,
    progress: &'a mut dyn FnMut(&Progress),
    done: u64,
    pub(crate) total: u64,
    failed_before: usize,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(
        suite: Suite,
        progress: &'a mut dyn FnMut(&Progress),
        total: u64,
        failed_before: usize,
    ) -> Self {
        Self {
            suite,
            checks: Vec::new(),
            progress,
            done: 0,
            total,
            failed_before,
        }
    }

    pub(crate) fn check(
        &mut self,
        name: &str,
        target: &str,
        passed: bool,
        evidence: Vec<String>,
        micros: u64,
    ) -> bool {
        self.checks.push(Check {
            suite: self.suite,
            name: name.to_owned(),
            target: target.to_owned(),
            passed,
            evidence: if passed { Vec::new() } else { evidence },
            micros,
        });
        passed
    }

    /// A measurement: passes, and keeps its figures as evidence for the report.
    pub(crate) fn measure(&mut self, name: &str, target: &str, figures: Vec<String>, micros: u64) {
        self.checks.push(Check {
            suite: self.suite,
            name: name.to_owned(),
            target: target.to_owned(),
            passed: true,
            evidence: figures,
            micros,
        });
    }

    pub(crate) fn step(&mut self) {
        self.done += 1;
        let failed = self.failed_before + self.checks.iter().filter(|c| !c.passed).count();
        (self.progress)(&Progress {
            suite: self.suite,
            done: self.done,
            total: self.total,
            failed,
        });
    }
}

/// The devices to exercise and, for each, the models to cycle it under (exclusive models first).
pub(crate) fn plan(t: &dyn Target, o: &Options) -> Vec<(Fdid, Vec<AccessModel>)> {
    t.devices()
        .into_iter()
        .filter(|d| o.devices.is_empty() || o.devices.contains(&d.fdid))
        .filter(|d| !d.models.is_empty())
        .map(|d| (d.fdid, d.models))
        .collect()
}

/// Whole devices (no VFs) that can be lent exclusively.
fn whole_lendable(t: &dyn Target, o: &Options) -> Vec<Fdid> {
    plan(t, o)
        .into_iter()
        .filter(|(f, models)| f.vf.is_none() && models.contains(&AccessModel::Lend))
        .map(|(f, _)| f)
        .collect()
}

/// Audit records about `target` after `seq`, as evidence lines.
fn audit_evidence(t: &dyn Target, seq: u64, target: &str) -> Vec<String> {
    match t.audit_after(seq) {
        Ok(records) => records
            .into_iter()
            .filter(|a| a.target == target)
            .map(|a| format!("audit #{} {} {}: {}", a.seq, a.actor, a.action, a.result))
            .collect(),
        Err(why) => vec![format!("audit records: cannot tell: {why}")],
    }
}

/// The evidence line of an observation the target could not make.
fn cannot_tell(what: &str, why: &str) -> String {
    format!("{what}: cannot tell: {why}")
}

/// `cycles`: N assign/release cycles per device and model. After each: the device is `available`
/// again, at its post-reset baseline, its lease left no mapping behind, every adapter has the resources
/// it had before, and the lender's own driver is as it was.
pub fn cycles(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let plan = plan(t, o);
    let total: u64 = plan
        .iter()
        .map(|(_, m)| m.len() as u64 * u64::from(o.cycles))
        .sum();
    let mut r = Recorder::new(Suite::Cycles, progress, total, failed);
    for (fdid, models) in plan {
        let borrowers = t.borrowers(fdid);
        let name = fdid.to_string();
        for model in models {
            for n in 0..o.cycles {
                let Some(borrower) = borrowers
                    .get(usize::try_from(n).unwrap_or(0) % borrowers.len().max(1))
                    .copied()
                else {
                    r.check(
                        "has a borrower",
                        &name,
                        false,
                        vec!["no other host".into()],
                        0,
                    );
                    r.step();
                    continue;
                };
                let free_before = t.free_resources();
                let driver_before = t.local_driver(fdid);
                let head = t.audit_head();
                let started = Instant::now();
                let held = t.borrow(TENANT, fdid, model, borrower);
                let lend_us = micros(started);
                let held = match held {
                    Ok(h) => h,
                    Err(e) => {
                        r.check(
                            &format!("{model} granted"),
                            &name,
                            false,
                            [vec![e], audit_evidence(t, head, &name)].concat(),
                            lend_us,
                        );
                        r.step();
                        continue;
                    }
                };
                let state = t.state(fdid).unwrap_or_default();
                let expected = if model == AccessModel::Shared {
                    "shared"
                } else {
                    "lent"
                };
                r.check(
                    &format!("lent under {model}"),
                    &name,
                    state == expected,
                    vec![format!("state {state}, expected {expected}")],
                    lend_us,
                );
                // The positive control of "no mapping left behind": a lent device is mapped while held
                // (a shared lease's windows are the data path's, not the fabric's lend mappings).
                if model != AccessModel::Shared {
                    let mapped = t.mapped_leases().map(|m| m.contains(&held.lease.0));
                    r.check(
                        "mapped while held",
                        &name,
                        mapped == Ok(true),
                        vec![match &mapped {
                            Ok(mapped) => format!("{} has fabric mappings: {mapped}", held.lease),
                            Err(why) => cannot_tell("fabric mappings", why),
                        }],
                        0,
                    );
                }
                let started = Instant::now();
                let released = t.release(Some(TENANT), held.lease);
                let return_us = micros(started);
                let evidence = |what: String| [vec![what], audit_evidence(t, head, &name)].concat();
                if let Err(e) = released {
                    r.check("released", &name, false, evidence(e), return_us);
                    r.step();
                    continue;
                }
                let state = t.state(fdid).unwrap_or_default();
                r.check(
                    "returned to available",
                    &name,
                    state == "available",
                    evidence(format!("state {state}")),
                    return_us,
                );
                if model != AccessModel::Shared {
                    let baseline = t.at_baseline(fdid);
                    r.check(
                        "config space at post-reset baseline",
                        &name,
                        baseline == Some(true),
                        evidence(format!("at baseline: {baseline:?}")),
                        0,
                    );
                }
                let mapped = t.mapped_leases().map(|m| m.contains(&held.lease.0));
                r.check(
                    "no mapping left behind",
                    &name,
                    mapped == Ok(false),
                    evidence(match &mapped {
                        Ok(true) => format!("{} still has fabric mappings", held.lease),
                        Ok(false) => format!("{} has no fabric mapping", held.lease),
                        Err(why) => cannot_tell("fabric mappings", why),
                    }),
                    0,
                );
                let leaked: Vec<String> = match (&free_before, t.free_resources()) {
                    (Ok(before), Ok(after)) => before
                        .iter()
                        .filter(|(a, f)| after.get(*a) != Some(f))
                        .map(|(a, f)| format!("{a}: free {f:?} before, {:?} after", after.get(a)))
                        .collect(),
                    (Err(why), _) => vec![cannot_tell("free adapter resources", why)],
                    (_, Err(why)) => vec![cannot_tell("free adapter resources", &why)],
                };
                r.check(
                    "no window, LUT entry or aperture leaked",
                    &name,
                    leaked.is_empty(),
                    leaked,
                    0,
                );
                let driver_after = t.local_driver(fdid);
                r.check(
                    "lender's driver as before",
                    &name,
                    driver_after == driver_before,
                    vec![format!("before {driver_before:?}, after {driver_after:?}")],
                    0,
                );
                r.step();
            }
        }
    }
    r.checks
}

/// `isolation`: with a device lent, a host that does not hold it cannot reach it, its holder can; the
/// device's DMA reaches only its window; another tenant cannot release the lease (and the attempt is
/// audited); after the release the former holder and the device's DMA reach nothing. Every blocked
/// access must leave a fault record.
pub fn isolation(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let plan: Vec<Fdid> = plan(t, o)
        .into_iter()
        .filter(|(_, models)| models.contains(&AccessModel::Lend))
        .map(|(f, _)| f)
        .collect();
    let mut r = Recorder::new(Suite::Isolation, progress, plan.len() as u64, failed);
    for fdid in plan {
        let name = fdid.to_string();
        let borrowers = t.borrowers(fdid);
        let (Some(holder), Some(outsider)) =
            (borrowers.first().copied(), borrowers.get(1).copied())
        else {
            r.check(
                "two other hosts",
                &name,
                false,
                vec!["needs a holder and an outsider".into()],
                0,
            );
            r.step();
            continue;
        };
        let head = t.audit_head();
        let held: Held = match t.borrow(TENANT, fdid, AccessModel::Lend, holder) {
            Ok(h) => h,
            Err(e) => {
                r.check("lend granted", &name, false, vec![e], 0);
                r.step();
                continue;
            }
        };
        let (Some((_, bar)), Some((dma, size))) =
            (t.bar_address(held.lease), t.dma_window(held.lease))
        else {
            r.check(
                "lease is mapped",
                &name,
                false,
                vec!["no BAR or DMA mapping".into()],
                0,
            );
            let _ = t.release(Some(TENANT), held.lease);
            r.step();
            continue;
        };
        // Positive controls: the holder reaches the device, the device reaches the holder's memory.
        let reached = t.host_read(holder, bar);
        r.check(
            "holder reaches its device",
            &name,
            reached != u32::MAX,
            vec![format!("{holder} read {bar:#x}: {reached:#x}")],
            0,
        );
        let dma_in = t.device_dma(fdid, dma);
        r.check(
            "device DMA reaches its window",
            &name,
            dma_in == Some(holder),
            vec![format!("DMA to {dma:#x} reached {dma_in:?}")],
            0,
        );
        // Negative checks, each of which must also be recorded as a fault.
        let blocked = |r: &mut Recorder<'_>, what: &str, attempt: &dyn Fn() -> bool| {
            let faults = t.faults_recorded();
            let got_through = attempt();
            let recorded = match (faults, t.faults_recorded()) {
                (Ok(before), Ok(after)) => Ok(after > before),
                (Err(why), _) | (_, Err(why)) => Err(why),
            };
            r.check(
                what,
                &name,
                !got_through && recorded == Ok(true),
                vec![match &recorded {
                    Ok(recorded) => {
                        format!("got through: {got_through}, fault recorded: {recorded}")
                    }
                    Err(why) => cannot_tell("fault recorded", why),
                }],
                0,
            );
        };
        blocked(&mut r, "a non-holder host is refused", &|| {
            t.host_read(outsider, bar) != u32::MAX
        });
        blocked(&mut r, "DMA outside the window is refused", &|| {
            t.device_dma(fdid, dma + size + 0x1000).is_some()
        });
        let intruder = t.release(Some("intruder"), held.lease);
        let audited = t.audit_after(head).is_ok_and(|records| {
            records
                .iter()
                .any(|a| a.target == held.lease.to_string() && a.result.starts_with("refused"))
        });
        r.check(
            "another tenant cannot release the lease",
            &name,
            intruder.is_err() && audited,
            vec![format!(
                "release by another tenant: {intruder:?}, audited: {audited}"
            )],
            0,
        );
        if let Err(e) = t.release(Some(TENANT), held.lease) {
            r.check("released", &name, false, vec![e], 0);
            r.step();
            continue;
        }
        blocked(
            &mut r,
            "the former holder is refused after release",
            &|| t.host_read(holder, bar) != u32::MAX,
        );
        blocked(&mut r, "the device's DMA is refused after release", &|| {
            t.device_dma(fdid, dma).is_some()
        });
        r.step();
    }
    r.checks
}

/// `reset`: every reset method the lender's kernel offers for each device, on the device taken out of
/// the pool: each is timed, and afterwards the device answers with its ids, takes a BAR address back
/// and is at its post-reset baseline. Then, for a device that has siblings on its bus, a sibling is lent
/// and the device cycled: its reset must not have been a bus reset while the sibling was busy.
pub fn reset(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let plan = whole_lendable(t, o);
    let mut r = Recorder::new(Suite::Reset, progress, plan.len() as u64, failed);
    for fdid in plan {
        let name = fdid.to_string();
        if let Err(e) = t.drain(fdid) {
            r.check("taken out of the pool", &name, false, vec![e], 0);
            r.step();
            continue;
        }
        let methods = t.reset_methods(fdid);
        if methods.is_empty() {
            r.check(
                "offers a reset method",
                &name,
                false,
                vec!["the kernel offers none: the device cannot be returned safely".into()],
                0,
            );
        }
        for method in methods {
            let what = format!("{method} reset");
            match t.reset(fdid, method) {
                Ok(us) => {
                    r.check(&what, &name, true, Vec::new(), us);
                    r.check(
                        &format!("ids readable after {method} reset"),
                        &name,
                        t.ids_readable(fdid),
                        vec!["config reads return all ones".into()],
                        0,
                    );
                    let bar = t.bar_restorable(fdid);
                    r.check(
                        &format!("BAR restorable after {method} reset"),
                        &name,
                        bar != Some(false),
                        vec!["BAR 0 does not keep the address written to it".into()],
                        0,
                    );
                    let baseline = t.at_baseline(fdid);
                    r.check(
                        &format!("at baseline after {method} reset"),
                        &name,
                        baseline == Some(true),
                        vec![format!("at baseline: {baseline:?}")],
                        0,
                    );
                }
                Err(e) => {
                    r.check(&what, &name, false, vec![e], 0);
                }
            }
        }
        if let Err(e) = t.undrain(fdid) {
            r.check("back in the pool", &name, false, vec![e], 0);
        }
        // A bus reset resets the whole bus: with a sibling lent, the device's own reset must not be one.
        let siblings = match t.siblings(fdid) {
            Ok(siblings) => siblings,
            Err(why) => {
                r.check(
                    "no bus reset while a sibling is lent",
                    &name,
                    false,
                    vec![cannot_tell("siblings on the bus", &why)],
                    0,
                );
                Vec::new()
            }
        };
        if let Some(sibling) = siblings.first().copied() {
            let borrower = t.borrowers(sibling).first().copied();
            let sibling_held =
                borrower.and_then(|b| t.borrow(TENANT, sibling, AccessModel::Lend, b).ok());
            if let Some(sibling_held) = sibling_held {
                let mark = t.event_mark();
                let cycled = t.borrowers(fdid).last().copied().map(|b| {
                    t.borrow(TENANT, fdid, AccessModel::Lend, b)
                        .and_then(|h| t.release(Some(TENANT), h.lease))
                });
                let bus_reset = mark
                    .and_then(|mark| t.bus_resets_since(mark))
                    .map(|reset| reset.contains(&fdid));
                r.check(
                    "no bus reset while a sibling is lent",
                    &name,
                    bus_reset == Ok(false),
                    vec![match &bus_reset {
                        Ok(reset) => format!(
                            "{fdid} bus-reset while its sibling {sibling} was lent: {reset} (cycle: {cycled:?})"
                        ),
                        Err(why) => cannot_tell("bus resets", why),
                    }],
                    0,
                );
                let _ = t.release(Some(TENANT), sibling_held.lease);
            }
        }
        r.step();
    }
    r.checks
}

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

/// `rebind`: native driver unbind/bind loops on the lender (device taken out of the pool) and on the
/// borrower (device lent), each step checked; then a program on the borrower keeps using the device and
/// its lease is released: pcipool must wait, give up and report BUSY, leaving the lease, its mappings and
/// the borrower's access as they were, and release normally once the program is done.
pub fn rebind(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let plan: Vec<(Fdid, Vec<AccessModel>)> = plan(t, o)
        .into_iter()
        .filter(|(_, m)| m.contains(&AccessModel::Lend) || m.contains(&AccessModel::Vf))
        .collect();
    let mut r = Recorder::new(Suite::Rebind, progress, plan.len() as u64, failed);
    for (fdid, models) in plan {
        let name = fdid.to_string();
        let Some(native) = t.native_driver(fdid) else {
            // Nothing to bind: the lend binds no driver either; there is no loop to run.
            r.step();
            continue;
        };
        // On the lender, out of the pool.
        if fdid.vf.is_none() && t.drain(fdid).is_ok() {
            let before = t.local_driver(fdid).flatten();
            for _ in 0..o.cycles {
                let started = Instant::now();
                let unbound = t.lender_unbind(fdid);
                let now = t.local_driver(fdid).flatten();
                r.check(
                    "lender unbind",
                    &name,
                    unbound.is_ok() && now.is_none(),
                    vec![format!("{unbound:?}, bound now {now:?}")],
                    micros(started),
                );
                let started = Instant::now();
                let bound = t.lender_bind(fdid, &native);
                let now = t.local_driver(fdid).flatten();
                r.check(
                    "lender bind",
                    &name,
                    bound.is_ok() && now.as_deref() == Some(native.as_str()),
                    vec![format!("{bound:?}, bound now {now:?}")],
                    micros(started),
                );
            }
            // Back as it was found.
            let _ = match &before {
                Some(d) => t.lender_bind(fdid, d),
                None => t.lender_unbind(fdid),
            };
            let after = t.local_driver(fdid).flatten();
            r.check(
                "lender driver as found",
                &name,
                after == before,
                vec![format!("found {before:?}, left {after:?}")],
                0,
            );
            let _ = t.undrain(fdid);
        }
        // On the borrower, lent.
        let model = if models.contains(&AccessModel::Lend) {
            AccessModel::Lend
        } else {
            AccessModel::Vf
        };
        let Some(borrower) = t.borrowers(fdid).first().copied() else {
            r.step();
            continue;
        };
        let held = match t.borrow(TENANT, fdid, model, borrower) {
            Ok(h) => h,
            Err(e) => {
                r.check("lend for the borrower loop", &name, false, vec![e], 0);
                r.step();
                continue;
            }
        };
        for _ in 0..o.cycles {
            let started = Instant::now();
            let unbound = t.borrower_unbind(&held);
            let now = t.borrower_driver(&held).flatten();
            r.check(
                "borrower unbind",
                &name,
                unbound.is_ok() && now.is_none(),
                vec![format!("{unbound:?}, bound now {now:?}")],
                micros(started),
            );
            let started = Instant::now();
            let bound = t.borrower_bind(&held, &native);
            let now = t.borrower_driver(&held).flatten();
            r.check(
                "borrower bind",
                &name,
                bound.is_ok() && now.as_deref() == Some(native.as_str()),
                vec![format!("{bound:?}, bound now {now:?}")],
                micros(started),
            );
        }
        // In use on the borrower: the release must wait, then refuse, and touch nothing.
        t.set_borrower_users(&held, 1);
        let started = Instant::now();
        let refused = t.release(Some(TENANT), held.lease);
        let waited = micros(started);
        // Each must be seen to hold: "cannot tell" fails the check.
        let kept = t.leases_of(fdid).is_ok_and(|l| l.contains(&held.lease));
        let mapped = t.mapped_leases().is_ok_and(|m| m.contains(&held.lease.0));
        let reach = t
            .bar_address(held.lease)
            .map(|(node, addr)| t.host_read(node, addr) != u32::MAX);
        r.check(
            "release of a device in use waits and reports BUSY",
            &name,
            refused.as_ref().is_err_and(|e| e.starts_with("BUSY")),
            vec![format!(
                "release answered {refused:?} after {} ms",
                waited / 1000
            )],
            waited,
        );
        r.check(
            "nothing forced while in use",
            &name,
            kept && mapped && reach != Some(false),
            vec![format!(
                "lease kept {kept}, mappings kept {mapped}, borrower still reaches it {reach:?}"
            )],
            0,
        );
        t.set_borrower_users(&held, 0);
        let released = t.release(Some(TENANT), held.lease);
        let state = t.state(fdid).unwrap_or_default();
        r.check(
            "released once idle",
            &name,
            released.is_ok() && state == "available",
            vec![format!("{released:?}, state {state}")],
            0,
        );
        r.step();
    }
    r.checks
}

/// Latency percentiles (nearest rank) of microsecond samples, as "p50 x ms, p99 y ms".
fn percentiles(samples: &mut [u64]) -> String {
    samples.sort_unstable();
    let at = |per_mille: usize| {
        let n = samples.len();
        samples
            .get((n * per_mille / 1000).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    format!("p50 {:.3} ms, p99 {:.3} ms", at(500), at(990))
}

/// `load`: the device under test is cycled while other lent devices carry data traffic (their borrowers
/// read their BARs in a loop) and control-plane clients borrow and release further devices. Every
/// cycle must still end correctly, the data traffic must never lose access while its leases hold, and
/// the control plane must answer every request; the throughput and latency of both are reported.
pub fn load(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let lendable = whole_lendable(t, o);
    let mut r = Recorder::new(Suite::Load, progress, u64::from(o.cycles), failed);
    let [under_test, rest @ ..] = lendable.as_slice() else {
        r.check("a lendable device", "pool", false, vec!["none".into()], 0);
        return r.checks;
    };
    let under_test = *under_test;
    let name = under_test.to_string();
    // One device carries data traffic (more could overrun the lab's links, which placement refuses);
    // the others serve the control-plane clients.
    let (traffic_devices, control_devices) = rest.split_at(rest.len().min(1));
    // Lend the traffic devices for the whole run.
    let mut traffic: Vec<(Held, NodeIdAddr)> = Vec::new();
    for f in traffic_devices {
        let Some(b) = t.borrowers(*f).first().copied() else {
            continue;
        };
        let b = t.borrowers(*f).last().copied().unwrap_or(b);
        match t.borrow(TENANT, *f, AccessModel::Lend, b) {
            Ok(h) => {
                if let Some(addr) = t.bar_address(h.lease) {
                    traffic.push((h, addr));
                }
            }
            Err(e) => {
                r.check("traffic device lent", &f.to_string(), false, vec![e], 0);
            }
        }
    }
    let stop = AtomicBool::new(false);
    let data: Mutex<(u64, u64, Vec<u64>)> = Mutex::new((0, 0, Vec::new()));
    let control: Mutex<(u64, Vec<String>, Vec<u64>)> = Mutex::new((0, Vec::new(), Vec::new()));
    let control_cycles = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for (_, (node, addr)) in &traffic {
            let (stop, data) = (&stop, &data);
            s.spawn(move || {
                let (mut ops, mut lost, mut lat) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    if t.host_read(*node, *addr) == u32::MAX {
                        lost += 1;
                    }
                    lat.push(micros(t0));
                    ops += 1;
                    // Leave the hardware to the others between reads.
                    std::thread::yield_now();
                }
                let mut d = data
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                d.0 += ops;
                d.1 += lost;
                d.2.extend(lat);
            });
        }
        for f in control_devices {
            let (stop, control, control_cycles) = (&stop, &control, &control_cycles);
            let f = *f;
            s.spawn(move || {
                let borrowers = t.borrowers(f);
                if borrowers.is_empty() {
                    return;
                }
                let (mut cycles, mut errors, mut lat) = (0u64, Vec::new(), Vec::new());
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // A different borrower each cycle.
                    k += 1;
                    let b = borrowers[k % borrowers.len()];
                    let t0 = Instant::now();
                    match t.borrow(TENANT, f, AccessModel::Lend, b) {
                        Ok(h) => {
                            lat.push(micros(t0));
                            match t.release(Some(TENANT), h.lease) {
                                Ok(()) => {
                                    cycles += 1;
                                    control_cycles.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => errors.push(format!("{f} release: {e}")),
                            }
                        }
                        Err(e) => errors.push(format!("{f} borrow: {e}")),
                    }
                }
                let mut c = control
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                c.0 += cycles;
                c.1.extend(errors);
                c.2.extend(lat);
            });
        }
        // The device under test, cycled while the load runs.
        for n in 0..o.cycles {
            let borrowers = t.borrowers(under_test);
            let Some(b) = borrowers
                .get(usize::try_from(n).unwrap_or(0) % borrowers.len().max(1))
                .copied()
            else {
                break;
            };
            let t0 = Instant::now();
            // The load may hold the links the device needs: a capacity refusal is the pool doing its
            // job, so wait for room (bounded) as a real client would.
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            let mut waits = 0u32;
            let lent = loop {
                match t.borrow(TENANT, under_test, AccessModel::Lend, b) {
                    Err(e) if e.starts_with("NO_CAPACITY") && Instant::now() < deadline => {
                        waits += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    other => break other,
                }
            };
            let outcome = lent.and_then(|h| t.release(Some(TENANT), h.lease).map(|()| h));
            let took = micros(t0);
            let state = t.state(under_test).unwrap_or_default();
            // Unmapped as seen by the fabric: "cannot tell" is not clean.
            let clean = match &outcome {
                Ok(h) => t.mapped_leases().is_ok_and(|m| !m.contains(&h.lease.0)),
                Err(_) => false,
            };
            r.check(
                "cycle under load ends available and unmapped",
                &name,
                outcome.is_ok() && state == "available" && clean,
                vec![format!(
                    "{:?}, state {state}, unmapped {clean}, waited for capacity {waits} times",
                    outcome.err()
                )],
                took,
            );
            r.step();
        }
        // Keep the load on until every control client has had a few cycles (bounded), so the figures
        // describe a loaded pool even when the device's own cycles are quick.
        let until = Instant::now() + std::time::Duration::from_secs(10);
        let want = 5 * control_devices.len() as u64;
        while control_cycles.load(Ordering::Relaxed) < want && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    for (h, _) in &traffic {
        let _ = t.release(Some(TENANT), h.lease);
    }
    let (ops, lost, mut data_lat) = data
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (cycles, errors, mut control_lat) = control
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !traffic.is_empty() {
        r.check(
            "data traffic never lost its device",
            "traffic",
            ops > 0 && lost == 0,
            vec![format!("{lost} of {ops} reads returned all ones")],
            0,
        );
        r.measure(
            "data traffic",
            "traffic",
            vec![format!(
                "{ops} BAR reads on {} lent devices, {:.0} reads/s, {}",
                traffic.len(),
                ops as f64 / elapsed,
                percentiles(&mut data_lat)
            )],
            0,
        );
    }
    if !control_devices.is_empty() {
        // Requests for devices the other clients hold are refused by design; nothing else may fail.
        let refused = errors
            .iter()
            .filter(|e| e.contains("CONFLICT") || e.contains("NO_CAPACITY"))
            .count();
        let unexpected: Vec<String> = errors
            .into_iter()
            .filter(|e| !e.contains("CONFLICT") && !e.contains("NO_CAPACITY"))
            .collect();
        r.check(
            "control plane answered every request",
            "control plane",
            cycles > 0 && unexpected.is_empty(),
            [
                vec![format!(
                    "{cycles} cycles, {refused} refused for capacity or conflict"
                )],
                unexpected,
            ]
            .concat(),
            0,
        );
        r.measure(
            "control-plane load",
            "control plane",
            vec![format!(
                "{cycles} borrow+release cycles by {} clients, {:.0} cycles/s, borrow {}",
                control_devices.len(),
                cycles as f64 / elapsed,
                percentiles(&mut control_lat)
            )],
            0,
        );
    }
    r.checks
}

/// Where a borrower reaches a lent device's BAR: (borrower, address).
type NodeIdAddr = (pcipool_fabric::NodeId, u64);

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
    if let Some(lease) = lend(r, "device hang") {
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
    if let Some(lease) = lend(r, "reset failure") {
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
