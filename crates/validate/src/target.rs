//! What the suites need from the pool under test: its control plane (borrow, release, audit) and a view
//! of its hardware (device state against the post-reset baseline, mappings, adapter resources, and probes
//! that try to reach a device). [`crate::sim_target::SimTarget`] implements it over the simulated lab in
//! this process; a remote target (API plus agents) implements the same trait.

use std::collections::{BTreeMap, BTreeSet};

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_qualify::AccessModel;

/// A pooled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDevice {
    /// Id.
    pub fdid: Fdid,
    /// Access models it qualified for.
    pub models: Vec<AccessModel>,
    /// Ownership state name.
    pub state: String,
}

/// What a target observed, or why it cannot tell. A check that needs an observation the target cannot
/// make fails with the reason: "cannot tell" never passes.
pub type Seen<T> = Result<T, String>;

/// A lease the suites hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Lease.
    pub lease: LeaseId,
    /// Device.
    pub fdid: Fdid,
    /// Borrower.
    pub borrower: NodeId,
    /// Where the borrower's kernel placed the device (a lend's; a shared lease maps windows only).
    pub attached: Option<pcipool_pcie::Bdf>,
}

impl Held {
    /// Where the device is on the borrower, for the suites' borrower-side actions.
    ///
    /// # Errors
    /// A lease whose device was never attached to its borrower (a shared lease).
    pub fn on_borrower(&self) -> Result<pcipool_pcie::Bdf, String> {
        self.attached
            .ok_or_else(|| format!("{} is not attached to {}", self.fdid, self.borrower))
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// Sequence number.
    pub seq: u64,
    /// Who.
    pub actor: String,
    /// What was done (or attempted).
    pub action: String,
    /// On what.
    pub target: String,
    /// Outcome.
    pub result: String,
}

/// A fault the recovery suite injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The host crashes (its agent stops answering).
    HostCrash(NodeId),
    /// The host comes back.
    HostBack(NodeId),
    /// The host's fabric link goes down.
    LinkDown(NodeId),
    /// The host's fabric link comes back.
    LinkUp(NodeId),
    /// The device stops answering.
    DeviceHang(Fdid),
    /// The device's next reset fails.
    ResetFails(Fdid),
    /// The host's agent is killed (the host runs on, its hardware as it was).
    AgentKill(NodeId),
    /// The host's agent is started again.
    AgentBack(NodeId),
}

/// Free fabric resources of one adapter or host, by kind: `windows`, `lut entries` and `aperture bytes`
/// of an NTB adapter; `hot-plug slots` of a host on a fabric that moves whole devices.
pub type Free = BTreeMap<&'static str, u64>;

/// An NTB adapter's free resources: (direct windows, LUT entries, aperture bytes).
#[must_use]
pub fn ntb_free((windows, lut, aperture): (u64, u64, u64)) -> Free {
    BTreeMap::from([
        ("windows", windows),
        ("lut entries", lut),
        ("aperture bytes", aperture),
    ])
}

/// How the fabric gives a borrower its device, which decides what isolation means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// NTB windows map the device into the borrower's address space; the lender keeps it: a
    /// non-holder is kept out by the fabric refusing its accesses (each refusal a recorded fault).
    Windows,
    /// The fabric moves the whole device into the borrower's PCI tree (a hot-plug, as a
    /// composable-infrastructure switch or a hypervisor does): a non-holder has no path to it at all.
    WholeDevice,
}

