//! What each workflow step means, written once over the backend primitives. Every backend (the
//! simulator, a Linux host, a hypervisor fabric, a test's stand-in) gets the same idempotence checks,
//! the same reset fallback with its busy-sibling refusal and the same verify rules.

use pcipool_backend::{
    DeviceControl, DeviceError, DeviceHealth, FabricControl, Mapped, Step, StepContext, StepError,
    StepErrorKind, StepOutput,
};
use pcipool_pcie::{Bdf, ResetMethod};

/// Runs steps against one host's device control `D` and the fabric's control `F`. A process that
/// controls only one of them gives [`pcipool_backend::Absent`] for the other: a host step never
/// touches the fabric and a fabric step never touches a host.
#[derive(Debug)]
pub struct StepRunner<D, F> {
    host: D,
    fabric: F,
}

/// A host that is down cannot be cleaned up; what protects the device is the fabric's disconnect that
/// follows, so borrower-side teardown on a dead borrower (or of a device already gone) succeeds.
fn tolerate_gone(r: Result<(), DeviceError>) -> Result<StepOutput, StepError> {
    match r {
        Ok(()) => Ok(StepOutput::Done),
        Err(DeviceError::HostDown | DeviceError::NoDevice(_)) => Ok(StepOutput::AlreadyDone),
        Err(e) => Err(e.into()),
    }
}

impl<D: DeviceControl, F: FabricControl> StepRunner<D, F> {
    /// A runner over `host` and `fabric`.
    pub fn new(host: D, fabric: F) -> Self {
        Self { host, fabric }
    }

    /// The host this runner controls.
    pub fn host(&self) -> &D {
        &self.host
    }

