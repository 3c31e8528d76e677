//! Inventory of a Linux host, read-only, over a [`HostPaths`] root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pcipool_backend::{
    BlockDevice, DeviceRecord, HostInventory, Inventory, KernelLink, ResetMethodSource, SriovState,
};
use pcipool_describe::PciIds;
use pcipool_pcie::{Bdf, BusPosition, DeviceFacts, KnownSizes, ResetMethod};

use crate::procfs::{self, Mount};
use crate::sysfs::{
    self, HostPaths, SysfsError, bdfs_in_path, link_name, list_dir, parse_hex_u32, read_opt,
    read_parsed, resolve,
};

/// Holder chains (partition -> dm -> md ...) are short; the bound only guards against a cyclic fake.
const MAX_STACK_DEPTH: usize = 8;

/// A Linux host read through sysfs and procfs roots.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    paths: HostPaths,
    ids: &'static PciIds,
}

impl LinuxHost {
    /// A host under the given roots, naming devices from the system pci.ids.
    pub fn new(paths: HostPaths) -> Self {
        Self {
            paths,
            ids: PciIds::system(),
        }
    }

    /// Uses a specific pci.ids database (tests, or `--pci-ids`).
    pub fn with_ids(mut self, ids: &'static PciIds) -> Self {
        self.ids = ids;
        self
    }

    /// The roots.
    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }
}

/// A block device as sysfs shows it, before it is matched to a PCI function.
struct BlockNode {
    path: PathBuf,
    dev: Option<String>,
    holders: Vec<String>,
}

struct HostContext {
    /// The kernel has the `reset_method` attribute (Linux 5.15+), so its absence means "none".
    kernel_lists_resets: bool,
    blocks: BTreeMap<String, BlockNode>,
    mounts: Vec<Mount>,
    route_ifaces: BTreeSet<String>,
    nets: BTreeMap<String, PathBuf>,
}

impl HostContext {
    fn read(paths: &HostPaths) -> Result<Self, SysfsError> {
        let mut blocks = BTreeMap::new();
        let class_block = paths.sys.join("class/block");
        for name in list_dir(&class_block)? {
            let link = class_block.join(&name);
            let Ok(path) = resolve(&link) else { continue };
            let dev = read_opt(&path.join("dev"))?;
            let holders = list_dir(&path.join("holders"))?;
            blocks.insert(name, BlockNode { path, dev, holders });
        }
        let mut nets = BTreeMap::new();
        let class_net = paths.sys.join("class/net");
        for name in list_dir(&class_net)? {
            if let Ok(path) = resolve(&class_net.join(&name)) {
                nets.insert(name, path);
            }
        }
        let mounts = procfs::read_mounts(&paths.proc)?;
        let mut route_ifaces = BTreeSet::new();
        for iface in procfs::read_default_routes(&paths.proc)? {
            Self::lower_interfaces(&paths.sys, &iface, 0, &mut route_ifaces)?;
        }
        let release = read_opt(&paths.proc.join("sys/kernel/osrelease"))?;
        Ok(Self {
            kernel_lists_resets: release
                .as_deref()
                .and_then(kernel_version)
                .is_some_and(|v| v >= (5, 15)),
            blocks,
            mounts,
            route_ifaces,
            nets,
        })
    }

    /// A bond, bridge or VLAN carries traffic over its `lower_*` interfaces; collect them all.
    fn lower_interfaces(
        sys: &Path,
        iface: &str,
        depth: usize,
        out: &mut BTreeSet<String>,
    ) -> Result<(), SysfsError> {
        if depth > MAX_STACK_DEPTH || !out.insert(iface.to_owned()) {
            return Ok(());
        }
        for entry in list_dir(&sys.join("class/net").join(iface))? {
            if let Some(lower) = entry.strip_prefix("lower_") {
                Self::lower_interfaces(sys, lower, depth + 1, out)?;
            }
        }
        Ok(())
    }

    /// Mount points on `name` or on anything stacked on it (dm, md, partitions' holders).
    fn mount_points(&self, name: &str, depth: usize, out: &mut BTreeSet<String>) {
        let Some(node) = self.blocks.get(name) else {
            return;
        };
        if let Some(dev) = &node.dev {
            out.extend(
                self.mounts
                    .iter()
                    .filter(|m| &m.dev == dev)
                    .map(|m| m.mount_point.clone()),
            );
        }
        if depth < MAX_STACK_DEPTH {
            for holder in &node.holders {
                self.mount_points(holder, depth + 1, out);
            }
        }
    }
}

