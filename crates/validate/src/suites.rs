//! The suites. Each drives a [`Target`] and returns checks; a check carries the facts that show why it
//! failed. Positive controls sit next to the negative ones (the holder must reach its device before a
//! non-holder being refused means anything).

use std::time::Instant;

use pcipool_fabric::Fdid;
use pcipool_qualify::AccessModel;

use crate::report::{Check, Suite};
use crate::target::Target;

mod isolation;
mod load;
mod recovery;

pub use isolation::isolation;
pub use load::load;
pub use recovery::recovery;

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

impl Progress {
    /// One line of a terminal progress bar (`\r`-led, to overwrite the last).
    #[must_use]
    pub fn bar(&self) -> String {
        let width = 30u64;
        let filled = (self.done * width).checked_div(self.total).unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        format!(
            "\r{:<10} [{bar}] {}/{}  failed {}   ",
            self.suite.name(),
            self.done,
            self.total,
            self.failed
        )
    }
}

/// How long a validation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// 3 cycles per device and model: what CI runs.
    #[default]
    Short,
    /// 200 cycles per device and model: thousands of cycles on the lab.
    Long,
}

impl Profile {
    /// Cycles per device and model.
    #[must_use]
    pub fn cycles(self) -> u32 {
        match self {
            Self::Short => 3,
            Self::Long => 200,
        }
    }

    /// Its name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Long => "long",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "short" => Ok(Self::Short),
            "long" => Ok(Self::Long),
            other => Err(format!("unknown profile '{other}' (short, long)")),
        }
    }
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
            not_run: None,
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
            not_run: None,
        });
    }

    /// A check the target cannot make: reported as not run, with the reason.
    pub(crate) fn not_run(&mut self, name: &str, target: &str, why: String) {
        self.checks.push(Check {
            suite: self.suite,
            name: name.to_owned(),
            target: target.to_owned(),
            passed: false,
            evidence: vec![why.clone()],
            micros: 0,
            not_run: Some(why),
        });
    }

    pub(crate) fn step(&mut self) {
        self.done += 1;
        let failed = self.failed_before + self.checks.iter().filter(|c| c.failed()).count();
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
                    "no fabric resource leaked (windows, LUT entries, aperture, slots)",
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
