//! The simulator: hosts with devices and drivers, the fabric between them, a virtual clock, seeded
//! faults, and an event log whose hash proves a run is reproducible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use pcipool_backend::{DeviceError, DeviceHealth};
use pcipool_fabric::{AccessFault, AdapterId, Fabric, Fdid, NodeId};
use pcipool_pcie::{Bdf, ResetMethod};
use pcipool_qualify::IommuMode;
use pcipool_qualify::modalias::glob_match;
use serde::Serialize;

use crate::desc::FabricDesc;
use crate::device::{ResetBehaviour, SimDevice};
use crate::presets;
use crate::rng::SimRng;

mod faults;

/// Nanoseconds of virtual time.
pub type Nanos = u64;

const MS: Nanos = 1_000_000;

/// Deadline for a driver unbind or a reset before the step is declared hung.
pub const STEP_DEADLINE: Nanos = 5_000 * MS;

/// Something that happened, in order. The log is the simulator's output and its determinism proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(
    missing_docs,
    reason = "fields are the device, driver or adapter the variant's doc names"
)]
pub enum EventKind {
    /// A driver bound.
    Bound { bdf: Bdf, driver: String },
    /// A driver unbound.
    Unbound { bdf: Bdf, driver: String },
    /// An unbind was refused because the device is in use.
    UnbindRefused { bdf: Bdf, users: u32 },
    /// An unbind or reset hung past its deadline.
    StepHung { bdf: Bdf, step: String },
    /// A reset completed.
    Reset { bdf: Bdf, method: ResetMethod },
    /// A reset left the device dead.
    ResetFailed { bdf: Bdf, method: ResetMethod },
    /// A function was removed from the PCI tree.
    HotRemoved { bdf: Bdf },
    /// A function appeared in the PCI tree.
    HotAdded { bdf: Bdf },
    /// A device vanished without notice.
    SurpriseRemoved { bdf: Bdf },
    /// A device stopped responding.
    Hung { bdf: Bdf },
    /// A host crashed.
    HostCrashed,
    /// A host came back.
    HostRebooted,
    /// An adapter's link went down.
    LinkDown { adapter: AdapterId },
    /// An adapter's link came back.
    LinkUp { adapter: AdapterId },
    /// An access through the fabric hit nothing: the read returned all ones, the write was dropped.
    AccessFault { fault: AccessFault },
    /// A device's DMA left its IOMMU domain.
    IommuFault { bdf: Bdf, addr: u64 },
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Virtual time.
    pub at: Nanos,
    /// Host concerned.
    pub node: NodeId,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A device on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Register file.
    pub dev: SimDevice,
    /// Preset name.
    pub preset: String,
    /// In the host's PCI tree.
    pub present: bool,
    /// Bound driver.
    pub driver: Option<String>,
    /// Open users (mounts, handles): a driver refuses to unbind while non-zero.
    pub users: u32,
    /// Fault: the next unbind hangs.
    pub unbind_hangs: bool,
    /// Fault: how many of the next resets fail.
    pub resets_failing: u32,
    /// IOMMU group.
    pub iommu_group: u32,
    /// Per-VF BAR sizes, for a physical function with SR-IOV.
    pub vf_bar_sizes: [Option<u64>; 6],
    /// The physical function, for a virtual function.
    pub physfn: Option<Bdf>,
    /// For a borrowed device's shadow on a borrower: the real device. Config accesses are forwarded to
    /// it through the fabric, as SmartIO's shadow device does.
    pub remote: Option<Fdid>,
}

impl HostDevice {
    fn local(dev: SimDevice, preset: &str, driver: Option<String>, iommu_group: u32) -> Self {
        Self {
            dev,
            preset: preset.to_owned(),
            present: true,
            driver,
            users: 0,
            unbind_hangs: false,
            resets_failing: 0,
            iommu_group,
            vf_bar_sizes: [None; 6],
            physfn: None,
            remote: None,
        }
    }
}

