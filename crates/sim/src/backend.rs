//! The simulator behind the same backend traits as the Linux backend.

use pcipool_backend::{
    DeviceControl, DeviceError, DeviceHealth, DeviceRecord, HostInventory, Inventory, KernelLink,
    ResetMethodSource,
};
use pcipool_fabric::NodeId;
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

/// Control handle of one simulated host.
#[derive(Debug)]
pub struct HostControl<'a> {
    /// The simulator.
    pub sim: &'a mut Sim,
    /// The host.
    pub node: NodeId,
}

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

impl DeviceControl for HostControl<'_> {
    fn read_config(&self, bdf: Bdf, offset: u16, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.sim.read_config(self.node, bdf, offset, buf)
    }

    fn write_config(&mut self, bdf: Bdf, offset: u16, data: &[u8]) -> Result<(), DeviceError> {
        self.sim.write_config(self.node, bdf, offset, data)
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

    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        self.sim.hot_remove(self.node, bdf)
    }

    fn hot_add(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        self.sim.hot_add(self.node, bdf)
    }

    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        self.sim.health(self.node, bdf)
    }
}
