//! `pcipool sim run`: a seeded random workload of leases, releases and faults driven straight against the
//! model and the backend, with the invariants checked after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use pcipool_backend::DeviceControl;
use pcipool_fabric::{AdapterId, Fdid, Grant, LeaseId, NodeId};
use pcipool_pcie::{BarKind, ResetMethod};
use serde::Serialize;

use crate::backend::HostControl;
use crate::sim::Sim;

/// Fault kinds the runner may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Host crash (and later reboot).
    Crash,
    /// Adapter link down/up.
    Link,
    /// Device hang.
    Hang,
    /// Reset failure.
    ResetFail,
    /// Surprise removal.
    SurpriseRemove,
    /// Driver unbind hang.
    UnbindHang,
    /// Slow steps.
    Slow,
    /// Stray DMA (an IOMMU fault).
    StrayDma,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 8] = [
        Self::Crash,
        Self::Link,
        Self::Hang,
        Self::ResetFail,
        Self::SurpriseRemove,
        Self::UnbindHang,
        Self::Slow,
        Self::StrayDma,
    ];

    /// CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::Link => "link",
            Self::Hang => "hang",
            Self::ResetFail => "reset-fail",
            Self::SurpriseRemove => "surprise-remove",
            Self::UnbindHang => "unbind-hang",
            Self::Slow => "slow",
            Self::StrayDma => "stray-dma",
        }
    }
}

/// A set of fault kinds, parsed from `all`, `none` or a comma list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultSet(pub BTreeSet<FaultKind>);

/// An unknown fault name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault '{0}' (all, none, or a comma list of: crash, link, hang, reset-fail, surprise-remove, unbind-hang, slow, stray-dma)"
)]
pub struct UnknownFault(pub String);

impl FromStr for FaultSet {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self(FaultKind::ALL.into_iter().collect())),
            "none" | "" => Ok(Self::default()),
            list => list
                .split(',')
                .map(|n| {
                    FaultKind::ALL
                        .into_iter()
                        .find(|k| k.name() == n.trim())
                        .ok_or_else(|| UnknownFault(n.to_owned()))
                })
                .collect::<Result<BTreeSet<_>, _>>()
                .map(Self),
        }
    }
}