/// The pool under test. Shared by the load suite's threads.
pub trait Target: Sync {
    /// Every pooled device.
    fn devices(&self) -> Vec<PoolDevice>;
    /// Hosts that can borrow `fdid` (every host but its lender).
    fn borrowers(&self, fdid: Fdid) -> Vec<NodeId>;
    /// Borrows one named device for `duration` seconds (None: the policy's longest).
    ///
    /// # Errors
    /// The API's error code and message.
    fn borrow_for(
        &self,
        tenant: &str,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
        duration: Option<u64>,
    ) -> Result<Held, String>;
    /// Borrows one named device.
    ///
    /// # Errors
    /// The API's error code and message.
    fn borrow(
        &self,
        tenant: &str,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
    ) -> Result<Held, String> {
        self.borrow_for(tenant, fdid, model, borrower, None)
    }
    /// Releases a lease (`tenant` None = as an operator).
    ///
    /// # Errors
    /// The API's error code and message.
    fn release(&self, tenant: Option<&str>, lease: LeaseId) -> Result<(), String>;
    /// A device's ownership state.
    fn state(&self, fdid: Fdid) -> Option<String>;
    /// Whether the device's config space is at its post-reset baseline (None: cannot tell).
    fn at_baseline(&self, fdid: Fdid) -> Option<bool>;
    /// The driver bound to the device on its lender (outer None: cannot tell).
    fn local_driver(&self, fdid: Fdid) -> Option<Option<String>>;
    /// Leases with at least one fabric mapping.
    ///
    /// # Errors
    /// The hardware cannot be asked: the check that needed it fails ("cannot tell" never passes).
    fn mapped_leases(&self) -> Seen<BTreeSet<u64>>;
    /// Free fabric resources per adapter (or per host).
    ///
    /// # Errors
    /// The hardware cannot be asked.
    fn free_resources(&self) -> Seen<BTreeMap<String, Free>>;
    /// Where the borrower reaches BAR 0 of a lease: (borrower, address on the borrower).
    fn bar_address(&self, lease: LeaseId) -> Option<(NodeId, u64)>;
    /// The device-side DMA window of a lease: (start, size).
    fn dma_window(&self, lease: LeaseId) -> Option<(u64, u64)>;
    /// A host reads a dword at `addr` through its NTB adapter (all ones when nothing is reached).
    fn host_read(&self, node: NodeId, addr: u64) -> u32;
    /// The device DMAs to `addr`: whose memory it reaches, if any.
    fn device_dma(&self, fdid: Fdid, addr: u64) -> Option<NodeId>;
    /// Access and IOMMU faults the hardware has recorded so far.
    ///
    /// # Errors
    /// The hardware cannot be asked.
    fn faults_recorded(&self) -> Seen<usize>;
    /// Audit records after `seq`.
    ///
    /// # Errors
    /// The controller cannot be asked.
    fn audit_after(&self, seq: u64) -> Seen<Vec<Audited>>;
    /// The last audit sequence number.
    fn audit_head(&self) -> u64;
    /// Takes a device out of the pool (so no lease is granted while a suite works on it).
    ///
    /// # Errors
    /// The controller's refusal.
    fn drain(&self, fdid: Fdid) -> Result<(), String>;
    /// Puts a drained device back.
    ///
    /// # Errors
    /// The controller's refusal.
    fn undrain(&self, fdid: Fdid) -> Result<(), String>;
    /// The reset methods the lender's kernel offers for the device, in its order.
    fn reset_methods(&self, fdid: Fdid) -> Vec<pcipool_pcie::ResetMethod>;
    /// Resets an idle device with `method`; returns how long it took (microseconds, the hardware's clock).
    ///
    /// # Errors
    /// The device's error.
    fn reset(&self, fdid: Fdid, method: pcipool_pcie::ResetMethod) -> Result<u64, String>;
    /// The device answers config reads with its ids (not all ones).
    fn ids_readable(&self, fdid: Fdid) -> bool;
    /// BAR 0 takes an address and reads it back (then is cleared again). None: no memory BAR 0.
    fn bar_restorable(&self, fdid: Fdid) -> Option<bool>;
    /// Pooled devices on the same bus (what a bus reset would also reset).
    ///
    /// # Errors
    /// The hardware cannot be asked.
    fn siblings(&self, fdid: Fdid) -> Seen<Vec<Fdid>>;
    /// A mark in the hardware's event log.
    ///
    /// # Errors
    /// The hardware cannot be asked.
    fn event_mark(&self) -> Seen<usize>;
    /// Devices that got a bus reset since `mark`.
    ///
    /// # Errors
    /// The hardware cannot be asked.
    fn bus_resets_since(&self, mark: usize) -> Seen<Vec<Fdid>>;
    /// Whether this target can inject `fault` at all (a scenario whose fault it cannot inject is
    /// reported as not run, with this reason, instead of failing or passing).
    ///
    /// # Errors
    /// Why it cannot.
    fn can_inject(&self, fault: Fault) -> Result<(), String> {
        let _any = fault;
        Ok(())
    }
    /// Injects a fault.
    ///
    /// # Errors
    /// The target cannot inject it.
    fn inject(&self, fault: Fault) -> Result<(), String>;
    /// Moves the controller's clock on by `ms` and lets it act on what is due: expired leases, hosts
    /// that stopped or started answering.
    fn advance(&self, ms: u64);
    /// Kills the controller in the middle of lending `fdid` to `borrower` (just before `step`), then starts
    /// a new one over the same store, which resumes unfinished workflows.
    ///
    /// # Errors
    /// When the new controller cannot start or resume.
    fn kill_controller_during_lend(
        &self,
        fdid: Fdid,
        borrower: NodeId,
        step: pcipool_backend::Step,
    ) -> Result<(), String>;
    /// Clears a device's quarantine (as an operator would after fixing the cause).
    ///
    /// # Errors
    /// The controller's refusal.
    fn clear_quarantine(&self, fdid: Fdid) -> Result<(), String>;
    /// The active leases on a device.
    ///
    /// # Errors
    /// The controller cannot be asked.
    fn leases_of(&self, fdid: Fdid) -> Seen<Vec<LeaseId>>;
    /// The audit hash chain verifies.
    fn audit_intact(&self) -> bool;
    /// The native driver the device binds to.
    fn native_driver(&self, fdid: Fdid) -> Option<String>;
    /// Unbinds the device's driver on its lender (device taken out of the pool first).
    ///
    /// # Errors
    /// The host's error (busy, timed out).
    fn lender_unbind(&self, fdid: Fdid) -> Result<(), String>;
    /// Binds `driver` to the device on its lender.
    ///
    /// # Errors
    /// The host's error.
    fn lender_bind(&self, fdid: Fdid, driver: &str) -> Result<(), String>;
    /// Unbinds the driver of a lent device on its borrower.
    ///
    /// # Errors
    /// The host's error (busy, timed out).
    fn borrower_unbind(&self, held: &Held) -> Result<(), String>;
    /// Binds `driver` to a lent device on its borrower.
    ///
    /// # Errors
    /// The host's error.
    fn borrower_bind(&self, held: &Held, driver: &str) -> Result<(), String>;
    /// The driver bound to a lent device on its borrower.
    fn borrower_driver(&self, held: &Held) -> Option<Option<String>>;
    /// Programs on the borrower that use a lent device (0 = idle).
    fn set_borrower_users(&self, held: &Held, users: u32);
    /// How the fabric gives a borrower its device.
    fn attachment(&self) -> Attachment {
        Attachment::Windows
    }
    /// The hosts whose kernel has the device now (a whole-device fabric: the device, found by its
    /// identity, in the host's PCI devices).
    ///
    /// # Errors
    /// The hosts cannot be asked; a windows fabric, where the lender's kernel always has it.
    fn kernels_with(&self, fdid: Fdid) -> Seen<Vec<NodeId>> {
        Err(format!(
            "{fdid}: the fabric maps windows; its device never leaves its lender's kernel"
        ))
    }
    /// Whether the fabric lets the device reach `node`'s memory by DMA now (a whole-device fabric:
    /// the device sits in `node`'s PCI tree).
    ///
    /// # Errors
    /// The fabric cannot be asked; a windows fabric (see [`Target::device_dma`]).
    fn fabric_places(&self, fdid: Fdid) -> Seen<Vec<NodeId>> {
        Err(format!("{fdid}: the fabric maps windows, see device_dma"))
    }
}

/// Whole devices among `pooled` on the same host, domain and bus as `fdid` (what a bus reset of it would
/// also reset).
pub fn siblings_among<'a>(pooled: impl IntoIterator<Item = &'a Fdid>, fdid: Fdid) -> Vec<Fdid> {
    pooled
        .into_iter()
        .filter(|o| {
            o.node == fdid.node
                && o.vf.is_none()
                && **o != fdid
                && o.bdf.domain() == fdid.bdf.domain()
                && o.bdf.bus() == fdid.bdf.bus()
        })
        .copied()
        .collect()
}
