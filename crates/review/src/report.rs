//! The review's conclusions: per host the platform and endpoints, the links' budgets with the
//! oversubscribed ones named, the software path of each access model, and the qualification summary
//! with remedies. [`Review`] is also the JSON report.

use std::collections::BTreeMap;

use pcipool_qualify::AccessModel;
use serde::Serialize;

use crate::budget::{LinkBudget, budgets};
use crate::model::System;

/// The whole review.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    /// The pcipool that wrote it.
    pub pcipool_version: String,
    /// The system reviewed, as read.
    pub system: System,
    /// Totals to read first.
    pub summary: Summary,
    /// Every fabric link's bandwidth budget.
    pub links: Vec<LinkBudget>,
    /// How each access model reaches each kind of device.
    pub software_paths: Vec<SoftwarePath>,
    /// Qualification findings, grouped by model and code, with remedies.
    pub qualification: Vec<QualificationLine>,
    /// The sentences an operator must read: oversubscribed links, devices no model qualified.
    pub attention: Vec<String>,
}

/// Totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Hosts.
    pub hosts: usize,
    /// Hosts that lend devices.
    pub lenders: usize,
    /// Pooled devices (virtual functions counted on their own).
    pub devices: usize,
    /// Fabric switches.
    pub switches: usize,
    /// Fabric links.
    pub links: usize,
    /// Links whose devices can draw more than they carry.
    pub oversubscribed_links: usize,
    /// Devices qualified, per access model.
    pub qualified: BTreeMap<String, usize>,
}

/// The software path of one access model for one kind of device.
#[derive(Debug, Clone, Serialize)]
pub struct SoftwarePath {
    /// The access model.
    pub model: String,
    /// The kind of device (its model name).
    pub device: String,
    /// How many such devices qualified for the model.
    pub devices: usize,
    /// The driver that binds (on the borrower for `lend` and `vf`; none for `shared`).
    pub driver: String,
    /// How a return resets it, best method first.
    pub reset: String,
    /// The lender's IOMMU mode.
    pub iommu: String,
    /// The path in one sentence.
    pub path: String,
}

/// One qualification finding, over every device it was found on.
#[derive(Debug, Clone, Serialize)]
pub struct QualificationLine {
    /// The model.
    pub model: String,
    /// The stable code.
    pub code: String,
    /// `warn` or `fail`.
    pub severity: String,
    /// The devices, by fabric device id.
    pub devices: Vec<String>,
    /// One of its messages.
    pub message: String,
    /// What to do.
    pub remedy: String,
}

fn model_path(model: AccessModel, driver: &str) -> String {
    match model {
        AccessModel::Lend => format!(
            "the device is hot-added on the borrower through the NTB window and its native driver ({driver}) binds there; the lender unbinds it first and resets it on return"
        ),
        AccessModel::Vf => format!(
            "one SR-IOV virtual function is hot-added on the borrower and its driver ({driver}) binds; the physical function stays with the lender's driver"
        ),
        AccessModel::Shared => "applications on several hosts map its BARs and their own DMA segments through pcipool-access; no kernel driver binds on the borrowers".into(),
    }
}

impl Review {
    /// What a terminal shows: the totals, then what needs attention.
    pub fn text_summary(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "{}: {} hosts ({} lending), {} devices, {} switches, {} links, {} oversubscribed",
            self.system.source,
            s.hosts,
            s.lenders,
            s.devices,
            s.switches,
            s.links,
            s.oversubscribed_links
        );
        for line in &self.attention {
            out.push_str("\n  ");
            out.push_str(line);
        }
        out
    }
}

/// Reviews `system`.
pub fn review(system: System) -> Review {
    let links = budgets(&system);
    let mut attention: Vec<String> = links
        .iter()
        .filter(|l| l.oversubscribed)
        .map(|l| {
            format!(
                "oversubscribed: {} - {} (Gen{} x{}, {} MB/s): {} devices behind it can push {} MB/s across it ({}%)",
                l.a, l.b, l.generation, l.width, l.capacity_mb_per_s, l.devices, l.demand_mb_per_s, l.load_pct
            )
        })
        .collect();
    let mut qualified: BTreeMap<String, usize> = AccessModel::ALL
        .iter()
        .map(|m| (m.to_string(), 0))
        .collect();
    let mut paths: BTreeMap<(String, String), SoftwarePath> = BTreeMap::new();
    let mut findings: BTreeMap<(String, String), QualificationLine> = BTreeMap::new();
    for host in &system.hosts {
        let iommu = host
            .platform
            .as_ref()
            .map_or_else(|| "not reported".to_owned(), |p| p.iommu.clone());
        for d in &host.devices {
            if d.info.models.is_empty() {
                attention.push(format!(
                    "{} ({}) qualified for no access model: {}",
                    d.info.fdid,
                    d.info.name,
                    if d.reasons.is_empty() {
                        "see its findings".to_owned()
                    } else {
                        d.reasons.join(", ")
                    }
                ));
            }
            for model in &d.info.models {
                *qualified.entry(model.to_string()).or_default() += 1;
                let driver = match model {
                    AccessModel::Shared => "none (user space)".to_owned(),
                    _ => d.info.driver.clone().unwrap_or_else(|| "unknown".into()),
                };
                let entry = paths
                    .entry((model.to_string(), d.info.name.clone()))
                    .or_insert_with(|| SoftwarePath {
                        model: model.to_string(),
                        device: d.info.name.clone(),
                        devices: 0,
                        reset: if d.reset_methods.is_empty() {
                            "not reported".into()
                        } else {
                            d.reset_methods.join(", ")
                        },
                        iommu: iommu.clone(),
                        path: model_path(*model, &driver),
                        driver,
                    });
                entry.devices += 1;
            }
            for f in &d.findings {
                let line = findings
                    .entry((f.model.clone(), f.code.clone()))
                    .or_insert_with(|| QualificationLine {
                        model: f.model.clone(),
                        code: f.code.clone(),
                        severity: f.severity.clone(),
                        devices: Vec::new(),
                        message: f.message.clone(),
                        remedy: f.remedy.clone(),
                    });
                line.devices.push(d.info.fdid.to_string());
            }
            // A live pool reports reasons (`lend: CODE`) without the rules' remedies.
            if d.findings.is_empty() {
                for reason in &d.reasons {
                    let (model, code) = reason.split_once(": ").unwrap_or(("", reason));
                    let line = findings
                        .entry((model.to_owned(), code.to_owned()))
                        .or_insert_with(|| QualificationLine {
                            model: model.to_owned(),
                            code: code.to_owned(),
                            severity: "fail".into(),
                            devices: Vec::new(),
                            message: format!("reported by the host's agent: {reason}"),
                            remedy: "run `pcipool qualify` on the lender for the evidence and the remedy".into(),
                        });
                    line.devices.push(d.info.fdid.to_string());
                }
            }
        }
    }
    attention.dedup();
    let summary = Summary {
        hosts: system.hosts.len(),
        lenders: system
            .hosts
            .iter()
            .filter(|h| !h.devices.is_empty())
            .count(),
        devices: system.hosts.iter().map(|h| h.devices.len()).sum(),
        switches: system.switches.len(),
        links: system.links.len(),
        oversubscribed_links: links.iter().filter(|l| l.oversubscribed).count(),
        qualified,
    };
    Review {
        pcipool_version: env!("CARGO_PKG_VERSION").to_owned(),
        system,
        summary,
        links,
        software_paths: paths.into_values().collect(),
        qualification: findings.into_values().collect(),
        attention,
    }
}
