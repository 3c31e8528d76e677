//! The simulator behind the same backend traits as the Linux backend.

use pcipool_backend::{
    Capabilities, DeviceControl, DeviceError, DeviceHealth, DeviceRecord, FabricControl,
    FabricError, FabricMapping, HostInventory, Inventory, KernelLink, Mapped, ResetMethodSource,
    Site,
};
use pcipool_fabric::{Fdid, LeaseId, MapError, MappingKind, NodeId};
use pcipool_pcie::{Bdf, BusPosition, ResetMethod};
use pcipool_qualify::{IommuMode, PlatformFacts};

use crate::sim::{Sim, modalias};

/// Read-only view of one simulated host.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    /// The simulator.
    pub sim: &'a Sim,
    /// The host.
    pub node: NodeId,
}

/// Control handle of one simulated host: its kernel's primitives.
#[derive(Debug)]
pub struct HostControl<'a> {
    /// The simulator.
    pub sim: &'a mut Sim,
    /// The host.
    pub node: NodeId,
}

/// The simulated fabric's manager: programs windows between hosts.
#[derive(Debug)]
pub struct FabricManager<'a> {
    /// The simulator.
    pub sim: &'a mut Sim,
}

/// Where borrowed DMA windows start in a simulated borrower's memory.
pub const DMA_BASE: u64 = 0x1_0000_0000;

/// Why a simulated inventory failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimInventoryError {
    /// No such host.
    #[error("no host {0}")]
    NoHost(NodeId),
    /// The host is down.
    #[error("host {0} is down")]
    HostDown(NodeId),
}

impl Inventory for HostView<'_> {
    type Error = SimInventoryError;

    fn inventory(&self) -> Result<HostInventory, SimInventoryError> {
        let host = self
            .sim
            .host(self.node)
            .ok_or(SimInventoryError::NoHost(self.node))?;
        if !host.up {
            return Err(SimInventoryError::HostDown(self.node));
        }
        let present: Vec<(&Bdf, &crate::sim::HostDevice)> =
            host.devices.iter().filter(|(_, d)| d.present).collect();
        let grouped = host.iommu != IommuMode::Off;
        let mut devices = Vec::new();
        for (bdf, d) in &present {
            let mut bytes = vec![0u8; 4096];
            let _ = self.sim.read_config(self.node, **bdf, 0, &mut bytes);
            let (facts, config_error) =
                match pcipool_pcie::decode_with_sizes(&bytes, &d.dev.sizes()) {
                    Ok(f) => (f, None),
                    Err(e) => (
                        pcipool_pcie::DeviceFacts::from_ids(0xffff, 0xffff, 0),
                        Some(e.to_string()),
                    ),
                };
            // Each simulated device sits alone behind its own root port unless another shares its bus.
            let siblings = present
                .iter()
                .filter(|(b, _)| b.bus() == bdf.bus() && b.domain() == bdf.domain())
                .count();
            let position = BusPosition {
                on_root_bus: false,
                has_siblings: siblings > 1,
            };
            let reset_methods: Vec<ResetMethod> =
                pcipool_pcie::derive_reset_methods(&facts, Some(position));
            let link = facts
                .pci_express()
                .map_or_else(KernelLink::default, |e| KernelLink {
                    current_speed: Some(e.link.speed.to_string()),
                    current_width: Some(e.link.width),
                    max_speed: Some(e.link.max_speed.to_string()),
                    max_width: Some(e.link.max_width),
                });
            let peers = if grouped {
                present
                    .iter()
                    .filter(|(b, o)| *b != *bdf && o.iommu_group == d.iommu_group)
                    .map(|(b, _)| **b)
                    .collect()
            } else {
                Vec::new()
            };
            devices.push(DeviceRecord {
                bdf: **bdf,
                facts,
                config_error,
                vendor_name: None,
                device_name: Some(d.preset.clone()),
                driver: d.driver.clone(),
                driver_override: None,
                modalias: Some(modalias(&bytes)),
                iommu_group: grouped.then_some(d.iommu_group),
                iommu_group_peers: peers,
                numa_node: None,
                reset_methods,
                reset_methods_source: ResetMethodSource::Kernel,
                sriov: facts_sriov(&bytes).map(|total| pcipool_backend::SriovState {
                    total_vfs: total,
                    num_vfs: u16::try_from(
                        present
                            .iter()
                            .filter(|(_, o)| o.physfn == Some(**bdf))
                            .count(),
                    )
                    .unwrap_or(u16::MAX),
                    drivers_autoprobe: Some(true),
                }),
                physfn: d.physfn,
                link,
                parent_chain: Vec::new(),
                block_devices: Vec::new(),
                net_interfaces: Vec::new(),
                backs_root_fs: false,
                backs_default_route: false,
                sysfs_warnings: Vec::new(),
            });
        }
        Ok(HostInventory {
            hostname: Some(host.name.clone()),
            kernel_release: Some("6.1.0-pcipool-sim".to_owned()),
            devices,
        })
    }
}

