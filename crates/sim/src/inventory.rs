//! What `pcipool sim inventory` shows: every simulated host with its adapters and devices.

use std::fmt::Write as _;

use pcipool_backend::{DeviceRecord, Inventory as _};
use pcipool_describe::text::human_size;
use pcipool_fabric::NodeId;
use serde::Serialize;

use crate::{HostView, Sim};

/// One host.
#[derive(Debug, Serialize)]
pub struct HostRow {
    /// Its node id.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Its NTB adapters.
    pub adapters: Vec<String>,
    /// Its devices, as its kernel reports them.
    pub devices: Vec<DeviceRecord>,
}

/// Every host of `sim`.
///
/// # Errors
/// A host whose inventory cannot be read.
pub fn hosts(sim: &Sim) -> Result<Vec<HostRow>, crate::backend::SimInventoryError> {
    let mut rows = Vec::new();
    for host in sim.hosts() {
        let inv = HostView {
            sim,
            node: host.node,
        }
        .inventory()?;
        let adapters = sim
            .fabric
            .topology()
            .host(host.node)
            .map(|h| h.adapters.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default();
        rows.push(HostRow {
            node: host.node,
            name: host.name.clone(),
            adapters,
            devices: inv.devices,
        });
    }
    Ok(rows)
}

/// The hosts as a table, with the fabric's link count.
///
/// # Errors
/// Never in practice (formatting into a `String`).
pub fn table(rows: &[HostRow], links: usize) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    writeln!(
        out,
        "{:<6} {:<20} {:<22} DEVICES",
        "NODE", "HOST", "ADAPTERS"
    )?;
    for r in rows {
        let devices: Vec<String> = r
            .devices
            .iter()
            .map(|d| {
                let bars: Vec<String> = d
                    .facts
                    .bars
                    .iter()
                    .filter_map(|b| b.size)
                    .map(human_size)
                    .collect();
                let resets: Vec<&str> = d.reset_methods.iter().map(|m| m.sysfs_name()).collect();
                format!(
                    "{} {} [{}] reset={}{}",
                    d.bdf,
                    d.device_name.as_deref().unwrap_or("?"),
                    bars.join(","),
                    if resets.is_empty() {
                        "none".to_owned()
                    } else {
                        resets.join(",")
                    },
                    d.driver
                        .as_ref()
                        .map(|x| format!(" driver={x}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let first = devices.first().cloned().unwrap_or_else(|| "-".to_owned());
        writeln!(
            out,
            "{:<6} {:<20} {:<22} {first}",
            r.node.to_string(),
            r.name,
            r.adapters.join(",")
        )?;
        for d in devices.iter().skip(1) {
            writeln!(out, "{:<6} {:<20} {:<22} {d}", "", "", "")?;
        }
    }
    let devices: usize = rows.iter().map(|r| r.devices.len()).sum();
    writeln!(
        out,
        "\n{} hosts, {devices} devices, {links} links",
        rows.len()
    )?;
    Ok(out)
}
