//! The report as one self-contained HTML page: summary table, failures with their evidence, and a plot of
//! step latencies (inline SVG), viewable offline. A small inline script adds a "failures only" filter.

use std::fmt::Write as _;

use crate::report::{Check, Report, Suite};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Sorted step latencies (ms) of the checks named `name`, for one curve of the plot.
fn latencies(checks: &[Check], name_prefix: &str) -> Vec<f64> {
    let mut v: Vec<f64> = checks
        .iter()
        .filter(|c| c.micros > 0 && c.name.starts_with(name_prefix))
        .map(|c| c.micros as f64 / 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The value at or below which `per_mille` of the sorted `values` lie (nearest rank).
fn percentile(values: &[f64], per_mille: usize) -> Option<f64> {
    let rank = (values.len() * per_mille).div_ceil(1000).max(1);
    values.get(rank - 1).copied()
}

/// A table of each latency distribution's count, p50, p99 and maximum, in milliseconds.
fn figures(rows: &[(&str, &[f64])]) -> String {
    let mut out = String::from(
        r#"<table id="latency-figures"><thead><tr><th>step</th><th>count</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr></thead><tbody>"#,
    );
    for (label, values) in rows {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(label),
            values.len(),
            ms(percentile(values, 500)),
            ms(percentile(values, 990)),
            ms(values.last().copied())
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// An SVG plot: each curve is a latency distribution (x = fraction of steps, y = milliseconds).
fn plot(curves: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, pad) = (640.0, 260.0, 40.0);
    let max = curves
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let mut svg = format!(
        r#"<svg id="latency-plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="step latencies">"#
    );
    let _ = write!(
        svg,
        r##"<rect x="{pad}" y="10" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        w - pad - 10.0,
        h - pad - 10.0
    );
    let _ = write!(
        svg,
        r##"<text x="{pad}" y="{}" font-size="11">0</text><text x="4" y="20" font-size="11">{max:.2} ms</text><text x="{}" y="{}" font-size="11">share of steps</text>"##,
        h - pad + 14.0,
        w / 2.0,
        h - 8.0
    );
    for (i, (label, colour, values)) in curves.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let n = values.len() as f64;
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let x = pad + (w - pad - 10.0) * (k as f64 + 1.0) / n;
                let y = (h - pad) - (h - pad - 10.0) * (v / max);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="12" fill="{colour}">{}</text>"#,
            pad + 10.0,
            28.0 + 14.0 * i as f64,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page.
pub fn to_html(report: &Report) -> String {
    let mut out = String::from(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pcipool validation report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; }
tr.failed td { background: #fde2e2; }
tr.not-run td { background: #eee; color: #555; }
.verdict-pass { color: #17692c; } .verdict-fail { color: #a11; }
pre { margin: 0; font-size: 12px; white-space: pre-wrap; }
</style></head><body>
"#,
    );
    let verdict = if report.passed() {
        r#"<h1 class="verdict-pass">pcipool validation: passed</h1>"#
    } else {
        r#"<h1 class="verdict-fail">pcipool validation: FAILED</h1>"#
    };
    out.push_str(verdict);
    let r = &report.run;
    let _ = write!(
        out,
        "<p>seed {} · fabric {} · policy {} · profile {} · pcipool {}</p>",
        r.seed,
        esc(&r.fabric),
        esc(&r.policy),
        esc(&r.profile),
        esc(&r.version)
    );
    out.push_str(
        r#"<h2>Summary</h2><table id="summary"><thead><tr><th>suite</th><th>checks</th><th>passed</th><th>failed</th><th>not run</th><th>slowest step</th></tr></thead><tbody>"#,
    );
    for s in &report.suites {
        let slowest = s.slowest.as_ref().map_or_else(String::new, |(n, t, us)| {
            format!("{} on {}: {:.2} ms", esc(n), esc(t), *us as f64 / 1000.0)
        });
        let _ = write!(
            out,
            r#"<tr class="{}"><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{slowest}</td></tr>"#,
            if s.failed > 0 { "failed" } else { "passed" },
            s.suite.name(),
            s.run,
            s.passed,
            s.failed,
            s.not_run
        );
    }
    out.push_str("</tbody></table>");
    out.push_str("<h2>Step latencies</h2>");
    let (lends, returns) = (
        latencies(&report.checks, "lent under"),
        latencies(&report.checks, "returned to available"),
    );
    out.push_str(&figures(&[("lend", &lends), ("return", &returns)]));
    out.push_str(&plot(&[
        ("lend", "#1f77b4", lends),
        ("return", "#d62728", returns),
    ]));
    out.push_str(
        r#"<h2>Checks</h2><label><input type="checkbox" id="failures-only"> failures only</label>
<table id="checks"><thead><tr><th>suite</th><th>check</th><th>on</th><th>result</th><th>ms</th><th>evidence</th></tr></thead><tbody>"#,
    );
    for suite in Suite::ALL {
        for c in report.checks.iter().filter(|c| c.suite == suite) {
            let _ = write!(
                out,
                r#"<tr class="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{:.2}</td><td><pre>{}</pre></td></tr>"#,
                match (c.passed, c.failed()) {
                    (true, _) => "passed",
                    (false, true) => "failed",
                    (false, false) => "not-run",
                },
                c.suite.name(),
                esc(&c.name),
                esc(&c.target),
                match (c.passed, c.failed()) {
                    (true, _) => "pass",
                    (false, true) => "FAIL",
                    (false, false) => "NOT RUN",
                },
                c.micros as f64 / 1000.0,
                esc(&c.evidence.join("\n"))
            );
        }
    }
    out.push_str("</tbody></table>\n");
    out.push_str(
        r##"<script>
(function () {
  var box = document.getElementById("failures-only");
  var rows = document.querySelectorAll("#checks tbody tr");
  box.addEventListener("change", function () {
    rows.forEach(function (row) {
      row.style.display = box.checked && !row.classList.contains("failed") ? "none" : "";
    });
  });
  document.body.setAttribute("data-ready", String(rows.length));
})();
</script>
</body></html>
"##,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunInfo;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            (
                percentile(&v, 500),
                percentile(&v, 990),
                percentile(&[], 500)
            ),
            (Some(2.0), Some(4.0), None)
        );
        assert!(
            figures(&[("lend", &v)])
                .contains("<td>lend</td><td class=\"num\">4</td><td class=\"num\">2.00</td>")
        );
    }

    #[test]
    fn escapes_what_it_shows() {
        let report = Report::new(
            RunInfo {
                version: "v".into(),
                seed: 1,
                fabric: "<lab>".into(),
                policy: "p&q".into(),
                profile: "short".into(),
            },
            vec![Check {
                suite: Suite::Cycles,
                name: "x<script>".into(),
                target: "n1".into(),
                passed: false,
                evidence: vec!["\"quoted\"".into()],
                micros: 1500,
                not_run: None,
            }],
        );
        let html = to_html(&report);
        assert!(
            html.contains("&lt;lab&gt;")
                && html.contains("p&amp;q")
                && html.contains("x&lt;script&gt;")
                && html.contains("&quot;quoted&quot;")
                && !html.contains("x<script>")
                && html.contains("FAILED")
        );
    }
}
