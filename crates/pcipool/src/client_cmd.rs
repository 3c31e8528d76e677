//! The commands that talk to the controller's API.

use std::fmt::Write as _;
use std::process::ExitCode;

use pcipool_client::{Client, ClientError, text};
use pcipool_fabric::DeviceOrHost;
use pcipool_wire::DeviceAction;

use crate::cli::{
    ApiArgs, AuditCommand, ClientCommand, DeviceCommand, LeaseCommand, OutputFormat,
    QuarantineCommand, WorkflowCommand,
};
use crate::commands::{emit, emit_json, show};
use crate::{BadInput, NotFound};

fn map_err(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { code, .. } if code == "NO_SUCH_LEASE" || code == "NO_SUCH_WORKFLOW" => {
            NotFound(e.to_string()).into()
        }
        ClientError::Api { code, .. } if code == "BAD_REQUEST" => BadInput(e.to_string()).into(),
        _ => anyhow::Error::new(e),
    }
}

fn said(line: String) -> anyhow::Result<ExitCode> {
    emit(&format!("{line}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one client command.
///
/// # Errors
/// Transport and API errors.
pub fn run(api: &ApiArgs, command: ClientCommand) -> anyhow::Result<ExitCode> {
    use ClientCommand as C;
    let client = Client::new(&api.url, &api.token);
    match command {
        C::Borrow {
            class,
            device,
            host,
            count,
            model,
            duration,
            max_sharers,
            request_id,
            no_wait,
            output,
        } => {
            let request = pcipool_wire::BorrowRequest {
                selector: pcipool_pool::schedule::Selector {
                    class,
                    fdid: device,
                    ..pcipool_pool::schedule::Selector::default()
                },
                count,
                model,
                borrower: host,
                duration_secs: duration,
                max_sharers,
                request_id,
                wait: !no_wait,
            };
            // On a terminal (or with PCIPOOL_PROGRESS set), the step each lend is on while it waits.
            let follow = std::io::IsTerminal::is_terminal(&std::io::stderr())
                || std::env::var_os("PCIPOOL_PROGRESS").is_some();
            let granted = if follow {
                client.borrow_following(&request, |line| eprintln!("{line}"))
            } else {
                client.borrow(&request)
            }
            .map_err(map_err)?;
            show(output, granted.as_slice(), text::granted)
        }
        C::Release { lease } => {
            client.release(lease).map_err(map_err)?;
            said(format!("lease {lease} released"))
        }
        C::Lease(which) => match which {
            LeaseCommand::List { output } => {
                show(output, &client.leases().map_err(map_err)?, |l| {
                    text::leases(l)
                })
            }
            LeaseCommand::Renew { lease } => {
                // Renewals present the lease's current epoch: a fenced lease is refused, not revived.
                let held = client.leases().map_err(map_err)?;
                let Some(l) = held.iter().find(|l| l.lease_id.0 == lease) else {
                    return Err(NotFound(format!("no lease {lease}")).into());
                };
                client.renew(lease, l.epoch).map_err(map_err)?;
                said(format!("lease {lease} renewed"))
            }
            LeaseCommand::Downgrade { lease, max_sharers } => {
                client.downgrade(lease, max_sharers).map_err(map_err)?;
                said(format!(
                    "lease {lease} downgraded: up to {max_sharers} hosts may share its device"
                ))
            }
        },
        C::Device(which) => match which {
            DeviceCommand::List { output } => {
                show(output, &client.devices().map_err(map_err)?, |d| {
                    text::devices(d)
                })
            }
            DeviceCommand::Show { fdid, output } => {
                let d = client.device(&fdid.to_string()).map_err(map_err)?;
                show(output, &d, text::device)
            }
        },
        C::Drain { target, local } => {
            let action = if local {
                DeviceAction::DrainLocal
            } else {
                DeviceAction::Drain
            };
            device_action(&client, target, action)
        }
        C::Undrain { target } => device_action(&client, target, DeviceAction::Undrain),
        C::Quarantine(QuarantineCommand::Clear { target }) => {
            device_action(&client, target, DeviceAction::ClearQuarantine)
        }
        C::Workflow(WorkflowCommand::Show { id, wait }) => {
            let v = if wait == 0 {
                client.workflow(id)
            } else {
                client.workflow_wait(id, wait)
            }
            .map_err(map_err)?;
            emit_json(&v)?;
            Ok(ExitCode::SUCCESS)
        }
        C::Audit(which) => match which {
            AuditCommand::List {
                from,
                limit,
                output,
            } => {
                let records = client.audit(from, limit).map_err(map_err)?;
                show(output, &records, |r| text::audit(r))
            }
            AuditCommand::Verify => {
                let v = client.audit_verify().map_err(map_err)?;
                if v.ok {
                    return said(format!("audit chain intact: {} records", v.records));
                }
                emit(&format!(
                    "AUDIT CHAIN BROKEN after {} records: {}\n",
                    v.records,
                    v.error.unwrap_or_default()
                ))?;
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// An operator action on a device, or on every device of a host (busy ones are left alone: exit 1).
fn device_action(
    client: &Client,
    target: DeviceOrHost,
    action: DeviceAction,
) -> anyhow::Result<ExitCode> {
    let state = |v: &serde_json::Value| v["state"].as_str().unwrap_or("?").to_owned();
    let node = match target {
        DeviceOrHost::Device(fdid) => {
            let v = client
                .device_action(&fdid.to_string(), action)
                .map_err(map_err)?;
            return said(format!("{fdid} is now {}", state(&v)));
        }
        DeviceOrHost::Host(node) => node,
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
            Ok(v) => writeln!(out, "{} is now {}", d.fdid, state(&v))?,
            Err(e) => {
                refused += 1;
                writeln!(out, "{} stays {}: {e}", d.fdid, d.state)?;
            }
        }
    }
    emit(&out)?;
    // Devices still lent (or otherwise busy) were left alone; say so in the exit code.
    Ok(if refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `pcipool host list`.
///
/// # Errors
/// Transport and API errors.
pub fn hosts(api: &ApiArgs, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let hosts = Client::new(&api.url, &api.token).hosts().map_err(map_err)?;
    show(output, &hosts, |h| text::hosts(h))
}
