//! A second backend, minimal and written here: two hosts and a fabric that attaches a whole device to a
//! borrower in one operation (as a hypervisor's hot-plug or a switch's bind does), with no windows to
//! map. A lend and a return run through the same step runner the simulator uses, with the plan built
//! from this fabric's capabilities.

use std::collections::BTreeMap;

use pcipool_agent::Local;
use pcipool_backend::{
    Attachment, Capabilities, DeviceControl, DeviceError, DeviceHealth, Executor, FabricControl,
    FabricError, FabricMapping, Mapped, Site, Step, StepContext, StepOutput,
};
use pcipool_fabric::{Epoch, Fdid, LeaseId, NodeId};
use pcipool_pcie::{Bdf, ResetMethod};
use pcipool_pool::workflow::{PlanKind, plan};

const LENDER: NodeId = NodeId(1);
const BORROWER: NodeId = NodeId(2);

fn bdf(s: &str) -> Bdf {
    format!("0000:{s}").parse().expect("test address")
}

#[derive(Debug, Clone, Default)]
struct Function {
    driver: Option<String>,
    /// Config space dirtied since the last reset.
    dirty: bool,
    /// The device this one is, when it belongs to another host (attached by the fabric).
    remote: Option<Fdid>,
    /// Visible to the kernel (attached and rescanned, not removed).
    present: bool,
}

/// Two hosts' kernels and a fabric that moves whole devices.
#[derive(Debug, Default)]
struct Lab {
    hosts: BTreeMap<NodeId, BTreeMap<Bdf, Function>>,
    /// lease -> (device, borrower).
    attached: BTreeMap<LeaseId, (Fdid, NodeId)>,
    /// Every fabric operation, in order.
    log: Vec<String>,
}

struct Host<'a> {
    lab: &'a mut Lab,
    node: NodeId,
}

impl Host<'_> {
    fn function(&self, bdf: Bdf) -> Result<&Function, DeviceError> {
        let host = self
            .lab
            .hosts
            .get(&self.node)
            .ok_or(DeviceError::HostDown)?;
        host.get(&bdf)
            .filter(|f| f.present)
            .ok_or(DeviceError::NoDevice(bdf))
    }

    fn function_mut(&mut self, bdf: Bdf) -> Result<&mut Function, DeviceError> {
        let host = self
            .lab
            .hosts
            .get_mut(&self.node)
            .ok_or(DeviceError::HostDown)?;
        host.get_mut(&bdf)
            .filter(|f| f.present)
            .ok_or(DeviceError::NoDevice(bdf))
    }
}

