//! How the API's answers read as text: the tables and records `pcipool` prints without `--output json`,
//! kept beside the client so every tool that shows them shows the same thing.

use pcipool_wire::{AuditView, DeviceDetail, DeviceView, Granted, HostView, LeaseView};

/// What a borrow granted, one line per lease.
#[must_use]
pub fn granted(granted: &[Granted]) -> String {
    granted
        .iter()
        .map(|g| match g.attached {
            Some(at) => format!(
                "lease {} granted: {} appears on the borrower as {at} (epoch {})\n",
                g.lease_id.0, g.fdid, g.epoch.0
            ),
            None => format!(
                "lease {} granted: {} (epoch {})\n",
                g.lease_id.0, g.fdid, g.epoch.0
            ),
        })
        .collect()
}

/// Leases as a table.
#[must_use]
pub fn leases(leases: &[LeaseView]) -> String {
    let mut out = format!(
        "{:<7} {:<20} {:<9} {:<10} {:<7} {:<6} STATE\n",
        "LEASE", "DEVICE", "BORROWER", "TENANT", "MODEL", "EPOCH"
    );
    for l in leases {
        out.push_str(&format!(
            "{:<7} {:<20} {:<9} {:<10} {:<7} {:<6} {}\n",
            l.lease_id.0,
            l.fdid.to_string(),
            l.borrower.to_string(),
            l.tenant,
            l.model.as_str(),
            l.epoch,
            l.state
        ));
    }
    out
}

/// Devices as a table.
#[must_use]
pub fn devices(devices: &[DeviceView]) -> String {
    // The name column is as wide as the longest name (real devices have long ones).
    let width = devices
        .iter()
        .map(|d| d.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut out = format!(
        "{:<20} {:<width$} {:<12} LEASES\n",
        "DEVICE", "NAME", "STATE"
    );
    for d in devices {
        let leases: Vec<String> = d.leases.iter().map(|l| l.0.to_string()).collect();
        out.push_str(&format!(
            "{:<20} {:<width$} {:<12} {}\n",
            d.fdid.to_string(),
            d.name,
            d.state,
            leases.join(",")
        ));
    }
    out
}

/// One device: what its agent reported, its state and its leases.
#[must_use]
pub fn device(d: &DeviceDetail) -> String {
    let i = &d.info;
    let models: Vec<String> = i.models.iter().map(ToString::to_string).collect();
    let bars: Vec<String> = i
        .bars
        .iter()
        .map(|(n, size)| format!("BAR{n} {size:#x}"))
        .collect();
    let mut out = format!(
        "device:   {}\nname:     {}\nids:      {:04x}:{:04x}  class {:06x}\nstate:    {}   (version {})\n\
         models:   {}\nlink:     x{} at {}.{} GT/s\nbars:     {}\ndriver:   {}\n",
        i.fdid,
        i.name,
        i.vendor_id,
        i.device_id,
        i.class,
        d.state,
        d.version,
        models.join(", "),
        i.link_width,
        i.link_gts_x10 / 10,
        i.link_gts_x10 % 10,
        bars.join(", "),
        i.driver.as_deref().unwrap_or("(none found)")
    );
    for (k, v) in &i.labels {
        out.push_str(&format!("label:    {k}={v}\n"));
    }
    for l in &d.leases {
        out.push_str(&format!(
            "lease:    {} to {} (tenant {}, {}, epoch {}, expires at {} ms)\n",
            l.lease_id, l.borrower, l.tenant, l.model, l.epoch, l.expires_at
        ));
    }
    out
}

/// Hosts as a table.
#[must_use]
pub fn hosts(hosts: &[HostView]) -> String {
    let mut out = format!(
        "{:<6} {:<20} {:<24} {:<8} AGENT\n",
        "NODE", "HOST", "ADAPTERS", "DEVICES"
    );
    for h in hosts {
        out.push_str(&format!(
            "{:<6} {:<20} {:<24} {:<8} {}\n",
            h.node.to_string(),
            h.name,
            h.adapters.join(","),
            h.devices,
            h.agent
        ));
    }
    out
}

/// Audit records as a table.
#[must_use]
pub fn audit(records: &[AuditView]) -> String {
    let mut out = format!(
        "{:<7} {:<14} {:<10} {:<20} {:<24} RESULT\n",
        "SEQ", "AT(ms)", "ACTOR", "TARGET", "ACTION"
    );
    for r in records {
        out.push_str(&format!(
            "{:<7} {:<14} {:<10} {:<20} {:<24} {}\n",
            r.seq, r.at, r.actor, r.target, r.action, r.result
        ));
    }
    out
}
