//! `pcipool bench lab`: lend and return times on the VM lab, real kernels under QEMU, and where the
//! time goes: QEMU (the fabric manager waiting for QMP answers and events), the guest kernels (the
//! agents waiting for sysfs writes, enumeration and binding; the block device appearing), the
//! transport (the controller's HTTP calls to the agents through QEMU's user network, and to the fabric
//! manager on loopback), and pcipool itself (the controller's decisions and SQLite commits, the agents'
//! and the fabric manager's own code).
//!
//! Per cycle: a borrow for the borrower (answered, then its block device readable in the borrower's
//! kernel), a release (answered, then the drive readable in its lender's kernel). The split uses the
//! step times the controller journals (each step's call to answer), the steps' own times and waits
//! that the agents and the fabric manager report on `GET /v1/stats` (read before and after each
//! operation), and the wall times measured here.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use pcipool_client::Client;
use pcipool_fabric::{Fdid, NodeId};
use pcipool_lab::{Lab, LabError, Options};
use pcipool_wire::{AuditView, ExecutorStats, StepTotals};

use crate::{BenchError, per_mille};

/// Where one operation's wall time went (microseconds).
#[derive(Debug, Clone, Copy, Default)]
struct Split {
    wall: u64,
    answered: u64,
    qemu: u64,
    kernel: u64,
    transport: u64,
    pcipool: u64,
    /// Of `pcipool`: the agents' time in steps not spent waiting (their code, and the guest kernel
    /// answering their system calls).
    agent_active: u64,
}

impl Split {
    fn add(&mut self, o: &Self) {
        self.wall += o.wall;
        self.answered += o.answered;
        self.qemu += o.qemu;
        self.kernel += o.kernel;
        self.transport += o.transport;
        self.pcipool += o.pcipool;
        self.agent_active += o.agent_active;
    }
}

/// Every executor's counters at one moment.
#[derive(Debug, Clone, Default)]
struct Counters {
    agents: ExecutorStats,
    fabric: ExecutorStats,
}

fn sum(a: ExecutorStats, b: &ExecutorStats) -> ExecutorStats {
    let mut by_step = a.by_step;
    for (step, t) in &b.by_step {
        let s = by_step.entry(step.clone()).or_default();
        s.steps += t.steps;
        s.step_us += t.step_us;
        s.waited_us += t.waited_us;
        s.cpu_us += t.cpu_us;
    }
    ExecutorStats {
        steps: a.steps + b.steps,
        step_us: a.step_us + b.step_us,
        waited_us: a.waited_us + b.waited_us,
        cpu_user_us: a.cpu_user_us + b.cpu_user_us,
        cpu_system_us: a.cpu_system_us + b.cpu_system_us,
        by_step,
    }
}

fn delta(after: &ExecutorStats, before: &ExecutorStats) -> ExecutorStats {
    let by_step = after
        .by_step
        .iter()
        .map(|(step, a)| {
            let b = before.by_step.get(step).copied().unwrap_or_default();
            let t = StepTotals {
                steps: a.steps.saturating_sub(b.steps),
                step_us: a.step_us.saturating_sub(b.step_us),
                waited_us: a.waited_us.saturating_sub(b.waited_us),
                cpu_us: a.cpu_us.saturating_sub(b.cpu_us),
            };
            (step.clone(), t)
        })
        .filter(|(_, t)| t.steps > 0)
        .collect();
    ExecutorStats {
        steps: after.steps.saturating_sub(before.steps),
        step_us: after.step_us.saturating_sub(before.step_us),
        waited_us: after.waited_us.saturating_sub(before.waited_us),
        cpu_user_us: after.cpu_user_us.saturating_sub(before.cpu_user_us),
        cpu_system_us: after.cpu_system_us.saturating_sub(before.cpu_system_us),
        by_step,
    }
}

