//! What a validation run found: every check with its evidence, a summary per suite, and what the run
//! was (seed, version, fabric, policy) so it can be repeated.

use std::fmt::Write as _;

use serde::Serialize;

/// The suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    /// Assign/release cycles.
    Cycles,
    /// Every qualified reset method.
    Reset,
    /// Driver unbind/bind loops.
    Rebind,
    /// Cycles under data and control-plane load.
    Load,
    /// Attempts to reach what one does not hold.
    Isolation,
    /// Injected faults, each ending in a correct state.
    Recovery,
    /// Shared access on the data path: exclusive and shared borrows, I/O integrity across hosts,
    /// isolation, and handles that fault after a return.
    #[serde(rename = "datapath")]
    DataPath,
}

impl Suite {
    /// Every suite, in report order.
    pub const ALL: [Suite; 7] = [
        Self::Cycles,
        Self::Reset,
        Self::Rebind,
        Self::Load,
        Self::Isolation,
        Self::Recovery,
        Self::DataPath,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cycles => "cycles",
            Self::Reset => "reset",
            Self::Rebind => "rebind",
            Self::Load => "load",
            Self::Isolation => "isolation",
            Self::Recovery => "recovery",
            Self::DataPath => "datapath",
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A suite name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown suite {0:?} (cycles, reset, rebind, load, isolation, recovery, datapath)")]
pub struct UnknownSuite(pub String);

impl std::str::FromStr for Suite {
    type Err = UnknownSuite;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

/// One check: what was verified, on what, and the evidence when it failed (or the measurement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Suite.
    pub suite: Suite,
    /// What was checked, e.g. `returned to available`.
    pub name: String,
    /// On what (a device, a lease, a host).
    pub target: String,
    /// Whether it held.
    pub passed: bool,
    /// Facts that show why it failed (device state, audit records, mappings), or what was measured.
    pub evidence: Vec<String>,
    /// How long the step it checks took, microseconds.
    pub micros: u64,
    /// Why it was not run (the target cannot make what it needs, e.g. inject that fault): neither
    /// passed nor failed, and said so in every report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
}

impl Check {
    /// It ran and did not hold.
    #[must_use]
    pub fn failed(&self) -> bool {
        !self.passed && self.not_run.is_none()
    }
}

/// A suite's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuiteSummary {
    /// Suite.
    pub suite: Suite,
    /// Checks run.
    pub run: usize,
    /// Checks that held.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Checks not run, each with its reason.
    pub not_run: usize,
    /// The slowest step: (check, target, microseconds).
    pub slowest: Option<(String, String, u64)>,
}

/// What the run was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    /// pcipool version.
    pub version: String,
    /// Seed of the simulated run.
    pub seed: u64,
    /// Fabric description (file name, or the built-in lab).
    pub fabric: String,
    /// Policy file, or `default`.
    pub policy: String,
    /// Profile (`short`, `long`).
    pub profile: String,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What the run was.
    pub run: RunInfo,
    /// Totals per suite, in suite order.
    pub suites: Vec<SuiteSummary>,
    /// Every check.
    pub checks: Vec<Check>,
}

impl Report {
    /// Builds the summaries from the checks.
    pub fn new(run: RunInfo, checks: Vec<Check>) -> Self {
        let mut suites = Vec::new();
        for suite in Suite::ALL {
            let of: Vec<&Check> = checks.iter().filter(|c| c.suite == suite).collect();
            if of.is_empty() {
                continue;
            }
            let passed = of.iter().filter(|c| c.passed).count();
            let failed = of.iter().filter(|c| c.failed()).count();
            let slowest = of
                .iter()
                .max_by_key(|c| c.micros)
                .map(|c| (c.name.clone(), c.target.clone(), c.micros));
            suites.push(SuiteSummary {
                suite,
                run: of.len(),
                passed,
                failed,
                not_run: of.len() - passed - failed,
                slowest,
            });
        }
        Self {
            run,
            suites,
            checks,
        }
    }

    /// No check failed (and at least one ran and held).
    pub fn passed(&self) -> bool {
        self.checks.iter().any(|c| c.passed) && !self.checks.iter().any(Check::failed)
    }

    /// The terminal summary: one line per suite, then every failure with its evidence.
    pub fn summary_table(&self) -> String {
        let mut out = format!(
            "{:<10} {:>7} {:>7} {:>7} {:>7}  SLOWEST STEP\n",
            "SUITE", "CHECKS", "PASSED", "FAILED", "NOT RUN"
        );
        for s in &self.suites {
            let slowest = s.slowest.as_ref().map_or_else(String::new, |(n, t, us)| {
                format!("{n} on {t}: {:.2} ms", *us as f64 / 1000.0)
            });
            let _ = writeln!(
                out,
                "{:<10} {:>7} {:>7} {:>7} {:>7}  {slowest}",
                s.suite.name(),
                s.run,
                s.passed,
                s.failed,
                s.not_run
            );
        }
        let skipped: Vec<&Check> = self.checks.iter().filter(|c| c.not_run.is_some()).collect();
        if !skipped.is_empty() {
            let _ = writeln!(out, "\nNot run:");
            for c in skipped {
                let why = c.not_run.as_deref().unwrap_or_default();
                let _ = writeln!(out, "- {} / {} on {}: {why}", c.suite, c.name, c.target);
            }
        }
        let failures: Vec<&Check> = self.checks.iter().filter(|c| c.failed()).collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailures:");
            for c in failures {
                let _ = writeln!(out, "- {} / {} on {}", c.suite, c.name, c.target);
                for e in &c.evidence {
                    let _ = writeln!(out, "    {e}");
                }
            }
        }
        let _ = writeln!(
            out,
            "\nseed {} · fabric {} · policy {} · profile {} · pcipool {}",
            self.run.seed, self.run.fabric, self.run.policy, self.run.profile, self.run.version
        );
        out
    }
}
