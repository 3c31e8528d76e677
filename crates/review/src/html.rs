//! The review as one self-contained HTML page: inline styles, no script, nothing fetched.

use std::fmt::Write as _;

use crate::report::Review;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1c2733;max-width:1400px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d5dbe1}\
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #d5dbe1;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#eef2f5}tr.over td{background:#fde8e6}.bad{color:#b3261e;font-weight:600}.ok{color:#1e6b35}\
ul.attention li{color:#b3261e}code{background:#f2f4f6;padding:0 3px}.small{color:#5b6773;font-size:12px}";

/// A table from a header and rows of already-escaped cells; `class` marks a row.
fn table(out: &mut String, id: &str, header: &[&str], rows: &[(String, Vec<String>)]) {
    let _ = write!(out, "<table id=\"{id}\"><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for (class, cells) in rows {
        if class.is_empty() {
            out.push_str("<tr>");
        } else {
            let _ = write!(out, "<tr class=\"{class}\">");
        }
        for c in cells {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn plain(rows: Vec<Vec<String>>) -> Vec<(String, Vec<String>)> {
    rows.into_iter()
        .map(|r| (String::new(), r.iter().map(|c| esc(c)).collect()))
        .collect()
}

/// The page.
pub fn render(review: &Review) -> String {
    let s = &review.summary;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pcipool system review</title>\
<style>{STYLE}</style></head><body><h1>pcipool system review</h1>\
<p class=\"small\">{} - written by pcipool {}</p>",
        esc(&review.system.source),
        esc(&review.pcipool_version)
    );
    let qualified: Vec<String> = s
        .qualified
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    let _ = write!(
        out,
        "<p id=\"summary\">{} hosts ({} lending), {} pooled devices, {} switches, {} links, \
<span class=\"{}\">{} oversubscribed</span>; qualified: {}.</p>",
        s.hosts,
        s.lenders,
        s.devices,
        s.switches,
        s.links,
        if s.oversubscribed_links > 0 {
            "bad"
        } else {
            "ok"
        },
        s.oversubscribed_links,
        esc(&qualified.join(", "))
    );
    out.push_str("<h2>Needs attention</h2>");
    if review.attention.is_empty() {
        out.push_str("<p class=\"ok\">Nothing: every link carries what its devices can draw, and every device qualified for a model.</p>");
    } else {
        out.push_str("<ul class=\"attention\" id=\"attention\">");
        for a in &review.attention {
            let _ = write!(out, "<li>{}</li>", esc(a));
        }
        out.push_str("</ul>");
    }

    out.push_str("<h2>Hosts</h2>");
    let hosts = review
        .system
        .hosts
        .iter()
        .map(|h| {
            let p = h.platform.as_ref();
            let get = |f: fn(&crate::model::Platform) -> String| {
                p.map_or_else(|| "not reported".to_owned(), f)
            };
            vec![
                format!("{} {}", h.node, h.name),
                get(|p| p.root_complex.clone()),
                get(|p| p.cpu.clone()),
                get(|p| format!("{} / {}", p.os, p.kernel)),
                format!("{} ({})", h.agent, get(|p| p.agent_version.clone())),
                get(|p| p.iommu.clone()),
                get(|p| {
                    p.supports
                        .iter()
                        .map(|(f, yes)| format!("{f}: {}", if *yes { "yes" } else { "no" }))
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
                h.adapters.join(", "),
                h.devices.len().to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        "hosts",
        &[
            "host",
            "root complex",
            "CPU",
            "OS / kernel",
            "agent",
            "IOMMU",
            "kernel supports",
            "NTB adapters",
            "devices",
        ],
        &plain(hosts),
    );

    out.push_str("<h2>Fabric links: bandwidth budget</h2><p class=\"small\">Cut the link in two sides: what can flow across it one way is the lesser of what the lenders on one side can draw (each device at its own link's speed) and what the hosts on the other side can take in; the busier way is shown. Oversubscribed rows are red; a link on a cycle is not budgeted.</p>");
    let links = review
        .links
        .iter()
        .map(|l| {
            let cells = vec![
                l.a.clone(),
                l.b.clone(),
                format!("{:?}", l.kind),
                format!("Gen{} x{}", l.generation, l.width),
                l.capacity_mb_per_s.to_string(),
                l.devices.to_string(),
                l.demand_mb_per_s.to_string(),
                format!("{}%", l.load_pct),
                if l.redundant {
                    "redundant".into()
                } else if l.oversubscribed {
                    "oversubscribed".into()
                } else {
                    "fits".into()
                },
            ];
            (
                if l.oversubscribed {
                    "over".to_owned()
                } else {
                    String::new()
                },
                cells.iter().map(|c| esc(c)).collect(),
            )
        })
        .collect::<Vec<_>>();
    table(
        &mut out,
        "links",
        &[
            "end",
            "end",
            "kind",
            "link",
            "carries MB/s",
            "devices behind",
            "can flow MB/s",
            "load",
            "verdict",
        ],
        &links,
    );

    out.push_str("<h2>Endpoints</h2>");
    for h in review.system.hosts.iter().filter(|h| !h.devices.is_empty()) {
        let _ = write!(
            out,
            "<h3>{} {}</h3>",
            esc(&h.node.to_string()),
            esc(&h.name)
        );
        let rows = h
            .devices
            .iter()
            .map(|d| {
                let i = &d.info;
                vec![
                    i.fdid.to_string(),
                    i.name.clone(),
                    format!("{:04x}:{:04x}", i.vendor_id, i.device_id),
                    format!("{:06x}", i.class),
                    format!(
                        "x{} @ {}.{} GT/s",
                        i.link_width,
                        i.link_gts_x10 / 10,
                        i.link_gts_x10 % 10
                    ),
                    i.bars
                        .iter()
                        .map(|(n, size)| format!("BAR{n} {}", size_text(*size)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    i.driver.clone().unwrap_or_default(),
                    d.reset_methods.join(", "),
                    i.models
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    d.state.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &format!("endpoints-{}", h.node),
            &[
                "fdid", "device", "ids", "class", "link", "BARs", "driver", "reset", "models",
                "state",
            ],
            &plain(rows),
        );
    }

    out.push_str("<h2>Software path per access model</h2>");
    let paths = review
        .software_paths
        .iter()
        .map(|p| {
            vec![
                p.model.clone(),
                p.device.clone(),
                p.devices.to_string(),
                p.driver.clone(),
                p.reset.clone(),
                p.iommu.clone(),
                p.path.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        "paths",
        &[
            "model",
            "device",
            "count",
            "driver",
            "reset",
            "lender IOMMU",
            "path",
        ],
        &plain(paths),
    );

    out.push_str("<h2>Qualification</h2>");
    if review.qualification.is_empty() {
        out.push_str("<p class=\"ok\">No warnings or failures.</p>");
    } else {
        let lines = review
            .qualification
            .iter()
            .map(|q| {
                vec![
                    q.model.clone(),
                    q.code.clone(),
                    q.severity.clone(),
                    format!(
                        "{} ({})",
                        q.devices.len(),
                        q.devices
                            .iter()
                            .take(4)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    q.message.clone(),
                    q.remedy.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            "qualification",
            &["model", "code", "severity", "devices", "finding", "remedy"],
            &plain(lines),
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn size_text(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || bytes.to_string(),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}