fn counters(lab: &Lab) -> Result<Counters, BenchError> {
    let mut agents = ExecutorStats::default();
    for node in lab.nodes() {
        let url = lab.agent_url(node).unwrap_or_default();
        let stats: ExecutorStats = Client::new(&url, "")
            .get("/v1/stats")
            .map_err(BenchError::context(&format!("{node}'s agent stats")))?;
        agents = sum(agents, &stats);
    }
    let fabric = Client::new(lab.fabric_manager_url(), "")
        .get("/v1/stats")
        .map_err(BenchError::context("the fabric manager's stats"))?;
    Ok(Counters { agents, fabric })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Fabric steps run in the fabric manager; the others on a host's agent.
fn is_fabric_step(step: &str) -> bool {
    matches!(step, "attach" | "detach" | "map_bars" | "map_dma" | "unmap")
}

/// The steps (name, microseconds) of the latest journal of workflow `id` (or the latest `kind`
/// workflow of `fdid`) in `audit`.
fn journal_steps(
    audit: &[AuditView],
    kind: &str,
    id: Option<u64>,
    fdid: Fdid,
) -> Vec<(String, u64)> {
    let target = fdid.to_string();
    let record = audit.iter().rev().find(|r| {
        let words: Vec<&str> = r.action.split_whitespace().collect();
        r.target == target
            && words.first() == Some(&"workflow")
            && words.get(2) == Some(&kind)
            && id.is_none_or(|id| words.get(1) == Some(&id.to_string().as_str()))
            && r.result != "running"
    });
    let journal: serde_json::Value = record
        .and_then(|r| serde_json::from_str(&r.after).ok())
        .unwrap_or_default();
    journal["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_owned(),
                s["us"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Splits one operation: `wall` (to usable), `answered` (to the API's answer), its journal's steps,
/// and the executors' counters before and after.
fn split(
    wall: Duration,
    answered: Duration,
    steps: &[(String, u64)],
    before: &Counters,
    after: &Counters,
) -> Split {
    let (wall, answered) = (micros(wall), micros(answered));
    let host_calls: u64 = steps
        .iter()
        .filter(|(s, _)| !is_fabric_step(s))
        .map(|(_, us)| us)
        .sum();
    let fabric_calls: u64 = steps
        .iter()
        .filter(|(s, _)| is_fabric_step(s))
        .map(|(_, us)| us)
        .sum();
    let agents = delta(&after.agents, &before.agents);
    let fabric = delta(&after.fabric, &before.fabric);
    let qemu = fabric.waited_us;
    // After the answer, the block device appearing (and this benchmark's probe) is the guest's.
    let kernel = agents.waited_us + wall.saturating_sub(answered);
    let transport =
        host_calls.saturating_sub(agents.step_us) + fabric_calls.saturating_sub(fabric.step_us);
    let pcipool = wall.saturating_sub(qemu + kernel + transport);
    Split {
        wall,
        answered,
        qemu,
        kernel,
        transport,
        pcipool,
        agent_active: agents.step_us.saturating_sub(agents.waited_us),
    }
}

/// Waits in `node`'s kernel until the NVMe namespace of the controller at `at` is readable.
fn usable(lab: &Lab, node: NodeId, at: &str) -> Result<(), BenchError> {
    let probe = format!(
        "for i in $(seq 1200); do b=$(ls /sys/bus/pci/devices/{at}/nvme/*/ 2>/dev/null | grep -m1 '^nvme[0-9]*n1$'); [ -n \"$b\" ] && dd if=/dev/$b of=/dev/null bs=4096 count=1 2>/dev/null && exit 0; sleep 0.05; done; exit 1"
    );
    let ran = lab
        .exec(node, &probe, Duration::from_secs(90))
        .map_err(BenchError::context(&format!("probing {node}")))?;
    if ran.status == 0 {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "{at} did not become readable on {node}"
        )))
    }
}

/// Runs the benchmark on the lab `text` describes (`cycles` lends and returns), in `dir`.
///
/// # Errors
/// The lab does not come up (QEMU missing: [`BenchError::Failed`] saying so), a borrow or release
/// fails, a drive does not become readable.
pub fn run(text: &str, dir: &Path, cycles: usize, pcipool: &Path) -> Result<String, BenchError> {
    let opts = Options::new(dir, pcipool);
    let booted = Instant::now();
    let lab = Lab::up(text, &opts).map_err(|e| match e {
        LabError::Unavailable(why) => {
            BenchError::Failed(format!("the VM lab cannot run here: {why}"))
        }
        other => BenchError::Failed(format!("the VM lab: {other}")),
    })?;
    let boot = booted.elapsed();
    let borrower = lab
        .description()
        .host
        .iter()
        .rev()
        .find(|h| h.lent_drives().is_empty())
        .map(|h| h.name)
        .ok_or_else(|| BenchError::Failed("the lab has no host that only borrows".into()))?;
    let client = lab.client();
    let (mut lends, mut returns) = (Vec::new(), Vec::new());
    let mut step_us: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut seen = 0u64;
    let first = counters(&lab)?;
    for _ in 0..cycles {
        let before = counters(&lab)?;
        let asked = Instant::now();
        let granted = client
            .borrow(&pcipool_wire::BorrowRequest::lend(
                pcipool_pool::schedule::DeviceClass::Nvme,
                1,
                borrower,
            ))
            .map_err(BenchError::context("borrow"))?
            .pop()
            .ok_or_else(|| BenchError::Failed("a borrow granted nothing".into()))?;
        let answered = asked.elapsed();
        let at = granted
            .attached
            .ok_or_else(|| {
                BenchError::Failed("the lend did not say where the drive appeared".into())
            })?
            .to_string();
        usable(&lab, borrower, &at)?;
        let lent_wall = asked.elapsed();
        let lent = counters(&lab)?;

        let asked = Instant::now();
        client
            .release(granted.lease_id.0)
            .map_err(BenchError::context("release"))?;
        let released = asked.elapsed();
        usable(&lab, granted.fdid.node, &granted.fdid.bdf.to_string())?;
        let returned_wall = asked.elapsed();
        let returned = counters(&lab)?;

        let audit = client
            .audit(seen, 1000)
            .map_err(BenchError::context("reading the audit chain"))?;
        seen = audit.last().map_or(seen, |r| r.seq + 1);
        let lend_steps = journal_steps(&audit, "Lend", Some(granted.workflow), granted.fdid);
        let return_steps = journal_steps(&audit, "Return", None, granted.fdid);
        for (kind, steps) in [("lend", &lend_steps), ("return", &return_steps)] {
            for (step, us) in steps {
                *step_us.entry((kind.to_owned(), step.clone())).or_default() += us;
            }
        }
        lends.push(split(lent_wall, answered, &lend_steps, &before, &lent));
        returns.push(split(
            returned_wall,
            released,
            &return_steps,
            &lent,
            &returned,
        ));
    }
    let cpu = delta(&counters(&lab)?.agents, &first.agents);
    report(&lab, boot, borrower, &lends, &returns, &step_us, cpu)
}

fn report(
    lab: &Lab,
    boot: Duration,
    borrower: NodeId,
    lends: &[Split],
    returns: &[Split],
    step_us: &std::collections::BTreeMap<(String, String), u64>,
    cpu: ExecutorStats,
) -> Result<String, BenchError> {
    let mut out = String::new();
    writeln!(
        out,
        "bench lab: {} lends and returns to {borrower} on {} guests under QEMU (TCG), booted in {:.1} s",
        lends.len(),
        lab.nodes().len(),
        boot.as_secs_f64()
    )?;
    let ms = |us: u64| us as f64 / 1000.0;
    writeln!(out, "{:<34} {:>9} {:>9}", "", "p50 ms", "p99 ms")?;
    for (name, ops, pick) in [
        ("lend: borrow answered", lends, 0),
        ("lend: usable on the borrower", lends, 1),
        ("return: release answered", returns, 0),
        ("return: usable on the lender", returns, 1),
    ] {
        let mut v: Vec<u64> = ops
            .iter()
            .map(|s| if pick == 0 { s.answered } else { s.wall })
            .collect();
        v.sort_unstable();
        writeln!(
            out,
            "{name:<34} {:>9.1} {:>9.1}",
            ms(per_mille(&v, 500)),
            ms(per_mille(&v, 990))
        )?;
    }
    for (kind, ops) in [("lend", lends), ("return", returns)] {
        let mut total = Split::default();
        ops.iter().for_each(|s| total.add(s));
        let share = |part: u64| 100.0 * part as f64 / total.wall.max(1) as f64;
        writeln!(out, "\n{kind}: where the wall time went (all cycles)")?;
        writeln!(
            out,
            "  QEMU (QMP answers and events)            {:>5.1}%",
            share(total.qemu)
        )?;
        writeln!(
            out,
            "  guest kernels (sysfs, enumeration, bdev) {:>5.1}%",
            share(total.kernel)
        )?;
        writeln!(
            out,
            "  transport (HTTP over QEMU's user net)    {:>5.1}%",
            share(total.transport)
        )?;
        writeln!(
            out,
            "  pcipool itself (controller, agents, fm)  {:>5.1}%   target <= 10%: {}",
            share(total.pcipool),
            if share(total.pcipool) <= 10.0 {
                "met"
            } else {
                "NOT MET"
            }
        )?;
        writeln!(
            out,
            "    of which the agents' steps, outside their waits on the kernel  {:>5.1}%",
            share(total.agent_active)
        )?;
        writeln!(
            out,
            "  steps (share of the {kind}'s wall time, as the controller timed them):"
        )?;
        for ((k, step), us) in step_us {
            if k == kind {
                writeln!(out, "    {step:<24} {:>5.1}%", share(*us))?;
            }
        }
    }
    writeln!(
        out,
        "\nthe agents' CPU over the cycles: {:.2} s user, {:.2} s system (system time includes the kernel's own work inside pcipool's writes, such as a driver's remove during an unbind)",
        cpu.cpu_user_us as f64 / 1e6,
        cpu.cpu_system_us as f64 / 1e6
    )?;
    writeln!(
        out,
        "\nthe agents' steps over the cycles (ms per run): the step, waiting on the kernel, the rest (pcipool's code and the kernel answering its reads), the agent's CPU"
    )?;
    writeln!(
        out,
        "  {:<24} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "step", "runs", "step", "waiting", "the rest", "CPU"
    )?;
    for (step, t) in &cpu.by_step {
        let per = |us: u64| us as f64 / 1000.0 / t.steps.max(1) as f64;
        writeln!(
            out,
            "  {step:<24} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            t.steps,
            per(t.step_us),
            per(t.waited_us),
            per(t.step_us.saturating_sub(t.waited_us)),
            per(t.cpu_us)
        )?;
    }
    Ok(out)
}