fn facts_sriov(bytes: &[u8]) -> Option<u16> {
    pcipool_pcie::decode(bytes)
        .ok()?
        .sriov()
        .map(|s| s.total_vfs)
}

impl HostView<'_> {
    /// Platform facts for qualification, from the host's model.
    pub fn platform_facts(&self) -> Option<PlatformFacts> {
        let host = self.sim.host(self.node)?;
        Some(PlatformFacts {
            kernel_release: Some("6.1.0-pcipool-sim".to_owned()),
            iommu: host.iommu,
            iommu_evidence: format!("simulated host {} configured {:?}", host.name, host.iommu),
            driver_override: true,
            drivers_probe: true,
            sriov_support: true,
            // Simulated lenders are modelled on Skylake-SP, a root complex Linux trusts for P2P.
            host_bridge: Some((0x8086, 0x2020)),
            cpu: Some(("GenuineIntel".to_owned(), 6)),
        })
    }
}

impl HostControl<'_> {
    fn device(&self, bdf: Bdf) -> Result<&crate::sim::HostDevice, DeviceError> {
        if !self.sim.host(self.node).is_some_and(|h| h.up) {
            return Err(DeviceError::HostDown);
        }
        self.sim
            .device(self.node, bdf)
            .ok_or(DeviceError::NoDevice(bdf))
    }
}

