//! A Jepsen-style history of a pool under faults, and its checker.
//!
//! Concurrent clients record every borrow and release with when they asked, when they heard back, and
//! what they heard: acknowledged, refused (nothing happened), or unknown (the answer was lost, so it
//! may or may not have happened). The checker then proves, from those observations and the pool's
//! final state alone:
//!
//! - **no overlap**: no device was ever held by two leases at once. A lease is surely held from the
//!   moment its borrow was acknowledged until its release was asked for, when that release was then
//!   acknowledged (a release that succeeds proves the lease was still live when it took effect, and a
//!   lease never comes back), or until the end when it is in the final state. Two leases of one device
//!   whose surely-held spans intersect were held together;
//! - **no lost lease**: every acknowledged borrow was released by its client, is in the final state, or
//!   ended inside the window of a fault the test injected on its lender or borrower (a cut link fences
//!   leases: that end is the pool doing its job, not losing one);
//! - the final state holds each device at most once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A borrow for `borrower`.
    Borrow {
        /// The host the device is lent to.
        borrower: String,
    },
    /// The release of a lease.
    Release {
        /// The lease.
        lease: u64,
    },
}

/// What the client heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A borrow was granted: the lease and its device.
    Granted {
        /// The lease.
        lease: u64,
        /// Its device (fabric device id).
        fdid: String,
    },
    /// A release was acknowledged.
    Released,
    /// Refused: the pool says nothing happened.
    Refused(String),
    /// No answer: it may or may not have happened.
    Unknown(String),
}

/// One operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client.
    pub client: usize,
    /// What it asked.
    pub call: Call,
    /// When it asked (since the history began).
    pub invoked: Duration,
    /// When it heard back.
    pub completed: Duration,
    /// What it heard.
    pub outcome: Outcome,
}

/// A fault the test injected: leases whose lender or borrower is `node` may end between `from` and
/// `to` without their client releasing them.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The host cut off.
    pub node: String,
    /// From.
    pub from: Duration,
    /// Until (after the heal, once the pool settled).
    pub to: Duration,
}