impl DeviceControl for Host<'_> {
    fn read_config(&self, bdf: Bdf, _: u16, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.function(bdf)?;
        buf.fill(0x11);
        Ok(())
    }
    fn write_config(&mut self, bdf: Bdf, _: u16, _: &[u8]) -> Result<(), DeviceError> {
        self.function_mut(bdf)?.dirty = true;
        Ok(())
    }
    fn driver(&self, bdf: Bdf) -> Result<Option<String>, DeviceError> {
        Ok(self.function(bdf)?.driver.clone())
    }
    fn users(&self, bdf: Bdf) -> Result<u32, DeviceError> {
        self.function(bdf).map(|_| 0)
    }
    fn unbind(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        self.function_mut(bdf)?.driver = None;
        Ok(())
    }
    fn bind(&mut self, bdf: Bdf, driver: &str) -> Result<(), DeviceError> {
        let f = self.function_mut(bdf)?;
        f.driver = Some(driver.to_owned());
        // A driver programs the device.
        f.dirty = true;
        Ok(())
    }
    fn reset(&mut self, bdf: Bdf, _: ResetMethod) -> Result<(), DeviceError> {
        self.function_mut(bdf)?.dirty = false;
        Ok(())
    }
    fn busy_bus_siblings(&self, _: Bdf) -> Result<Vec<Bdf>, DeviceError> {
        Ok(Vec::new())
    }
    fn at_reset_baseline(&self, bdf: Bdf) -> Result<bool, DeviceError> {
        Ok(!self.function(bdf)?.dirty)
    }
    fn vf_count(&self, _: Bdf) -> Result<u16, DeviceError> {
        Ok(0)
    }
    fn enable_vfs(&mut self, bdf: Bdf, _: u16) -> Result<(), DeviceError> {
        Err(DeviceError::Unsupported {
            bdf,
            what: "SR-IOV".into(),
        })
    }
    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError> {
        let host = self
            .lab
            .hosts
            .get(&self.node)
            .ok_or(DeviceError::HostDown)?;
        Ok(host
            .iter()
            .filter(|(_, f)| f.present)
            .filter_map(|(b, f)| f.remote.map(|r| (*b, r)))
            .collect())
    }
    /// The fabric already attached the device: a rescan finds it at the next free slot.
    fn hot_add(&mut self, remote: Fdid) -> Result<Bdf, DeviceError> {
        let attached = self
            .lab
            .attached
            .values()
            .any(|(f, b)| *f == remote && *b == self.node);
        if !attached {
            return Err(DeviceError::NoDevice(remote.bdf));
        }
        let host = self
            .lab
            .hosts
            .get_mut(&self.node)
            .ok_or(DeviceError::HostDown)?;
        let at = bdf(&format!("{:02x}:00.0", 0x10 + host.len()));
        host.insert(
            at,
            Function {
                remote: Some(remote),
                present: true,
                ..Function::default()
            },
        );
        Ok(at)
    }
    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        if let Some(f) = self
            .lab
            .hosts
            .get_mut(&self.node)
            .ok_or(DeviceError::HostDown)?
            .get_mut(&bdf)
        {
            f.present = false;
            f.driver = None;
        }
        Ok(())
    }
    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        self.function(bdf).map(|_| DeviceHealth::Ok)
    }
}

struct Fabric<'a>(&'a mut Lab);

impl FabricControl for Fabric<'_> {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            attachment: Attachment::WholeDevice,
        }
    }
    fn mappings(&self) -> Result<Vec<FabricMapping>, FabricError> {
        Ok(self
            .0
            .attached
            .iter()
            .map(|(lease, (fdid, borrower))| FabricMapping {
                lease: *lease,
                fdid: *fdid,
                borrower: *borrower,
                mapped: Mapped::Device,
            })
            .collect())
    }
    fn map_bar(
        &mut self,
        _: LeaseId,
        _: Fdid,
        _: u8,
        _: u64,
        _: NodeId,
    ) -> Result<(), FabricError> {
        Err(FabricError::Unsupported("map windows".into()))
    }
    fn map_dma(&mut self, _: LeaseId, _: Fdid, _: NodeId, _: u64) -> Result<(), FabricError> {
        Err(FabricError::Unsupported("map windows".into()))
    }
    fn unmap_lease(&mut self, _: LeaseId) -> Result<(), FabricError> {
        Err(FabricError::Unsupported("map windows".into()))
    }
    fn attach(&mut self, lease: LeaseId, fdid: Fdid, borrower: NodeId) -> Result<(), FabricError> {
        self.0.log.push(format!("attach {fdid} to {borrower}"));
        self.0.attached.insert(lease, (fdid, borrower));
        // The device leaves its lender's tree as it moves.
        if let Some(f) = self
            .0
            .hosts
            .get_mut(&fdid.node)
            .and_then(|h| h.get_mut(&fdid.bdf))
        {
            f.present = false;
        }
        Ok(())
    }
    fn detach(&mut self, lease: LeaseId) -> Result<(), FabricError> {
        if let Some((fdid, borrower)) = self.0.attached.remove(&lease) {
            self.0.log.push(format!("detach {fdid} from {borrower}"));
            if let Some(f) = self
                .0
                .hosts
                .get_mut(&fdid.node)
                .and_then(|h| h.get_mut(&fdid.bdf))
            {
                f.present = true;
            }
        }
        Ok(())
    }
}