impl DeviceControl for HostControl<'_> {
    fn read_config(&self, bdf: Bdf, offset: u16, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.sim.read_config(self.node, bdf, offset, buf)
    }

    fn write_config(&mut self, bdf: Bdf, offset: u16, data: &[u8]) -> Result<(), DeviceError> {
        self.sim.write_config(self.node, bdf, offset, data)
    }

    fn driver(&self, bdf: Bdf) -> Result<Option<String>, DeviceError> {
        Ok(self.device(bdf)?.driver.clone())
    }

    fn users(&self, bdf: Bdf) -> Result<u32, DeviceError> {
        Ok(self.device(bdf)?.users)
    }

    fn unbind(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        self.sim.unbind(self.node, bdf)
    }

    fn bind(&mut self, bdf: Bdf, driver: &str) -> Result<(), DeviceError> {
        self.sim.bind(self.node, bdf, driver)
    }

    fn reset(&mut self, bdf: Bdf, method: ResetMethod) -> Result<(), DeviceError> {
        self.sim.reset(self.node, bdf, method)
    }

    fn busy_bus_siblings(&self, bdf: Bdf) -> Result<Vec<Bdf>, DeviceError> {
        self.device(bdf)?;
        Ok(self.sim.busy_siblings(self.node, bdf))
    }

    fn at_reset_baseline(&self, bdf: Bdf) -> Result<bool, DeviceError> {
        Ok(self.device(bdf)?.dev.is_reset_state())
    }

    fn vf_count(&self, pf: Bdf) -> Result<u16, DeviceError> {
        self.device(pf)?;
        let count = self.sim.host(self.node).map_or(0, |h| {
            h.devices
                .values()
                .filter(|d| d.present && d.physfn == Some(pf))
                .count()
        });
        Ok(u16::try_from(count).unwrap_or(u16::MAX))
    }

    fn enable_vfs(&mut self, pf: Bdf, count: u16) -> Result<(), DeviceError> {
        self.sim.enable_vfs(self.node, pf, count).map(|_| ())
    }

    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError> {
        let host = self
            .sim
            .host(self.node)
            .filter(|h| h.up)
            .ok_or(DeviceError::HostDown)?;
        Ok(host
            .devices
            .iter()
            .filter(|(_, d)| d.present)
            .filter_map(|(bdf, d)| d.remote.map(|r| (*bdf, r)))
            .collect())
    }

    fn hot_add(&mut self, remote: Fdid) -> Result<Bdf, DeviceError> {
        self.sim.attach_shadow(self.node, remote)
    }

    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        // A borrowed device's shadow goes entirely; a local function stays known, not present.
        let borrowed = self
            .sim
            .host(self.node)
            .and_then(|h| h.devices.get(&bdf))
            .is_some_and(|d| d.remote.is_some());
        if borrowed {
            self.sim.detach_shadow(self.node, bdf)
        } else {
            match self.sim.hot_remove(self.node, bdf) {
                Err(DeviceError::NoDevice(_)) => Ok(()),
                other => other,
            }
        }
    }

    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        self.sim.health(self.node, bdf)
    }
}

fn map_error(e: MapError) -> FabricError {
    match e {
        MapError::NoRoute { .. } => FabricError::Failed(e.to_string()),
        MapError::Adapter { .. } | MapError::RequesterSlots { .. } => {
            FabricError::NoCapacity(e.to_string())
        }
    }
}

impl FabricControl for FabricManager<'_> {
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn mappings(&self) -> Result<Vec<FabricMapping>, FabricError> {
        Ok(self
            .sim
            .fabric
            .mappings()
            .map(|m| FabricMapping {
                lease: m.lease,
                fdid: m.kind.fdid(),
                borrower: m.kind.borrower(),
                mapped: match m.kind {
                    MappingKind::Bar { bar, .. } => Mapped::Bar(bar),
                    MappingKind::Dma { .. } => Mapped::Dma,
                },
            })
            .collect())
    }

    fn map_bar(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        bar: u8,
        size: u64,
        borrower: NodeId,
    ) -> Result<(), FabricError> {
        self.sim
            .fabric
            .map_bar(lease, fdid, bar, size, borrower)
            .map(|_| ())
            .map_err(map_error)
    }

    fn map_dma(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        borrower: NodeId,
        size: u64,
    ) -> Result<(), FabricError> {
        self.sim
            .fabric
            .map_dma(lease, fdid, borrower, DMA_BASE, size)
            .map(|_| ())
            .map_err(map_error)
    }

    fn unmap_lease(&mut self, lease: LeaseId) -> Result<(), FabricError> {
        self.sim.fabric.unmap_lease(lease);
        Ok(())
    }

    fn attach(&mut self, _: LeaseId, _: Fdid, _: NodeId) -> Result<(), FabricError> {
        Err(FabricError::Unsupported(
            "attach a whole device: the simulated NTB maps windows".into(),
        ))
    }

    fn detach(&mut self, _: LeaseId) -> Result<(), FabricError> {
        Err(FabricError::Unsupported(
            "detach a whole device: the simulated NTB maps windows".into(),
        ))
    }
}

impl Site for Sim {
    type Host<'a> = HostControl<'a>;
    type Fabric<'a> = FabricManager<'a>;

    fn host_control(&mut self, node: NodeId) -> HostControl<'_> {
        HostControl { sim: self, node }
    }

    fn fabric_control(&mut self) -> FabricManager<'_> {
        FabricManager { sim: self }
    }
}
