//! CLI commands that talk to the controller's API.

use std::fmt::Write as _;
use std::process::ExitCode;

use pcipool_client::{Client, ClientError};

use crate::cli::{ClientCall, OutputFormat};
use crate::commands::emit;
use crate::{BadInput, NotFound};

fn json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut t = serde_json::to_string_pretty(v)?;
    t.push('\n');
    emit(&t)
}

fn map_err(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { code, .. } if code == "NO_SUCH_LEASE" || code == "NO_SUCH_WORKFLOW" => {
            NotFound(e.to_string()).into()
        }
        ClientError::Api { code, .. } if code == "BAD_REQUEST" => BadInput(e.to_string()).into(),
        _ => anyhow::Error::new(e),
    }
}

/// Runs one client call.
///
/// # Errors
/// Transport and API errors.
pub fn run(url: &str, token: &str, call: ClientCall) -> anyhow::Result<ExitCode> {
    let client = Client::new(url, token);
    match call {
        ClientCall::Borrow(request, output) => {
            let granted = client.borrow(&request).map_err(map_err)?;
            match output {
                OutputFormat::Json => json(&granted)?,
                OutputFormat::Table => {
                    let mut out = String::new();
                    for g in &granted {
                        let _ = match g.attached {
                            Some(at) => writeln!(
                                out,
                                "lease {} granted: {} appears on the borrower as {at} (epoch {})",
                                g.lease_id.0, g.fdid, g.epoch.0
                            ),
                            None => writeln!(
                                out,
                                "lease {} granted: {} (epoch {})",
                                g.lease_id.0, g.fdid, g.epoch.0
                            ),
                        };
                    }
                    emit(&out)?;
                }
            }
        }
        ClientCall::Release(lease) => {
            client.release(lease).map_err(map_err)?;
            emit(&format!("lease {lease} released\n"))?;
        }
        ClientCall::Renew(lease) => {
            // Renewals present the lease's current epoch: a fenced lease is refused, not revived.
            let held = client.leases().map_err(map_err)?;
            let Some(l) = held.iter().find(|l| l.lease_id.0 == lease) else {
                return Err(crate::NotFound(format!("no lease {lease}")).into());
            };
            client.renew(lease, l.epoch).map_err(map_err)?;
            emit(&format!("lease {lease} renewed\n"))?;
        }
        ClientCall::Downgrade(lease, max_sharers) => {
            client.downgrade(lease, max_sharers).map_err(map_err)?;
            emit(&format!(
                "lease {lease} downgraded: up to {max_sharers} hosts may share its device\n"
            ))?;
        }
        ClientCall::Leases(output) => {
            let leases = client.leases().map_err(map_err)?;
            match output {
                OutputFormat::Json => json(&leases)?,
                OutputFormat::Table => {
                    let mut out = format!(
                        "{:<7} {:<20} {:<9} {:<10} {:<7} {:<6} STATE\n",
                        "LEASE", "DEVICE", "BORROWER", "TENANT", "MODEL", "EPOCH"
                    );
                    for l in &leases {
                        let _ = writeln!(
                            out,
                            "{:<7} {:<20} {:<9} {:<10} {:<7} {:<6} {}",
                            l.lease_id.0,
                            l.fdid.to_string(),
                            l.borrower.to_string(),
                            l.tenant,
                            l.model.as_str(),
                            l.epoch,
                            l.state
                        );
                    }
                    emit(&out)?;
                }
            }
        }
        ClientCall::Devices(output) => {
            let devices = client.devices().map_err(map_err)?;
            match output {
                OutputFormat::Json => json(&devices)?,
                OutputFormat::Table => {
                    let mut out =
                        format!("{:<20} {:<10} {:<12} LEASES\n", "DEVICE", "NAME", "STATE");
                    for d in &devices {
                        let leases: Vec<String> =
                            d.leases.iter().map(|l| l.0.to_string()).collect();
                        let _ = writeln!(
                            out,
                            "{:<20} {:<10} {:<12} {}",
                            d.fdid.to_string(),
                            d.name,
                            d.state,
                            leases.join(",")
                        );
                    }
                    emit(&out)?;
                }
            }
        }
        ClientCall::Device(fdid, output) => {
            let d = client.device(&fdid.to_string()).map_err(map_err)?;
            match output {
                OutputFormat::Json => json(&d)?,
                OutputFormat::Table => {
                    let i = &d.info;
                    let mut out = String::new();
                    let _ = writeln!(out, "device:   {}", i.fdid);
                    let _ = writeln!(out, "name:     {}", i.name);
                    let _ = writeln!(
                        out,
                        "ids:      {:04x}:{:04x}  class {:06x}",
                        i.vendor_id, i.device_id, i.class
                    );
                    let _ = writeln!(out, "state:    {}   (version {})", d.state, d.version);
                    let models: Vec<String> = i.models.iter().map(ToString::to_string).collect();
                    let _ = writeln!(out, "models:   {}", models.join(", "));
                    let _ = writeln!(
                        out,
                        "link:     x{} at {}.{} GT/s",
                        i.link_width,
                        i.link_gts_x10 / 10,
                        i.link_gts_x10 % 10
                    );
                    let bars: Vec<String> = i
                        .bars
                        .iter()
                        .map(|(n, size)| format!("BAR{n} {size:#x}"))
                        .collect();
                    let _ = writeln!(out, "bars:     {}", bars.join(", "));
                    let _ = writeln!(
                        out,
                        "driver:   {}",
                        i.driver.as_deref().unwrap_or("(none found)")
                    );
                    for (k, v) in &i.labels {
                        let _ = writeln!(out, "label:    {k}={v}");
                    }
                    for l in &d.leases {
                        let _ = writeln!(
                            out,
                            "lease:    {} to {} (tenant {}, {}, epoch {}, expires at {} ms)",
                            l.lease_id, l.borrower, l.tenant, l.model, l.epoch, l.expires_at
                        );
                    }
                    emit(&out)?;
                }
            }
        }
        ClientCall::Hosts(output) => {
            let hosts = client.hosts().map_err(map_err)?;
            match output {
                OutputFormat::Json => json(&hosts)?,
                OutputFormat::Table => {
                    let mut out = format!(
                        "{:<6} {:<20} {:<24} {:<8} AGENT\n",
                        "NODE", "HOST", "ADAPTERS", "DEVICES"
                    );
                    for h in &hosts {
                        let _ = writeln!(
                            out,
                            "{:<6} {:<20} {:<24} {:<8} {}",
                            h.node.to_string(),
                            h.name,
                            h.adapters.join(","),
                            h.devices,
                            h.agent
                        );
                    }
                    emit(&out)?;
                }
            }
        }
        ClientCall::DeviceAction(target, action) => {
            // A node id (`n1`) means every device of that host.
            let Ok(node) = target.parse::<pcipool_fabric::NodeId>() else {
                let v = client.device_action(&target, action).map_err(map_err)?;
                emit(&format!(
                    "{target} is now {}\n",
                    v["state"].as_str().unwrap_or("?")
                ))?;
                return Ok(ExitCode::SUCCESS);
            };
            let devices: Vec<_> = client
                .devices()
                .map_err(map_err)?
                .into_iter()
                .filter(|d| d.fdid.node == node)
                .collect();
            if devices.is_empty() {
                return Err(NotFound(format!("no pooled devices on {node}")).into());
            }
            let mut out = String::new();
            let mut refused = 0;
            for d in devices {
                match client.device_action(&d.fdid.to_string(), action) {
                    Ok(v) => {
                        let _ = writeln!(
                            out,
                            "{} is now {}",
                            d.fdid,
                            v["state"].as_str().unwrap_or("?")
                        );
                    }
                    Err(e) => {
                        refused += 1;
                        let _ = writeln!(out, "{} stays {}: {e}", d.fdid, d.state);
                    }
                }
            }
            emit(&out)?;
            if refused > 0 {
                // Devices still lent (or otherwise busy) were left alone; say so in the exit code.
                return Ok(ExitCode::from(1));
            }
        }
        ClientCall::Workflow(id, wait) => {
            let v = if wait == 0 {
                client.workflow(id)
            } else {
                client.workflow_wait(id, wait)
            }
            .map_err(map_err)?;
            json(&v)?;
        }
        ClientCall::Audit(from, limit, output) => {
            let records = client.audit(from, limit).map_err(map_err)?;
            match output {
                OutputFormat::Json => json(&records)?,
                OutputFormat::Table => {
                    let mut out = format!(
                        "{:<7} {:<14} {:<10} {:<20} {:<24} RESULT\n",
                        "SEQ", "AT(ms)", "ACTOR", "TARGET", "ACTION"
                    );
                    for r in &records {
                        let _ = writeln!(
                            out,
                            "{:<7} {:<14} {:<10} {:<20} {:<24} {}",
                            r.seq, r.at, r.actor, r.target, r.action, r.result
                        );
                    }
                    emit(&out)?;
                }
            }
        }
        ClientCall::AuditVerify => {
            let v = client.audit_verify().map_err(map_err)?;
            if v.ok {
                emit(&format!("audit chain intact: {} records\n", v.records))?;
            } else {
                emit(&format!(
                    "AUDIT CHAIN BROKEN after {} records: {}\n",
                    v.records,
                    v.error.unwrap_or_default()
                ))?;
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
