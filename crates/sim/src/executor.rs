//! The simulator as a workflow [`Executor`]: agents and fabric manager in one process.

use pcipool_backend::{DeviceError, DeviceHealth, Executor, Step, StepContext};
use pcipool_fabric::{Fdid, LeaseId, MappingKind, NodeId};
use pcipool_pcie::{Bdf, ResetMethod};

use crate::sim::Sim;

/// Where borrowed DMA windows start in a simulated borrower's memory.
pub const DMA_BASE: u64 = 0x1_0000_0000;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A host that is down cannot be cleaned up; what protects the device is the unmap, so borrower-side
/// teardown on a dead borrower succeeds vacuously.
fn tolerate_down(r: Result<(), DeviceError>) -> Result<(), String> {
    match r {
        Ok(()) | Err(DeviceError::HostDown | DeviceError::NoDevice(_)) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

impl Sim {
    /// A secondary bus reset, refused while it would disturb a busy sibling (it resets every function
    /// on the bus, so a sibling lent to someone else would lose its state under its user).
    fn bus_reset(&mut self, node: NodeId, bdf: Bdf) -> Result<(), String> {
        let busy = self.busy_siblings(node, bdf);
        if let Some(first) = busy.first() {
            return Err(format!(
                "{node}:{bdf}: bus reset refused, sibling {first} is busy"
            ));
        }
        self.reset(node, bdf, ResetMethod::Bus).map_err(err)
    }
}

impl Executor for Sim {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<(), String> {
        let lender = NodeId(ctx.lender);
        let borrower = NodeId(ctx.borrower);
        let fdid = Fdid {
            node: lender,
            bdf: ctx.bdf,
            vf: None,
        };
        let lease = LeaseId(ctx.lease);
        match step {
            Step::LenderQuiesceCheck => match self.device(lender, ctx.bdf) {
                Some(d) if d.users > 0 => Err(format!("{fdid} still has {} local users", d.users)),
                Some(_) => Ok(()),
                None => Err(format!("{fdid} is not present")),
            },
            Step::BorrowerQuiesceCheck => {
                if !self.host(borrower).is_some_and(|h| h.up) {
                    return Ok(());
                }
                match self.host(borrower).and_then(|h| h.devices.get(&ctx.shadow)) {
                    Some(d) if d.users > 0 => Err(format!(
                        "busy: {} users of {fdid} on {borrower} ({})",
                        d.users, ctx.shadow
                    )),
                    _ => Ok(()),
                }
            }
            Step::LenderUnbind => self.unbind(lender, ctx.bdf).map_err(err),
            Step::LenderReset => {
                let flr = self.reset(lender, ctx.bdf, ResetMethod::Flr);
                match flr {
                    Err(DeviceError::ResetUnsupported { .. }) => self.bus_reset(lender, ctx.bdf),
                    other => other.map_err(err),
                }
            }
            Step::LenderResetEscalated => self.bus_reset(lender, ctx.bdf),
            Step::MapBars => {
                for &(bar, size) in &ctx.bars {
                    let done = self.fabric.mappings().any(|m| {
                        m.lease == lease
                            && matches!(m.kind, MappingKind::Bar { bar: b, .. } if b == bar)
                    });
                    if !done {
                        self.fabric
                            .map_bar(lease, fdid, bar, size, borrower)
                            .map_err(err)?;
                    }
                }
                Ok(())
            }
            Step::MapDma => {
                let done = self
                    .fabric
                    .mappings()
                    .any(|m| m.lease == lease && matches!(m.kind, MappingKind::Dma { .. }));
                if done || ctx.dma_window == 0 {
                    return Ok(());
                }
                self.fabric
                    .map_dma(lease, fdid, borrower, DMA_BASE, ctx.dma_window)
                    .map(|_| ())
                    .map_err(err)
            }
            Step::BorrowerHotAdd => {
                let present = self
                    .host(borrower)
                    .and_then(|h| h.devices.get(&ctx.shadow))
                    .is_some_and(|d| d.remote == Some(fdid));
                if present {
                    Ok(())
                } else {
                    self.attach_shadow(borrower, fdid, ctx.shadow).map_err(err)
                }
            }
            Step::BorrowerBind => match &ctx.driver {
                Some(driver) => self.bind(borrower, ctx.shadow, driver).map_err(err),
                None => Ok(()),
            },
            Step::BorrowerVerify => {
                let mut ids = [0u8; 2];
                self.read_config(borrower, ctx.shadow, 0, &mut ids)
                    .map_err(err)?;
                if ids == [0xff, 0xff] {
                    return Err(format!("{fdid} reads all ones through the borrower"));
                }
                match self.health(lender, ctx.bdf) {
                    Ok(DeviceHealth::Ok) => Ok(()),
                    other => Err(format!("{fdid} health {other:?}")),
                }
            }
            Step::BorrowerUnbind => tolerate_down(self.unbind(borrower, ctx.shadow)),
            Step::BorrowerHotRemove => tolerate_down(self.detach_shadow(borrower, ctx.shadow)),
            Step::Unmap => {
                self.fabric.unmap_lease(lease);
                Ok(())
            }
            Step::LenderRestore => {
                if let Some(driver) = &ctx.lender_driver {
                    self.bind(lender, ctx.bdf, driver).map_err(err)?;
                }
                // Enable the VFs the lender had if they are gone (a host that rebooted, a reset outside
                // the kernel's save/restore), as writing sriov_numvfs does; present ones are left alone.
                let present = self.host(lender).map_or(0, |h| {
                    h.devices
                        .values()
                        .filter(|d| d.physfn == Some(ctx.bdf))
                        .count()
                });
                if ctx.lender_vfs > 0 && present != usize::from(ctx.lender_vfs) {
                    self.enable_vfs(lender, ctx.bdf, ctx.lender_vfs)
                        .map_err(err)?;
                }
                Ok(())
            }
            Step::LenderVerify => match self.device(lender, ctx.bdf) {
                Some(d) if d.dev.is_reset_state() => Ok(()),
                Some(_) => Err(format!(
                    "{fdid} config space differs from its post-reset baseline"
                )),
                None => Err(format!("{fdid} is gone")),
            },
        }
    }
}