impl Site for Lab {
    type Host<'a> = Host<'a>;
    type Fabric<'a> = Fabric<'a>;
    fn host_control(&mut self, node: NodeId) -> Host<'_> {
        Host { lab: self, node }
    }
    fn fabric_control(&mut self) -> Fabric<'_> {
        Fabric(self)
    }
}

/// A lender with one GPU bound to its local driver, and an empty borrower.
fn lab() -> Lab {
    let mut lab = Lab::default();
    let gpu = Function {
        driver: Some("nvidia".into()),
        dirty: true,
        present: true,
        ..Function::default()
    };
    lab.hosts
        .insert(LENDER, BTreeMap::from([(bdf("03:00.0"), gpu)]));
    lab.hosts.insert(BORROWER, BTreeMap::new());
    lab
}

fn ctx() -> StepContext {
    StepContext {
        lender: LENDER,
        bdf: bdf("03:00.0"),
        borrower: BORROWER,
        attached: None,
        lease: LeaseId(7),
        epoch: Epoch(1),
        bars: vec![(0, 1 << 24)],
        dma_window: 1 << 28,
        driver: Some("nvidia".into()),
        lender_driver: Some("nvidia".into()),
        lender_vfs: 0,
        deadline_ms: 1000,
    }
}

/// Runs `steps` in order, twice each (a rerun after a crash must do no harm), keeping the address the
/// hot-add reports in the context as the controller's journal does.
fn run_twice(lab: &mut Lab, steps: &[Step], ctx: &mut StepContext) -> Vec<StepOutput> {
    let mut outputs = Vec::new();
    for &step in steps {
        for _ in 0..2 {
            let out = Local(&mut *lab).run(step, ctx).expect("step runs");
            if let StepOutput::Attached(at) = out {
                ctx.attached = Some(at);
            }
            outputs.push(out);
        }
    }
    outputs
}

#[test]
fn lend_through_a_whole_device_fabric_attaches_once_and_binds_the_native_driver() {
    let mut lab = lab();
    let mut ctx = ctx();
    let lend = plan(PlanKind::Lend, Fabric(&mut lab).capabilities().attachment);
    run_twice(&mut lab, &lend, &mut ctx);
    let at = ctx.attached.expect("the hot-add reported an address");
    let on_borrower = lab.hosts[&BORROWER].get(&at).cloned().unwrap_or_default();
    assert_eq!(
        (
            lab.log.clone(),
            on_borrower.driver,
            on_borrower.remote,
            lab.hosts[&LENDER][&bdf("03:00.0")].present,
        ),
        (
            vec![format!("attach {} to {BORROWER}", ctx.device())],
            Some("nvidia".to_owned()),
            Some(ctx.device()),
            false,
        )
    );
}

#[test]
fn return_through_a_whole_device_fabric_detaches_resets_and_restores_the_lender() {
    let mut lab = lab();
    let mut ctx = ctx();
    let attachment = Fabric(&mut lab).capabilities().attachment;
    run_twice(&mut lab, &plan(PlanKind::Lend, attachment), &mut ctx);
    let outputs = run_twice(&mut lab, &plan(PlanKind::Return, attachment), &mut ctx);
    let lender = lab.hosts[&LENDER][&bdf("03:00.0")].clone();
    let still_borrowed = Local(&mut lab)
        .run(
            Step::BorrowerHotRemove,
            &StepContext {
                attached: None,
                ..ctx.clone()
            },
        )
        .expect("teardown of nothing succeeds");
    assert_eq!(
        (
            lab.log.len(),
            lab.attached.len(),
            lender.present,
            lender.driver,
            outputs.contains(&StepOutput::Reset(ResetMethod::Flr)),
            still_borrowed,
        ),
        (
            2,
            0,
            true,
            Some("nvidia".to_owned()),
            true,
            StepOutput::AlreadyDone
        )
    );
}

#[test]
fn a_whole_device_fabric_refuses_window_steps() {
    let mut lab = lab();
    let err = Local(&mut lab).run(Step::MapBars, &ctx());
    assert_eq!(
        err.map_err(|e| e.kind),
        Err(pcipool_backend::StepErrorKind::Unsupported)
    );
}