/// Recorder shared by the clients.
#[derive(Debug)]
pub struct History {
    began: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history beginning now.
    pub fn new() -> Self {
        Self {
            began: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Time since the history began.
    pub fn now(&self) -> Duration {
        self.began.elapsed()
    }

    /// Runs `call` as client `client`'s operation and records it; returns its outcome.
    pub fn record(&self, client: usize, call: Call, run: impl FnOnce() -> Outcome) -> Outcome {
        let invoked = self.now();
        let outcome = run();
        let completed = self.now();
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Op {
                client,
                call,
                invoked,
                completed,
                outcome: outcome.clone(),
            });
        outcome
    }

    /// Every operation so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The pool at the end: each live lease with its device and borrower, and what else must hold once
/// the faults are over.
#[derive(Debug, Clone, Default)]
pub struct FinalState {
    /// lease -> (fdid, borrower).
    pub leases: BTreeMap<u64, (String, String)>,
    /// Devices still lost although every lender answers.
    pub lost_devices: Vec<String>,
    /// Leases the fabric carries (mapped), when the test can ask it: they must be the live leases.
    pub mapped: Option<BTreeSet<u64>>,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Borrows acknowledged.
    pub acknowledged: usize,
    /// Releases acknowledged.
    pub released: usize,
    /// Operations with no answer.
    pub unknown: usize,
    /// Acknowledged leases that ended inside a fault's window.
    pub fenced: usize,
    /// Acknowledged leases gone whose release had no answer (it may have succeeded).
    pub maybe_released: usize,
    /// Two leases held one device at once.
    pub overlaps: Vec<String>,
    /// Acknowledged leases neither released, nor live at the end, nor excused by a fault.
    pub lost: Vec<String>,
    /// Final-state problems.
    pub final_state: Vec<String>,
}

impl Verdict {
    /// Whether the history is clean.
    pub fn ok(&self) -> bool {
        self.overlaps.is_empty() && self.lost.is_empty() && self.final_state.is_empty()
    }
}

/// `lease@fdid` as the checker names a lease.
fn name(lease: u64, fdid: &str) -> String {
    format!("lease {lease} on {fdid}")
}

/// The node of a fabric device id (`n2:0000:01:00.0` -> `n2`).
fn node_of(fdid: &str) -> &str {
    fdid.split(':').next().unwrap_or(fdid)
}

/// Checks a history against the final state, excusing the ends `faults` explain.
pub fn check(ops: &[Op], end: Duration, last: &FinalState, faults: &[Fault]) -> Verdict {
    let mut v = Verdict::default();
    // lease -> (fdid, borrower, acknowledged at).
    let mut granted: BTreeMap<u64, (String, String, Duration)> = BTreeMap::new();
    // lease -> when its acknowledged release was asked for.
    let mut released: BTreeMap<u64, Duration> = BTreeMap::new();
    // Leases whose release had no answer.
    let mut unsure: BTreeSet<u64> = BTreeSet::new();
    for op in ops {
        match (&op.call, &op.outcome) {
            (Call::Borrow { borrower }, Outcome::Granted { lease, fdid }) => {
                v.acknowledged += 1;
                if granted
                    .insert(*lease, (fdid.clone(), borrower.clone(), op.completed))
                    .is_some()
                {
                    v.overlaps.push(format!("lease {lease} was granted twice"));
                }
            }
            (Call::Release { lease }, Outcome::Released) => {
                v.released += 1;
                released.insert(*lease, op.invoked);
            }
            (Call::Release { lease }, Outcome::Unknown(_)) => {
                v.unknown += 1;
                unsure.insert(*lease);
            }
            (_, Outcome::Unknown(_)) => v.unknown += 1,
            _ => {}
        }
    }
    // Surely-held spans per device.
    let mut spans: BTreeMap<&str, Vec<(Duration, Duration, u64)>> = BTreeMap::new();
    for (lease, (fdid, borrower, at)) in &granted {
        let until = if let Some(r) = released.get(lease) {
            Some(*r)
        } else if last.leases.contains_key(lease) {
            Some(end)
        } else {
            let excused = faults
                .iter()
                .any(|f| (f.node == node_of(fdid) || f.node == *borrower) && f.to >= *at);
            if excused {
                v.fenced += 1;
            } else if unsure.contains(lease) {
                v.maybe_released += 1;
            } else {
                v.lost.push(format!(
                    "{} (acknowledged at {:.3} s) was never released and is gone",
                    name(*lease, fdid),
                    at.as_secs_f64()
                ));
            }
            None
        };
        if let Some(until) = until {
            spans.entry(fdid).or_default().push((*at, until, *lease));
        }
    }
    for (fdid, list) in &mut spans {
        list.sort();
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if b.0 < a.1 {
                    v.overlaps.push(format!(
                        "{fdid}: lease {} held {:.3}-{:.3} s and lease {} held {:.3}-{:.3} s",
                        a.2,
                        a.0.as_secs_f64(),
                        a.1.as_secs_f64(),
                        b.2,
                        b.0.as_secs_f64(),
                        b.1.as_secs_f64()
                    ));
                }
            }
        }
    }
    let mut held: BTreeSet<&str> = BTreeSet::new();
    for (lease, (fdid, _)) in &last.leases {
        if !held.insert(fdid) {
            v.final_state.push(format!(
                "{fdid} is held by more than one lease at the end ({lease})"
            ));
        }
    }
    for fdid in &last.lost_devices {
        v.final_state.push(format!(
            "{fdid} is still lost at the end although its lender answers"
        ));
    }
    if let Some(mapped) = &last.mapped {
        let live: BTreeSet<u64> = last.leases.keys().copied().collect();
        if *mapped != live {
            v.final_state.push(format!(
                "the fabric maps leases {mapped:?} but the live leases are {live:?}"
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn borrow(client: usize, at: u64, done: u64, lease: u64, fdid: &str) -> Op {
        Op {
            client,
            call: Call::Borrow {
                borrower: "n2".into(),
            },
            invoked: s(at),
            completed: s(done),
            outcome: Outcome::Granted {
                lease,
                fdid: fdid.into(),
            },
        }
    }

    fn release(client: usize, at: u64, done: u64, lease: u64) -> Op {
        Op {
            client,
            call: Call::Release { lease },
            invoked: s(at),
            completed: s(done),
            outcome: Outcome::Released,
        }
    }

    #[test]
    fn one_device_lent_in_turn_is_clean() {
        let ops = [
            borrow(0, 0, 10, 1, "n1:a"),
            release(0, 20, 30, 1),
            borrow(1, 25, 40, 2, "n1:a"),
            release(1, 50, 60, 2),
        ];
        let v = check(&ops, s(100), &FinalState::default(), &[]);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.acknowledged, v.released), (2, 2));
    }

    #[test]
    fn a_second_lease_acknowledged_before_the_first_was_released_is_an_overlap() {
        let ops = [
            borrow(0, 0, 10, 1, "n1:a"),
            borrow(1, 12, 15, 2, "n1:a"),
            release(0, 20, 30, 1),
            release(1, 40, 50, 2),
        ];
        let v = check(&ops, s(100), &FinalState::default(), &[]);
        assert_eq!(v.overlaps.len(), 1, "{v:?}");
    }

    #[test]
    fn a_lease_gone_without_its_release_is_lost_unless_a_fault_explains_it() {
        let ops = [borrow(0, 0, 10, 1, "n1:a")];
        let v = check(&ops, s(100), &FinalState::default(), &[]);
        assert_eq!(v.lost.len(), 1);
        let cut = Fault {
            node: "n1".into(),
            from: s(50),
            to: s(90),
        };
        let v = check(&ops, s(100), &FinalState::default(), &[cut]);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.fenced, 1);
    }

    #[test]
    fn a_device_left_lost_or_a_mapping_without_a_lease_fails_the_final_state() {
        let last = FinalState {
            lost_devices: vec!["n1:a".into()],
            mapped: Some(BTreeSet::from([7])),
            ..FinalState::default()
        };
        let v = check(&[], s(100), &last, &[]);
        assert_eq!(v.final_state.len(), 2, "{v:?}");
    }

    #[test]
    fn a_live_lease_at_the_end_overlaps_a_later_grant_of_its_device() {
        let ops = [borrow(0, 0, 10, 1, "n1:a"), borrow(1, 20, 30, 2, "n1:a")];
        let last = FinalState {
            leases: BTreeMap::from([
                (1, ("n1:a".to_owned(), "n2".to_owned())),
                (2, ("n1:a".to_owned(), "n3".to_owned())),
            ]),
            ..FinalState::default()
        };
        let v = check(&ops, s(100), &last, &[]);
        assert_eq!((v.overlaps.len(), v.final_state.len()), (1, 1), "{v:?}");
    }
}