/// "6.1.0-18-amd64" -> (6, 1).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn parse_link_width(text: &str) -> Option<u8> {
    text.parse().ok()
}

impl LinuxHost {
    fn read_device(
        &self,
        bdf: Bdf,
        ctx: &HostContext,
    ) -> Result<(DeviceRecord, PathBuf), SysfsError> {
        let link = self.paths.pci_devices().join(bdf.to_string());
        let dir = resolve(&link)?;
        let mut sysfs_warnings = Vec::new();
        let mut note = |e: SysfsError| sysfs_warnings.push(format!("{e:#}"));

        let resource = read_opt(&dir.join("resource")).unwrap_or_else(|e| {
            note(e);
            None
        });
        let sizes = match resource
            .as_deref()
            .map(|t| sysfs::parse_resource(&dir.join("resource"), t))
        {
            Some(Ok((bars, rom))) => KnownSizes { bars, rom },
            Some(Err(e)) => {
                note(e);
                KnownSizes::default()
            }
            None => KnownSizes::default(),
        };
        let decoded = sysfs::read_bytes(&dir.join("config"))
            .map_err(|e| format!("{e}"))
            .and_then(|bytes| {
                pcipool_pcie::decode_with_sizes(&bytes, &sizes)
                    .map_err(|e| format!("config space: {e}"))
            });
        let (facts, config_error) = match decoded {
            Ok(facts) => (facts, None),
            Err(why) => {
                let id = |f: &str| {
                    read_parsed(&dir.join(f), parse_hex_u32)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                let facts = DeviceFacts::from_ids(
                    u16::try_from(id("vendor")).unwrap_or(u16::MAX),
                    u16::try_from(id("device")).unwrap_or(u16::MAX),
                    id("class"),
                );
                (facts, Some(why))
            }
        };

        let mut opt = |r: Result<Option<String>, SysfsError>| {
            r.unwrap_or_else(|e| {
                note(e);
                None
            })
        };
        let driver = opt(link_name(&dir.join("driver")));
        let driver_override =
            opt(read_opt(&dir.join("driver_override"))).filter(|s| s != "(null)" && !s.is_empty());
        let modalias = opt(read_opt(&dir.join("modalias")));
        let iommu_group_name = opt(link_name(&dir.join("iommu_group")));
        let numa_text = opt(read_opt(&dir.join("numa_node")));
        let reset_text = opt(read_opt(&dir.join("reset_method")));
        let total_vfs = opt(read_opt(&dir.join("sriov_totalvfs")));
        let num_vfs = opt(read_opt(&dir.join("sriov_numvfs")));
        let autoprobe = opt(read_opt(&dir.join("sriov_drivers_autoprobe")));
        let link = KernelLink {
            current_speed: opt(read_opt(&dir.join("current_link_speed"))),
            current_width: opt(read_opt(&dir.join("current_link_width")))
                .and_then(|t| parse_link_width(&t)),
            max_speed: opt(read_opt(&dir.join("max_link_speed"))),
            max_width: opt(read_opt(&dir.join("max_link_width")))
                .and_then(|t| parse_link_width(&t)),
        };

        let iommu_group = iommu_group_name
            .as_deref()
            .and_then(|n| n.parse::<u32>().ok());
        let iommu_group_peers = match iommu_group {
            Some(g) => list_dir(
                &self
                    .paths
                    .sys
                    .join("kernel/iommu_groups")
                    .join(g.to_string())
                    .join("devices"),
            )
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.parse::<Bdf>().ok())
            .filter(|b| *b != bdf)
            .collect(),
            None => Vec::new(),
        };
        let numa_node = numa_text
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(|n| u32::try_from(n).ok());
        let kernel_resets: Option<Vec<ResetMethod>> = reset_text.map(|t| {
            t.split_whitespace()
                .filter_map(|m| match m.parse() {
                    Ok(method) => Some(method),
                    Err(e) => {
                        sysfs_warnings.push(format!("reset_method: {e}"));
                        None
                    }
                })
                .collect()
        });
        let sriov = total_vfs
            .and_then(|t| t.parse::<u16>().ok())
            .map(|total_vfs| SriovState {
                total_vfs,
                num_vfs: num_vfs.and_then(|n| n.parse().ok()).unwrap_or(0),
                drivers_autoprobe: autoprobe.map(|a| a == "1"),
            });
        let physfn = resolve(&dir.join("physfn")).ok().and_then(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
        });
        let mut parent_chain = bdfs_in_path(&dir);
        parent_chain.pop();