/// A simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimHost {
    /// Node id.
    pub node: NodeId,
    /// Name.
    pub name: String,
    /// IOMMU mode.
    pub iommu: IommuMode,
    /// Running.
    pub up: bool,
    /// Devices by address.
    pub devices: BTreeMap<Bdf, HostDevice>,
}

/// Why the simulator could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A preset the description named could not be built.
    #[error("unknown preset {0}")]
    UnknownPreset(String),
    /// Virtual functions the description asked for could not be enabled.
    #[error("enabling VFs: {0}")]
    Vfs(String),
}

/// The whole simulated lab.
#[derive(Debug, Clone)]
pub struct Sim {
    seed: u64,
    now: Nanos,
    rng: SimRng,
    /// The fabric model.
    pub fabric: Fabric,
    hosts: BTreeMap<NodeId, SimHost>,
    links_down: BTreeSet<AdapterId>,
    events: Vec<Event>,
    /// Multiplies step durations (the "slow steps" fault).
    slow_factor: u64,
}

impl Sim {
    /// Builds the lab from a description.
    ///
    /// # Errors
    /// [`SimError::UnknownPreset`].
    pub fn new(desc: &FabricDesc, seed: u64) -> Result<Self, SimError> {
        let mut hosts = BTreeMap::new();
        for spec in &desc.hosts {
            let mut devices = BTreeMap::new();
            for (g, d) in spec.devices.iter().enumerate() {
                let built = presets::build(&d.preset)
                    .ok_or_else(|| SimError::UnknownPreset(d.preset.clone()))?;
                let mut device = HostDevice::local(
                    SimDevice::new(&built, d.reset),
                    &d.preset,
                    d.driver.clone(),
                    u32::try_from(g).unwrap_or(u32::MAX),
                );
                device.vf_bar_sizes = built.vf_bar_sizes;
                devices.insert(d.bdf, device);
            }
            hosts.insert(
                spec.node,
                SimHost {
                    node: spec.node,
                    name: spec.name.clone(),
                    iommu: spec.iommu,
                    up: true,
                    devices,
                },
            );
        }
        let mut sim = Self {
            seed,
            now: 0,
            rng: SimRng::new(seed),
            fabric: Fabric::new(desc.topology.clone()),
            hosts,
            links_down: BTreeSet::new(),
            events: Vec::new(),
            slow_factor: 1,
        };
        for spec in &desc.hosts {
            for d in spec.devices.iter().filter(|d| d.vfs > 0) {
                sim.enable_vfs(spec.node, d.bdf, d.vfs)
                    .map_err(|e| SimError::Vfs(e.to_string()))?;
            }
        }
        Ok(sim)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual time now.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Advances virtual time.
    pub fn advance(&mut self, by: Nanos) {
        self.now = self.now.saturating_add(by);
    }

    /// The run's random stream.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Hosts in node order.
    pub fn hosts(&self) -> impl Iterator<Item = &SimHost> {
        self.hosts.values()
    }

    /// One host.
    pub fn host(&self, node: NodeId) -> Option<&SimHost> {
        self.hosts.get(&node)
    }

    /// The event log.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// FNV-1a over the event log's text: equal for equal runs.
    pub fn event_hash(&self) -> u64 {
        let mut text = String::new();
        for e in &self.events {
            let _ = writeln!(text, "{e:?}");
        }
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn log(&mut self, node: NodeId, kind: EventKind) {
        self.events.push(Event {
            at: self.now,
            node,
            kind,
        });
    }

    fn up_host(&mut self, node: NodeId) -> Result<&mut SimHost, DeviceError> {
        match self.hosts.get_mut(&node) {
            Some(h) if h.up => Ok(h),
            _ => Err(DeviceError::HostDown),
        }
    }

    fn device_mut(&mut self, node: NodeId, bdf: Bdf) -> Result<&mut HostDevice, DeviceError> {
        self.up_host(node)?
            .devices
            .get_mut(&bdf)
            .filter(|d| d.present)
            .ok_or(DeviceError::NoDevice(bdf))
    }

    /// A host's device, if present.
    pub fn device(&self, node: NodeId, bdf: Bdf) -> Option<&HostDevice> {
        self.hosts
            .get(&node)?
            .devices
            .get(&bdf)
            .filter(|d| d.present)
    }

    // ---- device control (the backend trait delegates here) ----

    /// Reads config space.
    ///
    /// # Errors
    /// See [`DeviceError`].
    pub fn read_config(
        &self,
        node: NodeId,
        bdf: Bdf,
        offset: u16,
        buf: &mut [u8],
    ) -> Result<(), DeviceError> {
        let host = self
            .hosts
            .get(&node)
            .filter(|h| h.up)
            .ok_or(DeviceError::HostDown)?;
        let d = host
            .devices
            .get(&bdf)
            .filter(|d| d.present)
            .ok_or(DeviceError::NoDevice(bdf))?;
        let range = |e: crate::device::ConfigRange| DeviceError::ConfigRange {
            bdf,
            offset: e.offset,
            len: e.len,
        };
        match d.remote {
            None => d.dev.read(offset, buf).map_err(range),
            Some(fdid) => match self
                .device(fdid.node, fdid.bdf)
                .filter(|_| self.path_up(node, fdid))
            {
                Some(real) => real.dev.read(offset, buf).map_err(range),
                // The link or the lender is gone: the read completes as Unsupported Request, all ones.
                None => {
                    d.dev.read(offset, buf).map_err(range)?;
                    buf.fill(0xff);
                    Ok(())
                }
            },
        }
    }

    /// The config space a host sees for a function (forwarded for a shadow device).
    fn effective_config(&self, node: NodeId, bdf: Bdf) -> Option<Vec<u8>> {
        let d = self.hosts.get(&node)?.devices.get(&bdf)?;
        match d.remote {
            None => Some(d.dev.config_bytes()),
            Some(fdid) if self.path_up(node, fdid) => self
                .device(fdid.node, fdid.bdf)
                .map(|r| r.dev.config_bytes()),
            Some(_) => Some(vec![0xff; 4096]),
        }
    }

    /// Writes config space.
    ///
    /// # Errors
    /// See [`DeviceError`].
    pub fn write_config(
        &mut self,
        node: NodeId,
        bdf: Bdf,
        offset: u16,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        let remote = self.device_mut(node, bdf)?.remote;
        let range = |e: crate::device::ConfigRange| DeviceError::ConfigRange {
            bdf,
            offset: e.offset,
            len: e.len,
        };
        match remote {
            None => self
                .device_mut(node, bdf)?
                .dev
                .write(offset, data)
                .map_err(range),
            Some(fdid) if self.path_up(node, fdid) => {
                match self
                    .hosts
                    .get_mut(&fdid.node)
                    .and_then(|h| h.devices.get_mut(&fdid.bdf))
                {
                    Some(real) if real.present => real.dev.write(offset, data).map_err(range),
                    _ => Ok(()),
                }
            }
            // Writes through a dead path are dropped, as on real NTB.
            Some(_) => Ok(()),
        }
    }

    /// Unbinds the driver. Refused while users hold the device; a hanging driver times out at
    /// [`STEP_DEADLINE`] of virtual time.
    ///
    /// # Errors
    /// [`DeviceError::Busy`], [`DeviceError::Timeout`].
    pub fn unbind(&mut self, node: NodeId, bdf: Bdf) -> Result<(), DeviceError> {
        let slow = self.slow_factor;
        let d = self.device_mut(node, bdf)?;
        let Some(driver) = d.driver.clone() else {
            return Ok(());
        };
        if d.users > 0 {
            let users = d.users;
            self.log(node, EventKind::UnbindRefused { bdf, users });
            return Err(DeviceError::Busy { bdf, driver, users });
        }
        if d.unbind_hangs {
            self.advance(STEP_DEADLINE);
            self.log(
                node,
                EventKind::StepHung {
                    bdf,
                    step: "unbind".into(),
                },
            );
            return Err(DeviceError::Timeout {
                bdf,
                step: "unbind".into(),
                after_ms: STEP_DEADLINE / MS,
            });
        }
        d.driver = None;
        let remove_ms = presets::DRIVERS
            .iter()
            .find(|(n, ..)| *n == driver)
            .map_or(10, |d| d.3);
        self.advance(remove_ms * MS * slow);
        self.log(node, EventKind::Unbound { bdf, driver });
        Ok(())
    }

    /// Binds a driver whose alias matches the device's modalias.
    ///
    /// # Errors
    /// [`DeviceError::NoMatchingDriver`].
    pub fn bind(&mut self, node: NodeId, bdf: Bdf, driver: &str) -> Result<(), DeviceError> {
        let slow = self.slow_factor;
        let d = self.device_mut(node, bdf)?;
        if d.driver.as_deref() == Some(driver) {
            return Ok(());
        }
        let _ = d;
        let config = self.effective_config(node, bdf).unwrap_or_default();
        let modalias = modalias(&config);
        let d = self.device_mut(node, bdf)?;
        let entry = presets::DRIVERS
            .iter()
            .find(|(n, pattern, ..)| *n == driver && glob_match(pattern, &modalias))
            .ok_or_else(|| DeviceError::NoMatchingDriver {
                bdf,
                driver: driver.to_owned(),
            })?;
        if d.dev.hung || config.get(..4) == Some(&[0xff; 4][..]) {
            return Err(DeviceError::Gone(bdf));
        }
        d.driver = Some(driver.to_owned());
        self.advance(entry.2 * MS * slow);
        self.log(
            node,
            EventKind::Bound {
                bdf,
                driver: driver.to_owned(),
            },
        );
        Ok(())
    }

    /// Resets a function with a method its behaviour supports.
    ///
    /// # Errors
    /// Unsupported method, a hang past the deadline, or an injected reset failure.
    pub fn reset(
        &mut self,
        node: NodeId,
        bdf: Bdf,
        method: ResetMethod,
    ) -> Result<(), DeviceError> {
        if let Some(fdid) = self.device_mut(node, bdf)?.remote {
            // The borrower's driver resets the real device through its shadow (FLR is a config write).
            if !self.path_up(node, fdid) {
                return Err(DeviceError::Gone(bdf));
            }
            return self.reset(fdid.node, fdid.bdf, method);
        }
        let slow = self.slow_factor;
        let d = self.device_mut(node, bdf)?;
        let supported = match (d.dev.reset, method) {
            (
                ResetBehaviour::Flr | ResetBehaviour::FlrSlow | ResetBehaviour::FlrHangs,
                ResetMethod::Flr,
            ) => true,
            (ResetBehaviour::None, _) => false,
            (_, ResetMethod::Bus) => true,
            // D3hot -> D0 resets a function whose PM capability clears No_Soft_Reset; the kernel offers
            // the method only then, so the request itself is the evidence.
            (_, ResetMethod::Pm) => true,
            _ => false,
        };
        if !supported {
            return Err(DeviceError::ResetUnsupported { bdf, method });
        }
        let hangs = method == ResetMethod::Flr && d.dev.reset == ResetBehaviour::FlrHangs;
        if hangs || d.resets_failing > 0 {
            d.resets_failing = d.resets_failing.saturating_sub(1);
            d.dev.hung = true;
            self.advance(STEP_DEADLINE);
            self.log(node, EventKind::ResetFailed { bdf, method });
            return Err(DeviceError::ResetFailed { bdf, method });
        }
        let ms = match (d.dev.reset, method) {
            (ResetBehaviour::FlrSlow, ResetMethod::Flr) => 1000,
            (_, ResetMethod::Bus) => 400, // 200 ms assert + 200 ms settle, as libvirt waits
            (_, ResetMethod::Pm) => 20, // 10 ms into D3hot and 10 ms back (PCI PM 1.2 recovery time)
            _ => 100,
        };
        d.dev.apply_reset();
        self.advance(ms * MS * slow);
        self.log(node, EventKind::Reset { bdf, method });
        // The kernel saves and restores a function's state around a reset it performs (SR-IOV state
        // included, pci_restore_iov_state), so a physical function keeps its virtual functions here.
        Ok(())
    }

    /// Access and IOMMU faults recorded so far (blocked reads, writes and DMA).
    pub fn faults_recorded(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::AccessFault { .. } | EventKind::IommuFault { .. }
                )
            })
            .count()
    }

    /// Functions on the same bus as `bdf` that a bus reset would disturb: lent out (the fabric maps them)
    /// or in use by local users.
    pub fn busy_siblings(&self, node: NodeId, bdf: Bdf) -> Vec<Bdf> {
        let Some(host) = self.hosts.get(&node) else {
            return Vec::new();
        };
        host.devices
            .iter()
            .filter(|(b, d)| {
                **b != bdf
                    && b.domain() == bdf.domain()
                    && b.bus() == bdf.bus()
                    && d.present
                    && d.remote.is_none()
            })
            .filter(|(b, d)| {
                d.users > 0
                    || self
                        .fabric
                        .mappings()
                        .any(|m| m.kind.fdid().node == node && m.kind.fdid().bdf == **b)
            })
            .map(|(b, _)| *b)
            .collect()
    }

    /// Removes a function from its host's tree (idempotent).
    ///
    /// # Errors
    /// Host down or unknown device.
    pub fn hot_remove(&mut self, node: NodeId, bdf: Bdf) -> Result<(), DeviceError> {
        let host = self.up_host(node)?;
        let d = host
            .devices
            .get_mut(&bdf)
            .ok_or(DeviceError::NoDevice(bdf))?;
        if d.present {
            d.present = false;
            d.driver = None;
            self.log(node, EventKind::HotRemoved { bdf });
        }
        Ok(())
    }

    /// Brings a removed function back (idempotent).
    ///
    /// # Errors
    /// Host down or unknown device.
    pub fn hot_add(&mut self, node: NodeId, bdf: Bdf) -> Result<(), DeviceError> {
        let host = self.up_host(node)?;
        let d = host
            .devices
            .get_mut(&bdf)
            .ok_or(DeviceError::NoDevice(bdf))?;
        if !d.present {
            d.present = true;
            self.log(node, EventKind::HotAdded { bdf });
        }
        Ok(())
    }

    /// Health of a function.
    ///
    /// # Errors
    /// Host down.
    pub fn health(&self, node: NodeId, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        let host = self
            .hosts
            .get(&node)
            .filter(|h| h.up)
            .ok_or(DeviceError::HostDown)?;
        Ok(match host.devices.get(&bdf) {
            // A borrowed device's health is the real device's, seen through the fabric.
            Some(d) if d.present && d.remote.is_some() => match d.remote {
                Some(fdid) if self.path_up(node, fdid) => {
                    match self.hosts.get(&fdid.node).filter(|h| h.up) {
                        Some(_) => self.health(fdid.node, fdid.bdf)?,
                        None => DeviceHealth::Gone,
                    }
                }
                _ => DeviceHealth::Gone,
            },
            Some(d) if d.present && d.dev.hung => DeviceHealth::Hung,
            Some(d) if d.present => DeviceHealth::Ok,
            _ => DeviceHealth::Gone,
        })
    }

    // ---- SR-IOV and borrowing ----

    /// Enables `count` VFs on a physical function (0 disables them). VFs appear at the routing ids the
    /// SR-IOV capability gives (first offset, stride), with the VF device id and per-VF BAR sizes.
    ///
    /// # Errors
    /// [`DeviceError::Unsupported`] without SR-IOV or above TotalVFs.
    pub fn enable_vfs(
        &mut self,
        node: NodeId,
        pf: Bdf,
        count: u16,
    ) -> Result<Vec<Bdf>, DeviceError> {
        let config = self.device_mut(node, pf)?.dev.config_bytes();
        let sizes = self.device_mut(node, pf)?.vf_bar_sizes;
        let facts = pcipool_pcie::decode(&config).map_err(|_| DeviceError::Gone(pf))?;
        let sriov = facts.sriov().cloned().ok_or(DeviceError::Unsupported {
            bdf: pf,
            what: "SR-IOV".into(),
        })?;
        if count > sriov.total_vfs {
            return Err(DeviceError::Unsupported {
                bdf: pf,
                what: format!("{count} VFs (TotalVFs {})", sriov.total_vfs),
            });
        }
        let host = self.up_host(node)?;
        host.devices.retain(|_, d| d.physfn != Some(pf));
        let pf_rid = (u32::from(pf.bus()) << 8) | u32::from(pf.devfn());
        let mut created = Vec::new();
        for n in 0..u32::from(count) {
            let rid = pf_rid + u32::from(sriov.first_vf_offset) + n * u32::from(sriov.vf_stride);
            let (Ok(bus), Ok(devfn)) = (u8::try_from(rid >> 8), u8::try_from(rid & 0xff)) else {
                break;
            };
            let Ok(bdf) = Bdf::new(pf.domain(), bus, devfn >> 3, devfn & 7) else {
                break;
            };
            let mut b = pcipool_pcie::ConfigBuilder::endpoint(
                facts.vendor_id,
                sriov.vf_device_id,
                facts.class.as_u24(),
            );
            for vf_bar in &sriov.vf_bars {
                if let Some(size) = sizes.get(usize::from(vf_bar.index)).copied().flatten() {
                    b = b.bar64(vf_bar.index, 0, size, vf_bar.prefetchable);
                }
            }
            let built = b
                .msix(8, 0, 0, 0x800)
                .pcie(pcipool_pcie::PcieOptions::endpoint(
                    pcipool_pcie::LinkSpeed::Gt8,
                    16,
                ))
                .build();
            let mut vf = HostDevice::local(
                SimDevice::new(&built, ResetBehaviour::Flr),
                "vf",
                None,
                1000 + n,
            );
            vf.physfn = Some(pf);
            host.devices.insert(bdf, vf);
            created.push(bdf);
        }
        for b in &created {
            self.log(node, EventKind::HotAdded { bdf: *b });
        }
        Ok(created)
    }

    /// Where a device of another host appears on `node`, if it is there.
    pub fn borrowed_at(&self, node: NodeId, fdid: Fdid) -> Option<Bdf> {
        self.hosts
            .get(&node)?
            .devices
            .iter()
            .find_map(|(bdf, d)| (d.present && d.remote == Some(fdid)).then_some(*bdf))
    }

    /// Hot-adds a borrowed device on `borrower` as a shadow function (the borrower side of Device
    /// Lending); its config accesses go to the real device through the fabric. The borrower's kernel
    /// picks the address, as a real one enumerating the shadow behind its NTB would: the first free slot
    /// on buses 0x80-0xfe. A device already there is reported where it is.
    ///
    /// # Errors
    /// Borrower down, the real device absent, or no free slot.
    pub fn attach_shadow(&mut self, borrower: NodeId, fdid: Fdid) -> Result<Bdf, DeviceError> {
        if !self.hosts.get(&borrower).is_some_and(|h| h.up) {
            return Err(DeviceError::HostDown);
        }
        if let Some(at) = self.borrowed_at(borrower, fdid) {
            return Ok(at);
        }
        let real = self
            .device(fdid.node, fdid.bdf)
            .ok_or(DeviceError::NoDevice(fdid.bdf))?;
        let mut dev = real.dev.clone();
        dev.hung = false;
        let preset = real.preset.clone();
        let host = self.up_host(borrower)?;
        let shadow = (0x80..=0xfe_u8)
            .flat_map(|bus| (0..32_u8).map(move |device| (bus, device)))
            .filter_map(|(bus, device)| Bdf::new(0, bus, device, 0).ok())
            .find(|b| host.devices.get(b).is_none_or(|d| !d.present))
            .ok_or(DeviceError::Unsupported {
                bdf: fdid.bdf,
                what: "a free slot for another borrowed device".into(),
            })?;
        let mut d = HostDevice::local(dev, &preset, None, 2000);
        d.remote = Some(fdid);
        host.devices.insert(shadow, d);
        self.log(borrower, EventKind::HotAdded { bdf: shadow });
        Ok(shadow)
    }

    /// Removes a shadow function from a borrower (idempotent).
    ///
    /// # Errors
    /// Borrower down.
    pub fn detach_shadow(&mut self, borrower: NodeId, shadow: Bdf) -> Result<(), DeviceError> {
        let host = self.up_host(borrower)?;
        if host.devices.remove(&shadow).is_some() {
            self.log(borrower, EventKind::HotRemoved { bdf: shadow });
        }
        Ok(())
    }

    /// A borrower writes through its NTB: delivered when mapped, else dropped with an access-fault event.
    pub fn borrower_write(&mut self, node: NodeId, addr: u64) -> bool {
        match self.fabric.translate_access(node, addr) {
            Ok(t) if self.path_up(node, t.fdid) => true,
            Ok(_) => {
                self.log(
                    node,
                    EventKind::AccessFault {
                        fault: AccessFault::Unmapped { node, addr },
                    },
                );
                false
            }
            Err(fault) => {
                self.log(node, EventKind::AccessFault { fault });
                false
            }
        }
    }

    // ---- data path ----

    /// A borrower reads a dword at `addr` through its NTB: the device's register, or all ones (and an
    /// access-fault event) when nothing live is mapped there.
    pub fn borrower_read(&mut self, node: NodeId, addr: u64) -> u32 {
        match self.fabric.translate_access(node, addr) {
            Ok(t) if self.path_up(node, t.fdid) => {
                let host_up = self.hosts.get(&t.fdid.node).is_some_and(|h| h.up);
                let dev = self.device(t.fdid.node, t.fdid.bdf).filter(|_| host_up);
                match dev {
                    Some(d) if !d.dev.hung => {
                        // BAR contents are not modelled yet; the BAR offset's low bits stand in for data.
                        u32::try_from(t.offset & 0xffff_ffff).unwrap_or(u32::MAX)
                    }
                    _ => u32::MAX,
                }
            }
            Ok(t) => {
                self.log(
                    node,
                    EventKind::AccessFault {
                        fault: AccessFault::Unmapped { node, addr },
                    },
                );
                let _ = t;
                u32::MAX
            }
            Err(fault) => {
                self.log(node, EventKind::AccessFault { fault });
                u32::MAX
            }
        }
    }

    /// A device DMAs to `addr`: whose memory it reaches. Faults are logged as IOMMU faults.
    ///
    /// # Errors
    /// The [`AccessFault`].
    pub fn device_dma(&mut self, fdid: Fdid, addr: u64) -> Result<(NodeId, u64), AccessFault> {
        match self.fabric.translate_dma(fdid, addr) {
            Ok(t) if self.path_up(t.borrower, fdid) => Ok((t.borrower, t.phys)),
            Ok(_) => {
                let fault = AccessFault::Unmapped {
                    node: fdid.node,
                    addr,
                };
                self.log(
                    fdid.node,
                    EventKind::AccessFault {
                        fault: fault.clone(),
                    },
                );
                Err(fault)
            }
            Err(fault) => {
                self.log(
                    fdid.node,
                    EventKind::IommuFault {
                        bdf: fdid.bdf,
                        addr,
                    },
                );
                Err(fault)
            }
        }
    }

    fn path_up(&self, borrower: NodeId, fdid: Fdid) -> bool {
        let up = |n: NodeId| self.hosts.get(&n).is_some_and(|h| h.up);
        let links = match self.fabric.topology().best_route(borrower, fdid.node) {
            Some((a, b, _)) => !self.links_down.contains(&a) && !self.links_down.contains(&b),
            None => false,
        };
        up(borrower) && up(fdid.node) && links
    }
}

/// The kernel's modalias string for a config space.
pub fn modalias(cfg: &[u8]) -> String {
    let w = |o: usize| {
        cfg.get(o..o + 2)
            .map_or(0xffff, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let b = |o: usize| cfg.get(o).copied().unwrap_or(0xff);
    format!(
        "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
        w(0),
        w(2),
        w(0x2c),
        w(0x2e),
        b(0x0b),
        b(0x0a),
        b(0x09)
    )
}
