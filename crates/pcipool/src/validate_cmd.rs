//! `pcipool validate`: runs the validation session, shows progress on a terminal, prints the summary
//! and writes the reports.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pcipool_validate::session::{self, Session, SessionError};

use crate::{BadInput, NotFound, UsageError};

/// Runs `session` and writes `reports` (`.json` or `.html`). Exit 1 when any check fails.
///
/// # Errors
/// Bad files (exit 3), suites that cannot run where asked (exit 2), setup failures.
pub fn run(session: &Session, reports: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut stderr = std::io::stderr();
    // Live progress only on a terminal; logs and pipes get the summary alone.
    let live = std::io::IsTerminal::is_terminal(&stderr);
    let report = session::run(session, &mut |p| {
        if !live {
            return;
        }
        // Progress on a terminal is a courtesy: a failed write must not stop the run.
        let _courtesy = write!(stderr, "{}", p.bar()).and_then(|()| stderr.flush());
    })
    .map_err(|e| match e {
        SessionError::Usage(m) => anyhow::Error::new(UsageError(m)),
        SessionError::NotFound(m) => NotFound(m).into(),
        SessionError::Fabric(e @ pcipool_sim::LoadError::Invalid { .. }) => {
            BadInput(e.to_string()).into()
        }
        other => anyhow::Error::new(other),
    })?;
    if live {
        writeln!(stderr).context("writing to stderr")?;
    }
    crate::commands::emit(&report.summary_table())?;
    crate::commands::emit(&format!(
        "{} checks in {:.1} s\n",
        report.checks.len(),
        started.elapsed().as_secs_f64()
    ))?;
    for path in reports {
        let body = if path.extension().and_then(|e| e.to_str()) == Some("html") {
            pcipool_validate::html::to_html(&report)
        } else {
            let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
            format!("{json}\n")
        };
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
