//! Saying out loud that a test could not run here.
//!
//! A test that needs something this machine lacks (a PCI bus, the GPL corpus, a root disk on a block
//! device) calls [`skipped`] and returns. The line goes straight to the process's stderr, past the test
//! harness's output capture, so it shows in every run's log, and `scripts/test` counts such lines in its
//! closing summary. A test never returns early without it.

use std::io::Write as _;

/// Prints `SKIPPED <test>: <why>` where the run's log shows it.
pub fn skipped(test: &str, why: &str) {
    // Written to the stderr handle itself: libtest captures only the print macros, and a skip that
    // is captured away is a test that passed silently.
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
