//! The validation report's HTML page in a real headless browser (Debian's chromium, installed by the
//! test command): it loads without console errors and shows the summary table.

use std::path::Path;
use std::process::Command;

/// Loads `page` in headless chromium; returns (DOM after load, console lines).
fn load(page: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (the test command installs it)");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn the_html_report_loads_cleanly_and_shows_the_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    let run = crate::support::pcipool(&[
        "validate",
        "--cycles",
        "1",
        "--report",
        page.to_str().expect("utf-8"),
    ]);
    let (dom, console) = load(&page);
    // The checker itself must be able to fail: a page with a script error is caught.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<html><body><script>undefinedFunction();</script></body></html>",
    )
    .expect("write");
    let (_, broken_console) = load(&broken);
    let summary_rows = dom
        .split(r#"<table id="summary">"#)
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .map_or(0, |t| t.matches("<tr class=").count());
    assert_eq!(
        (
            run.status.code(),
            console,
            summary_rows,
            dom.contains("data-ready=\"") && !dom.contains("data-ready=\"0\""),
            // Both curves (lend and return) are drawn.
            dom.matches("<polyline").count(),
            broken_console.iter().any(|l| l.contains("Uncaught")),
        ),
        (Some(0), Vec::<String>::new(), 7, true, 2, true)
    );
}