        let mut block_devices = Vec::new();
        let mut backs_root_fs = false;
        for (name, node) in &ctx.blocks {
            // A disk belongs to the nearest PCI function above it, not to every bridge on the way.
            if bdfs_in_path(&node.path).last() == Some(&bdf) {
                let mut points = BTreeSet::new();
                ctx.mount_points(name, 0, &mut points);
                backs_root_fs |= points.contains("/");
                block_devices.push(BlockDevice {
                    name: name.clone(),
                    dev: node.dev.clone(),
                    mount_points: points.into_iter().collect(),
                });
            }
        }
        let net_interfaces: Vec<String> = ctx
            .nets
            .iter()
            .filter(|(_, path)| bdfs_in_path(path).last() == Some(&bdf))
            .map(|(name, _)| name.clone())
            .collect();
        let backs_default_route = net_interfaces.iter().any(|n| ctx.route_ifaces.contains(n));

        let (reset_methods, reset_methods_source) = match kernel_resets {
            Some(methods) => (methods, ResetMethodSource::Kernel),
            // Since 5.15 the kernel hides `reset_method` when a function has no reset method at all.
            None if ctx.kernel_lists_resets => (Vec::new(), ResetMethodSource::Kernel),
            // Filled in once every device's bus position is known.
            None => (Vec::new(), ResetMethodSource::Derived),
        };
        let record = DeviceRecord {
            bdf,
            vendor_name: self.ids.vendor(facts.vendor_id).map(str::to_owned),
            device_name: self
                .ids
                .device(facts.vendor_id, facts.device_id)
                .map(str::to_owned),
            facts,
            config_error,
            driver,
            driver_override,
            modalias,
            iommu_group,
            iommu_group_peers,
            numa_node,
            reset_methods,
            reset_methods_source,
            sriov,
            physfn,
            link,
            parent_chain,
            block_devices,
            net_interfaces,
            backs_root_fs,
            backs_default_route,
            sysfs_warnings,
        };
        Ok((record, dir))
    }
}

impl Inventory for LinuxHost {
    type Error = SysfsError;

    fn inventory(&self) -> Result<HostInventory, SysfsError> {
        let devices_dir = self.paths.pci_devices();
        if !devices_dir.is_dir() {
            return Err(SysfsError::NoPciBus { path: devices_dir });
        }
        let ctx = HostContext::read(&self.paths)?;
        let mut devices = Vec::new();
        for name in list_dir(&devices_dir)? {
            let Ok(bdf) = name.parse::<Bdf>() else {
                continue;
            };
            match self.read_device(bdf, &ctx) {
                Ok((record, _)) => devices.push(record),
                // A device that vanished between listing and reading (hot-removed) is simply gone.
                Err(SysfsError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        devices.sort_by_key(|d| d.bdf);
        let buses: Vec<(u32, u8)> = devices
            .iter()
            .map(|d| (d.bdf.domain(), d.bdf.bus()))
            .collect();
        for device in &mut devices {
            if device.reset_methods_source == ResetMethodSource::Derived {
                let on_bus = buses
                    .iter()
                    .filter(|b| **b == (device.bdf.domain(), device.bdf.bus()))
                    .count();
                let position = BusPosition {
                    on_root_bus: device.parent_chain.is_empty(),
                    has_siblings: on_bus > 1,
                };
                device.reset_methods =
                    pcipool_pcie::derive_reset_methods(&device.facts, Some(position));
            }
        }
        Ok(HostInventory {
            hostname: read_opt(&self.paths.proc.join("sys/kernel/hostname"))
                .ok()
                .flatten(),
            kernel_release: read_opt(&self.paths.proc.join("sys/kernel/osrelease"))
                .ok()
                .flatten(),
            devices,
        })
    }
}
