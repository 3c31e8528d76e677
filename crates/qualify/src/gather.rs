//! Per-device rule input from any backend's inventory: group peers, bus siblings, the path to the root
//! port, the lender's NTB adapter and the borrower's drivers. Pure: the same code serves the Linux
//! backend and the simulator.

use pcipool_backend::{DeviceRecord, HostInventory, ResetMethodSource};
use pcipool_pcie::{Bdf, PortType};

use crate::facts::{DeviceContext, NativeDriver, Neighbour, PathHop};
use crate::modalias::{Alias, find_driver};

/// Drivers that hold a device without using it (a device bound to them is not "in use").
const STUB_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

fn in_use(d: &DeviceRecord) -> bool {
    let busy_driver = d
        .driver
        .as_deref()
        .is_some_and(|drv| !STUB_DRIVERS.contains(&drv));
    busy_driver || !d.block_devices.is_empty() || !d.net_interfaces.is_empty()
}

fn neighbour(d: &DeviceRecord) -> Neighbour {
    Neighbour {
        bdf: d.bdf,
        driver: d.driver.clone(),
        is_bridge: d.facts.is_bridge(),
        in_use: in_use(d),
    }
}

/// The lender's NTB adapter: `explicit`, else a function bound to a Linux NTB hardware driver.
pub fn find_ntb_adapter(inv: &HostInventory, explicit: Option<Bdf>) -> Option<Bdf> {
    explicit.or_else(|| {
        inv.devices
            .iter()
            .find(|d| {
                d.driver
                    .as_deref()
                    .is_some_and(|drv| drv.starts_with("ntb_hw_"))
            })
            .map(|d| d.bdf)
    })
}

/// Builds the rule input for one device.
pub fn device_context(
    inv: &HostInventory,
    record: &DeviceRecord,
    ntb: Option<Bdf>,
    aliases: Option<&[Alias]>,
) -> DeviceContext {
    let by_bdf = |b: Bdf| inv.devices.iter().find(|d| d.bdf == b);
    let group_peers = record
        .iommu_group_peers
        .iter()
        .filter_map(|b| by_bdf(*b))
        .map(neighbour)
        .collect();
    let bus_siblings = inv
        .devices
        .iter()
        .filter(|d| d.bdf != record.bdf && d.parent_chain == record.parent_chain)
        .filter(|d| (d.bdf.domain(), d.bdf.bus()) == (record.bdf.domain(), record.bdf.bus()))
        .map(neighbour)
        .collect();
    let upstream_path = record
        .parent_chain
        .iter()
        .rev()
        .map(|b| {
            let bridge = by_bdf(*b);
            let port = bridge.and_then(|d| d.facts.pci_express().map(|e| e.port_type));
            PathHop {
                bdf: *b,
                acs_request_redirect: bridge
                    .and_then(|d| d.facts.acs().map(|a| a.control.request_redirect)),
                switch_port: matches!(
                    port,
                    Some(PortType::UpstreamPort | PortType::DownstreamPort)
                ),
            }
        })
        .collect();
    let ntb_record = ntb.and_then(by_bdf);
    let ntb_path: Vec<Bdf> = ntb_record
        .map(|n| n.parent_chain.iter().rev().copied().collect())
        .unwrap_or_default();
    let is_fabric_path =
        ntb == Some(record.bdf) || (record.facts.is_bridge() && ntb_path.contains(&record.bdf));
    let native_driver = match (aliases, &record.modalias) {
        (None, _) => NativeDriver::Unknown,
        (Some(_), None) => NativeDriver::NotFound,
        (Some(list), Some(m)) => find_driver(m, list).map_or(NativeDriver::NotFound, |d| {
            NativeDriver::Found(d.to_owned())
        }),
    };
    DeviceContext {
        bdf: record.bdf,
        facts: record.facts.clone(),
        driver: record.driver.clone(),
        iommu_group: record.iommu_group,
        group_peers,
        reset_methods: record.reset_methods.clone(),
        reset_methods_from_kernel: record.reset_methods_source == ResetMethodSource::Kernel,
        bus_siblings,
        upstream_path,
        ntb_path,
        mount_points: record
            .block_devices
            .iter()
            .flat_map(|b| b.mount_points.iter().cloned())
            .collect(),
        backs_root_fs: record.backs_root_fs,
        backs_default_route: record.backs_default_route,
        is_fabric_path,
        is_virtual_function: record.physfn.is_some(),
        native_driver,
    }
}