impl std::fmt::Display for FaultSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        if self.0.len() == FaultKind::ALL.len() {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.0.iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Step at which it was seen.
    pub step: u64,
    /// What the step did.
    pub action: String,
    /// What broke.
    pub detail: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RunSummary {
    /// Steps run.
    pub steps: u64,
    /// Leases granted.
    pub granted: u64,
    /// Leases released normally.
    pub released: u64,
    /// Leases fenced because a host was lost.
    pub fenced: u64,
    /// Lend attempts refused (busy, no room, no route).
    pub refused: u64,
    /// Devices quarantined after a failed reset.
    pub quarantined: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Events logged.
    pub events: usize,
    /// Virtual time at the end, ns.
    pub virtual_ns: u64,
    /// Event log hash.
    pub hash: u64,
    /// The first invariant violation, if any.
    pub violation: Option<Violation>,
}

impl RunSummary {
    /// The run as text: what ran, what was injected, and the violation with its replay command.
    ///
    /// # Errors
    /// Never in practice (formatting into a `String`).
    pub fn text(
        &self,
        name: &str,
        faults: &FaultSet,
        seed: u64,
        wall: std::time::Duration,
        replay: &str,
    ) -> Result<String, std::fmt::Error> {
        use std::fmt::Write as _;
        let mut out = String::new();
        writeln!(out, "fabric {name}, faults {faults}")?;
        writeln!(
            out,
            "steps {}  granted {}  released {}  fenced {}  refused {}  quarantined {}",
            self.steps, self.granted, self.released, self.fenced, self.refused, self.quarantined
        )?;
        let faults_line: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            out,
            "faults injected: {}",
            if faults_line.is_empty() {
                "none".into()
            } else {
                faults_line.join(" ")
            }
        )?;
        writeln!(
            out,
            "events {}  virtual time {:.3} s  wall time {:.3} s",
            self.events,
            self.virtual_ns as f64 / 1e9,
            wall.as_secs_f64()
        )?;
        if let Some(v) = &self.violation {
            writeln!(
                out,
                "INVARIANT VIOLATED at step {}: {}\n  while: {}",
                v.step, v.detail, v.action
            )?;
            writeln!(out, "  replay: {replay}")?;
        }
        writeln!(out, "seed {seed} event-log hash {:016x}", self.hash)?;
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    grant: Grant,
    epoch: u64,
}

/// The workload state kept by the runner (a stand-in for the control plane until it exists).
struct Runner {
    leases: BTreeMap<LeaseId, Lease>,
    quarantined: BTreeSet<Fdid>,
    next_lease: u64,
    last_epoch: u64,
    summary: RunSummary,
}

fn devices(sim: &Sim) -> Vec<Fdid> {
    sim.hosts()
        .flat_map(|h| {
            h.devices.keys().map(move |b| Fdid {
                node: h.node,
                bdf: *b,
                vf: None,
            })
        })
        .collect()
}

impl Runner {
    fn grant(&mut self, sim: &mut Sim) -> String {
        let all = devices(sim);
        let nodes: Vec<NodeId> = sim.hosts().map(|h| h.node).collect();
        if all.is_empty() || nodes.len() < 2 {
            return "grant: nothing to lend".into();
        }
        let fdid = all[usize::try_from(sim.rng().below(all.len() as u64)).unwrap_or(0)];
        let borrower = nodes[usize::try_from(sim.rng().below(nodes.len() as u64)).unwrap_or(0)];
        let lent = self.leases.values().any(|l| l.grant.fdid == fdid);
        let usable = sim.device(fdid.node, fdid.bdf).is_some_and(|d| !d.dev.hung)
            && sim.host(borrower).is_some_and(|h| h.up)
            && !self.quarantined.contains(&fdid);
        if borrower == fdid.node || lent || !usable {
            self.summary.refused += 1;
            return format!("grant {fdid} to {borrower}: not eligible");
        }
        // Lender side: the local driver must let go first.
        if let Err(e) = (HostControl {
            sim,
            node: fdid.node,
        })
        .unbind(fdid.bdf)
        {
            self.summary.refused += 1;
            return format!("grant {fdid} to {borrower}: unbind failed: {e}");
        }
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        let bars: Vec<(u8, u64)> = sim
            .device(fdid.node, fdid.bdf)
            .and_then(|d| {
                pcipool_pcie::decode_with_sizes(&d.dev.config_bytes(), &d.dev.sizes()).ok()
            })
            .map(|f| {
                f.bars
                    .iter()
                    .filter(|b| b.kind != BarKind::Io)
                    .filter_map(|b| Some((b.index, b.size?)))
                    .collect()
            })
            .unwrap_or_default();
        let dma_base = sim.rng().below(1 << 20) << 12;
        let mut result = Ok(());
        for (bar, size) in bars {
            result = result.and_then(|()| {
                sim.fabric
                    .map_bar(id, fdid, bar, size, borrower)
                    .map(|_| ())
            });
        }
        result = result.and_then(|()| {
            sim.fabric
                .map_dma(id, fdid, borrower, dma_base, 256 << 20)
                .map(|_| ())
        });
        if let Err(e) = result {
            sim.fabric.unmap_lease(id);
            self.summary.refused += 1;
            return format!("grant {fdid} to {borrower}: {e}");
        }
        self.last_epoch += 1;
        self.leases.insert(
            id,
            Lease {
                grant: Grant { fdid, borrower },
                epoch: self.last_epoch,
            },
        );
        self.summary.granted += 1;
        format!("grant {fdid} to {borrower} as {id}")
    }

    fn release(&mut self, sim: &mut Sim) -> String {
        if self.leases.is_empty() {
            return "release: no lease".into();
        }
        let pick = usize::try_from(sim.rng().below(self.leases.len() as u64)).unwrap_or(0);
        let Some((&id, &lease)) = self.leases.iter().nth(pick) else {
            return "release: no lease".into();
        };
        // Return: unmap first (a stale borrower can no longer reach the device), then reset.
        sim.fabric.unmap_lease(id);
        self.leases.remove(&id);
        let fdid = lease.grant.fdid;
        let mut control = HostControl {
            sim,
            node: fdid.node,
        };
        let reset = control
            .reset(fdid.bdf, ResetMethod::Flr)
            .or_else(|_| control.reset(fdid.bdf, ResetMethod::Bus));
        self.summary.released += 1;
        match reset {
            Ok(()) => format!("release {id} ({fdid})"),
            Err(e) => {
                self.quarantined.insert(fdid);
                self.summary.quarantined += 1;
                format!("release {id} ({fdid}): reset failed, quarantined: {e}")
            }
        }
    }

