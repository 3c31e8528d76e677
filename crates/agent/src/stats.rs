//! What an agent or a fabric manager reports on `GET /v1/stats`: the steps it ran, their time, and
//! how much of it was spent waiting on the machine.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pcipool_wire::{ExecutorStats, StepTotals};

/// Counts the steps answered and the time spent in them.
#[derive(Debug, Default)]
pub struct StepClock {
    steps: AtomicU64,
    micros: AtomicU64,
    by_step: Mutex<BTreeMap<String, StepTotals>>,
}

/// A step's start as [`StepClock::step_done`] needs it: when, the backend's waits and this process's
/// CPU time so far.
#[derive(Debug, Clone, Copy)]
pub struct StepStart {
    at: Instant,
    waited: Duration,
    cpu_us: u64,
}

impl StepStart {
    /// Now, with the backend's waits so far.
    pub fn now(waited: Duration) -> Self {
        Self {
            at: Instant::now(),
            waited,
            cpu_us: own_cpu_us(),
        }
    }
}

/// This process's CPU time so far, user and system (microseconds; zero where it cannot be read).
fn own_cpu_us() -> u64 {
    let (user, system) =
        process_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    user + system
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl StepClock {
    /// Counts one step that started at `started` and has just been answered.
    pub fn count(&self, started: Instant) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(micros(started.elapsed()), Ordering::Relaxed);
    }

    /// Adds one run of `step` that began at `start`, the backend's waits now being `waited`.
    pub fn step_done(&self, step: &str, start: StepStart, waited: Duration) {
        let mut by_step = self
            .by_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = by_step.entry(step.to_owned()).or_default();
        t.steps += 1;
        t.step_us += micros(start.at.elapsed());
        t.waited_us += micros(waited.saturating_sub(start.waited));
        t.cpu_us += own_cpu_us().saturating_sub(start.cpu_us);
    }

    /// The counts, with `waited` (the backend's time waiting on the machine).
    pub fn stats(&self, waited: Duration) -> ExecutorStats {
        ExecutorStats {
            steps: self.steps.load(Ordering::Relaxed),
            step_us: self.micros.load(Ordering::Relaxed),
            waited_us: micros(waited),
            by_step: self
                .by_step
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            ..ExecutorStats::default()
        }
    }

    /// [`Self::stats`] with this process's CPU time (an agent's: the process is the agent).
    pub fn stats_with_cpu(&self, waited: Duration) -> ExecutorStats {
        let (user, system) =
            process_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
        ExecutorStats {
            cpu_user_us: user,
            cpu_system_us: system,
            ..self.stats(waited)
        }
    }
}

/// User and system CPU time (microseconds) from a `/proc/PID/stat` line: fields 14 and 15, in
/// clock ticks of 1/100 s (`USER_HZ`, 100 on every Linux architecture pcipool runs on). Zero when the
/// line cannot be read.
fn process_cpu(stat: &str) -> (u64, u64) {
    // The command name (field 2) is in parentheses and may hold spaces: count after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After `)`: field 3 (state) is index 0, so fields 14 and 15 are indexes 11 and 12.
    (ticks(11) * 10_000, ticks(12) * 10_000)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn each_step_keeps_its_own_time_and_waits() {
        let clock = super::StepClock::default();
        let start = super::StepStart::now(Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(20));
        clock.step_done("LenderReset", start, Duration::from_millis(12));
        let start = super::StepStart::now(Duration::from_millis(12));
        clock.step_done("LenderReset", start, Duration::from_millis(12));
        let t = clock.stats(Duration::ZERO).by_step["LenderReset"];
        assert_eq!(
            (t.steps, t.waited_us, t.step_us >= 20_000),
            (2, 7_000, true)
        );
    }

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        let stat = "42 (pcipool agent) S 1 42 42 0 -1 4194304 100 0 0 0 75 341 0 0 20 0 9 0 50 0 0";
        assert_eq!(
            (super::process_cpu(stat), super::process_cpu("garbage")),
            ((750_000, 3_410_000), (0, 0))
        );
    }
}
