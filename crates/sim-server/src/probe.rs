//! The simulated fabric's test port (`POST /v1/probe` on `pcipool sim serve`): what a validation run
//! against a running simulated pool needs to see and do on the hardware, as an operator with a console
//! on every host would. One request type, answered with JSON, so the server and the remote target share
//! a single definition.

use pcipool_fabric::NodeId;
use pcipool_pcie::Bdf;
use pcipool_sim::{EventKind, Sim};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One request to the test port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Probe {
    /// A function's state: present, at baseline, driver, users, ids readable, reset methods.
    Device {
        /// Host.
        node: NodeId,
        /// Function.
        bdf: Bdf,
    },
    /// Reset a function with a method (the kernel's names: `flr`, `pm`, `bus`, ...); answers the
    /// hardware time it took.
    Reset {
        /// Host.
        node: NodeId,
        /// Function.
        bdf: Bdf,
        /// Method name.
        method: String,
    },
    /// Write an address of `size` alignment into BAR 0, read it back, clear it.
    BarAddress {
        /// Host.
        node: NodeId,
        /// Function.
        bdf: Bdf,
        /// BAR 0 size.
        size: u64,
    },
    /// Bind a driver.
    Bind {
        /// Host.
        node: NodeId,
        /// Function.
        bdf: Bdf,
        /// Driver.
        driver: String,
    },
    /// Unbind the driver.
    Unbind {
        /// Host.
        node: NodeId,
        /// Function.
        bdf: Bdf,
    },
    /// Programs using the function.
    Users {
        /// Host.
        node: NodeId,
        /// Function.
        bdf: Bdf,
        /// How many.
        users: u32,
    },
    /// A host reads a dword through its adapter.
    Read {
        /// Host.
        node: NodeId,
        /// Address on the host.
        addr: u64,
    },
    /// A device DMAs to an address.
    Dma {
        /// Lender.
        node: NodeId,
        /// Function.
        bdf: Bdf,
        /// Device-side address.
        addr: u64,
    },
    /// Mappings, free adapter resources, event and fault counts.
    Fabric,
    /// Functions bus-reset since event `since`.
    BusResets {
        /// Event index.
        since: usize,
    },
}

/// Answers one probe.
///
/// # Errors
/// What the simulated hardware refused, as text.
pub fn answer(sim: &mut Sim, probe: &Probe) -> Result<Value, String> {
    use pcipool_backend::Inventory as _;
    let e = |e: pcipool_backend::DeviceError| e.to_string();
    match probe {
        Probe::Device { node, bdf } => {
            let d = sim
                .device(*node, *bdf)
                .ok_or_else(|| format!("no function {bdf} on {node}"))?;
            let (at_baseline, driver, users, present) =
                (d.dev.is_reset_state(), d.driver.clone(), d.users, d.present);
            let mut ids = [0u8; 2];
            let ids_readable =
                sim.read_config(*node, *bdf, 0, &mut ids).is_ok() && ids != [0xff, 0xff];
            let methods: Vec<String> = pcipool_sim::HostView { sim, node: *node }
                .inventory()
                .ok()
                .and_then(|inv| inv.devices.into_iter().find(|r| r.bdf == *bdf))
                .map(|r| r.reset_methods.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            Ok(json!({
                "present": present, "at_baseline": at_baseline, "driver": driver, "users": users,
                "ids_readable": ids_readable, "reset_methods": methods,
            }))
        }
        Probe::Reset {
            node,
            bdf,
            method: m,
        } => {
            let started = sim.now();
            let method: pcipool_pcie::ResetMethod = m
                .parse()
                .map_err(|x: pcipool_pcie::reset::UnknownResetMethod| x.to_string())?;
            sim.reset(*node, *bdf, method).map_err(e)?;
            Ok(json!({ "micros": sim.now().saturating_sub(started) / 1000 }))
        }
        Probe::BarAddress { node, bdf, size } => {
            let addr = u32::try_from(0xe000_0000_u64 & !size.saturating_sub(1))
                .map_err(|_| "BAR too large".to_owned())?;
            sim.write_config(*node, *bdf, 0x10, &addr.to_le_bytes())
                .map_err(e)?;
            let mut back = [0u8; 4];
            sim.read_config(*node, *bdf, 0x10, &mut back).map_err(e)?;
            let _ = sim.write_config(*node, *bdf, 0x10, &[0; 4]);
            Ok(json!({ "restorable": u32::from_le_bytes(back) & !0xf == addr & !0xf }))
        }
        Probe::Bind { node, bdf, driver } => {
            sim.bind(*node, *bdf, driver).map_err(e)?;
            Ok(json!({}))
        }
        Probe::Unbind { node, bdf } => {
            sim.unbind(*node, *bdf).map_err(e)?;
            Ok(json!({}))
        }
        Probe::Users { node, bdf, users } => {
            sim.set_users(*node, *bdf, *users);
            Ok(json!({}))
        }
        Probe::Read { node, addr } => Ok(json!({ "value": sim.borrower_read(*node, *addr) })),
        Probe::Dma { node, bdf, addr } => {
            let fdid = pcipool_fabric::Fdid {
                node: *node,
                bdf: *bdf,
                vf: None,
            };
            let reached = sim.device_dma(fdid, *addr).ok().map(|(n, _)| n.to_string());
            Ok(json!({ "reached": reached }))
        }
        Probe::Fabric => {
            let mappings: Vec<Value> = sim
                .fabric
                .mappings()
                .map(|m| {
                    let (kind, bar, borrower) = match m.kind {
                        pcipool_fabric::MappingKind::Bar { bar, borrower, .. } => {
                            ("bar", Some(bar), borrower)
                        }
                        pcipool_fabric::MappingKind::Dma { borrower, .. } => ("dma", None, borrower),
                    };
                    json!({ "lease": m.lease.0, "kind": kind, "bar": bar,
                            "borrower": borrower.to_string(), "host_addr": m.host_addr, "size": m.size })
                })
                .collect();
            let free: serde_json::Map<String, Value> = sim
                .fabric
                .topology()
                .adapters()
                .filter_map(|(a, _)| {
                    let f = sim.fabric.space(a)?.free_counts();
                    Some((a.to_string(), json!([f.0, f.1, f.2])))
                })
                .collect();
            let faults = sim.faults_recorded();
            Ok(
                json!({ "mappings": mappings, "free": free, "events": sim.events().len(), "faults": faults }),
            )
        }
        Probe::BusResets { since } => {
            let fdids: Vec<String> = sim
                .events()
                .iter()
                .skip(*since)
                .filter_map(|e| match &e.kind {
                    EventKind::Reset {
                        bdf,
                        method: pcipool_pcie::ResetMethod::Bus,
                    } => Some(format!("{}:{bdf}", e.node)),
                    _ => None,
                })
                .collect();
            Ok(json!({ "fdids": fdids }))
        }
    }
}