    /// A host that holds no lease for a mapped device tries to read it: it must see all ones.
    fn probe(&mut self, sim: &mut Sim) -> String {
        let mapped: Vec<(NodeId, u64, Fdid)> = sim
            .fabric
            .mappings()
            .filter(|m| matches!(m.kind, pcipool_fabric::MappingKind::Bar { .. }))
            .map(|m| (m.kind.borrower(), m.host_addr, m.kind.fdid()))
            .collect();
        let nodes: Vec<NodeId> = sim.hosts().map(|h| h.node).collect();
        if mapped.is_empty() {
            return "probe: nothing mapped".into();
        }
        let (owner, addr, fdid) =
            mapped[usize::try_from(sim.rng().below(mapped.len() as u64)).unwrap_or(0)];
        let intruder = nodes[usize::try_from(sim.rng().below(nodes.len() as u64)).unwrap_or(0)];
        // Address spaces are per host: the same address on the intruder may be one of its own mappings.
        let reached = sim
            .fabric
            .translate_access(intruder, addr)
            .ok()
            .map(|t| t.fdid);
        let value = sim.borrower_read(intruder, addr);
        let holds = |target: Fdid| {
            self.leases
                .values()
                .any(|l| l.grant.borrower == intruder && l.grant.fdid == target)
        };
        if value != u32::MAX && !reached.is_some_and(holds) {
            self.summary.violation.get_or_insert(Violation {
                step: self.summary.steps,
                action: format!("{intruder} reads {addr:#x}"),
                detail: format!(
                    "{intruder} read data at {addr:#x} without a lease for {reached:?}"
                ),
            });
        }
        format!("{intruder} probes {addr:#x} ({fdid} lent to {owner}): {value:#x}")
    }

    fn fence_node(&mut self, sim: &mut Sim, node: NodeId) {
        sim.fabric.unmap_node(node);
        let before = self.leases.len();
        self.leases
            .retain(|_, l| l.grant.borrower != node && l.grant.fdid.node != node);
        self.summary.fenced += (before - self.leases.len()) as u64;
    }

    fn fault(&mut self, sim: &mut Sim, faults: &FaultSet) -> String {
        let kinds: Vec<FaultKind> = faults.0.iter().copied().collect();
        if kinds.is_empty() {
            return "no fault".into();
        }
        let kind = kinds[usize::try_from(sim.rng().below(kinds.len() as u64)).unwrap_or(0)];
        *self
            .summary
            .faults
            .entry(kind.name().to_owned())
            .or_default() += 1;
        let nodes: Vec<NodeId> = sim.hosts().map(|h| h.node).collect();
        let node = nodes[usize::try_from(sim.rng().below(nodes.len() as u64)).unwrap_or(0)];
        let all = devices(sim);
        let fdid = all
            .get(usize::try_from(sim.rng().below(all.len().max(1) as u64)).unwrap_or(0))
            .copied();
        match kind {
            FaultKind::Crash => {
                if sim.host(node).is_some_and(|h| h.up) {
                    sim.crash(node);
                    self.fence_node(sim, node);
                    format!("crash {node}")
                } else {
                    sim.reboot(node);
                    format!("reboot {node}")
                }
            }
            FaultKind::Link => {
                let adapter = AdapterId { node, index: 0 };
                if sim.rng().chance(500) {
                    sim.link_down(adapter);
                    format!("link down {adapter}")
                } else {
                    sim.link_up(adapter);
                    format!("link up {adapter}")
                }
            }
            FaultKind::Hang => fdid.map_or_else(String::new, |f| {
                sim.hang(f.node, f.bdf);
                format!("hang {f}")
            }),
            FaultKind::ResetFail => fdid.map_or_else(String::new, |f| {
                sim.fail_next_reset(f.node, f.bdf);
                format!("next reset of {f} fails")
            }),
            FaultKind::SurpriseRemove => fdid.map_or_else(String::new, |f| {
                sim.surprise_remove(f.node, f.bdf);
                // The lender's hot-plug event reaches the control plane, which fences the device's lease.
                let ids: Vec<LeaseId> = self
                    .leases
                    .iter()
                    .filter(|(_, l)| l.grant.fdid == f)
                    .map(|(i, _)| *i)
                    .collect();
                for id in ids {
                    sim.fabric.unmap_lease(id);
                    self.leases.remove(&id);
                    self.summary.fenced += 1;
                }
                format!("surprise removal of {f}")
            }),
            FaultKind::UnbindHang => fdid.map_or_else(String::new, |f| {
                sim.hang_next_unbind(f.node, f.bdf);
                format!("next unbind of {f} hangs")
            }),
            FaultKind::Slow => {
                let factor = 1 + sim.rng().below(4);
                sim.slow_steps(factor);
                format!("steps {factor}x slower")
            }
            FaultKind::StrayDma => fdid.map_or_else(String::new, |f| {
                let addr = sim.rng().next_u64() & 0x0000_ffff_ffff_f000;
                let outcome = sim.device_dma(f, addr);
                // A stray address may land in the device's own window; anything else must fault.
                let own = self.leases.values().any(|l| l.grant.fdid == f);
                if outcome.is_ok() && !own {
                    self.summary.violation.get_or_insert(Violation {
                        step: self.summary.steps,
                        action: format!("stray DMA from {f} to {addr:#x}"),
                        detail: "DMA from a device without a lease reached memory".into(),
                    });
                }
                format!("stray DMA from {f} to {addr:#x}")
            }),
        }
    }