    /// Runs one step. Each arm documents why a rerun is harmless.
    ///
    /// # Errors
    /// [`StepError`] with the kind the controller acts on.
    pub fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let fdid = ctx.device();
        self.host.set_deadline(
            std::time::Instant::now() + std::time::Duration::from_millis(ctx.deadline_ms),
        );
        match step {
            // Reads only.
            Step::LenderQuiesceCheck => match self.host.users(ctx.bdf) {
                Ok(0) => Ok(StepOutput::Done),
                Ok(users) => Err(StepError::new(
                    StepErrorKind::Busy,
                    format!("{fdid} still has {users} local users"),
                )),
                Err(DeviceError::NoDevice(_)) => {
                    Err(StepError::failed(format!("{fdid} is not present")))
                }
                Err(e) => Err(e.into()),
            },
            // Reads only. Nothing on a borrower that is down, or that no longer has the device, uses it.
            Step::BorrowerQuiesceCheck => {
                let Some(at) = self.attached_or_gone(ctx)? else {
                    return Ok(StepOutput::Done);
                };
                match self.host.users(at) {
                    Ok(0) | Err(DeviceError::HostDown | DeviceError::NoDevice(_)) => {
                        Ok(StepOutput::Done)
                    }
                    Ok(users) => Err(StepError::new(
                        StepErrorKind::Busy,
                        format!("busy: {users} users of {fdid} on {} ({at})", ctx.borrower),
                    )),
                    Err(e) => Err(e.into()),
                }
            }
            // Unbinding an unbound function succeeds.
            Step::LenderUnbind => Ok(self.host.unbind(ctx.bdf).map(|()| StepOutput::Done)?),
            // A reset of a reset device leaves it reset.
            Step::LenderReset => match self.host.reset(ctx.bdf, ResetMethod::Flr) {
                Ok(()) => Ok(StepOutput::Reset(ResetMethod::Flr)),
                Err(DeviceError::ResetUnsupported { .. }) => self.bus_reset(ctx.bdf),
                Err(e) => Err(e.into()),
            },
            Step::LenderResetEscalated => self.bus_reset(ctx.bdf),
            // Maps only the BARs the lease does not have yet.
            Step::MapBars => {
                let mapped = self.mapped(ctx)?;
                let mut output = StepOutput::AlreadyDone;
                for &(bar, size) in &ctx.bars {
                    if !mapped.contains(&Mapped::Bar(bar)) {
                        self.fabric
                            .map_bar(ctx.lease, fdid, bar, size, ctx.borrower)?;
                        output = StepOutput::Done;
                    }
                }
                Ok(output)
            }
            // One DMA window per lease.
            Step::MapDma => {
                if ctx.dma_window == 0 || self.mapped(ctx)?.contains(&Mapped::Dma) {
                    return Ok(StepOutput::AlreadyDone);
                }
                self.fabric
                    .map_dma(ctx.lease, fdid, ctx.borrower, ctx.dma_window)?;
                Ok(StepOutput::Done)
            }
            // One attachment per lease.
            Step::Attach => {
                if self.mapped(ctx)?.contains(&Mapped::Device) {
                    return Ok(StepOutput::AlreadyDone);
                }
                self.fabric.attach(ctx.lease, fdid, ctx.borrower)?;
                Ok(StepOutput::Done)
            }
            // A device already present is reported where it is.
            Step::BorrowerHotAdd => {
                let at = match self.find_borrowed(ctx)? {
                    Some(at) => at,
                    None => self.host.hot_add(fdid)?,
                };
                Ok(StepOutput::Attached(at))
            }
            // Binding the bound driver succeeds.
            Step::BorrowerBind => match &ctx.driver {
                Some(driver) => {
                    let at = self.attached(ctx)?;
                    self.host.bind(at, driver)?;
                    Ok(StepOutput::Done)
                }
                None => Ok(StepOutput::Done),
            },
            // Reads only: the borrower must see the device's ids and a healthy device behind them.
            Step::BorrowerVerify => {
                let at = self.attached(ctx)?;
                let mut ids = [0u8; 2];
                self.host.read_config(at, 0, &mut ids)?;
                if ids == [0xff, 0xff] {
                    return Err(StepError::failed(format!(
                        "{fdid} reads all ones through the borrower"
                    )));
                }
                match self.host.health(at)? {
                    DeviceHealth::Ok => Ok(StepOutput::Done),
                    other => Err(StepError::failed(format!("{fdid} health {other:?}"))),
                }
            }
            // Teardown of what is gone is done.
            Step::BorrowerUnbind => match self.attached_or_gone(ctx)? {
                Some(at) => tolerate_gone(self.host.unbind(at)),
                None => Ok(StepOutput::AlreadyDone),
            },
            Step::BorrowerHotRemove => match self.attached_or_gone(ctx)? {
                Some(at) => tolerate_gone(self.host.hot_remove(at)),
                None => Ok(StepOutput::AlreadyDone),
            },
            // Removing what a lease no longer has succeeds.
            Step::Unmap => {
                self.fabric.unmap_lease(ctx.lease)?;
                Ok(StepOutput::Done)
            }
            Step::Detach => {
                self.fabric.detach(ctx.lease)?;
                Ok(StepOutput::Done)
            }
            // Binding a bound driver succeeds; VFs that are there are left alone.
            Step::LenderRestore => {
                if let Some(driver) = &ctx.lender_driver {
                    self.host.bind(ctx.bdf, driver)?;
                }
                // Enable the VFs the lender had if they are gone (a host that rebooted, a reset outside
                // the kernel's save and restore), as writing sriov_numvfs does.
                if ctx.lender_vfs > 0 && self.host.vf_count(ctx.bdf)? != ctx.lender_vfs {
                    self.host.enable_vfs(ctx.bdf, ctx.lender_vfs)?;
                }
                Ok(StepOutput::Done)
            }
            // Reads only.
            Step::LenderVerify => match self.host.at_reset_baseline(ctx.bdf) {
                Ok(true) => Ok(StepOutput::Done),
                Ok(false) => Err(StepError::failed(format!(
                    "{fdid} config space differs from its post-reset baseline"
                ))),
                Err(DeviceError::NoDevice(_)) => Err(StepError::failed(format!("{fdid} is gone"))),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// A secondary bus reset, refused while it would disturb a busy sibling: it resets every function on
    /// the bus, so a sibling in use or lent to someone else would lose its state under its user.
    fn bus_reset(&mut self, bdf: Bdf) -> Result<StepOutput, StepError> {
        if let Some(first) = self.host.busy_bus_siblings(bdf)?.first() {
            return Err(StepError::new(
                StepErrorKind::Busy,
                format!("{bdf}: bus reset refused, sibling {first} is busy"),
            ));
        }
        self.host.reset(bdf, ResetMethod::Bus)?;
        Ok(StepOutput::Reset(ResetMethod::Bus))
    }

    /// What the fabric maps for this lease.
    fn mapped(&self, ctx: &StepContext) -> Result<Vec<Mapped>, StepError> {
        Ok(self
            .fabric
            .mappings()?
            .into_iter()
            .filter(|m| m.lease == ctx.lease)
            .map(|m| m.mapped)
            .collect())
    }

    /// Where the device is on this (borrowing) host, asked of its kernel. The journal's address is
    /// preferred, but only while the device there is still this one: an address is reused once its
    /// device is gone, and a late teardown must never remove the device a newer lease put there.
    fn find_borrowed(&self, ctx: &StepContext) -> Result<Option<Bdf>, DeviceError> {
        let fdid = ctx.device();
        let here: Vec<Bdf> = self
            .host
            .borrowed()?
            .into_iter()
            .filter_map(|(at, of)| (of == fdid).then_some(at))
            .collect();
        Ok(match ctx.attached {
            Some(at) if here.contains(&at) => Some(at),
            _ => here.first().copied(),
        })
    }

    /// Where the device is; a step that needs it fails when it is not there.
    fn attached(&self, ctx: &StepContext) -> Result<Bdf, StepError> {
        self.find_borrowed(ctx)?.ok_or_else(|| {
            StepError::failed(format!(
                "{} is not attached to {}",
                ctx.device(),
                ctx.borrower
            ))
        })
    }

    /// Where the device is, or `None` when the borrower is down or no longer has it (teardown).
    fn attached_or_gone(&self, ctx: &StepContext) -> Result<Option<Bdf>, StepError> {
        match self.find_borrowed(ctx) {
            Err(DeviceError::HostDown) => Ok(None),
            other => Ok(other?),
        }
    }
}