    fn check(&self, sim: &Sim) -> Result<(), String> {
        let grants: BTreeMap<LeaseId, Grant> =
            self.leases.iter().map(|(i, l)| (*i, l.grant)).collect();
        sim.fabric
            .check_isolation(&grants)
            .map_err(|v| v.to_string())?;
        let mut holders: BTreeMap<Fdid, usize> = BTreeMap::new();
        for l in self.leases.values() {
            *holders.entry(l.grant.fdid).or_default() += 1;
        }
        if let Some((fdid, n)) = holders.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{fdid} is lent to {n} borrowers at once"));
        }
        let mut epochs: Vec<u64> = self.leases.values().map(|l| l.epoch).collect();
        epochs.sort_unstable();
        epochs.dedup();
        if epochs.len() != self.leases.len() || epochs.last().is_some_and(|e| *e > self.last_epoch)
        {
            return Err("lease epochs are not unique and monotonic".into());
        }
        Ok(())
    }
}

/// Runs `steps` random steps. Stops at the first invariant violation.
pub fn run(sim: &mut Sim, steps: u64, faults: &FaultSet) -> RunSummary {
    let mut r = Runner {
        leases: BTreeMap::new(),
        quarantined: BTreeSet::new(),
        next_lease: 1,
        last_epoch: 0,
        summary: RunSummary::default(),
    };
    for step in 0..steps {
        r.summary.steps = step + 1;
        let roll = sim.rng().below(100);
        let action = if roll < 45 {
            r.grant(sim)
        } else if roll < 80 {
            r.release(sim)
        } else if roll < 90 {
            r.probe(sim)
        } else {
            r.fault(sim, faults)
        };
        sim.advance(1_000_000);
        if r.summary.violation.is_some() {
            break;
        }
        if let Err(detail) = r.check(sim) {
            r.summary.violation = Some(Violation {
                step: step + 1,
                action,
                detail,
            });
            break;
        }
    }
    // Wind down: every lease ends, however it ends, and nothing may stay allocated.
    let ids: Vec<LeaseId> = r.leases.keys().copied().collect();
    for id in ids {
        sim.fabric.unmap_lease(id);
    }
    if r.summary.violation.is_none() && !sim.fabric.is_idle() {
        r.summary.violation = Some(Violation {
            step: r.summary.steps,
            action: "wind down".into(),
            detail: "windows or LUT entries leaked after every lease ended".into(),
        });
    }
    r.summary.events = sim.events().len();
    r.summary.virtual_ns = sim.now();
    r.summary.hash = sim.event_hash();
    r.summary
}
