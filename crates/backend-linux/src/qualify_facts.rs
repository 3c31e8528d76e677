//! Gathering the facts qualification needs from a Linux host (read-only), on top of the inventory.

use std::path::Path;

use pcipool_backend::{DeviceRecord, HostInventory};
use pcipool_pcie::{Bdf, PortType};
use pcipool_qualify::modalias::{Alias, find_driver, parse_builtin_modinfo, parse_modules_alias};
use pcipool_qualify::{DeviceContext, IommuMode, NativeDriver, Neighbour, PathHop, PlatformFacts};

use crate::sysfs::{HostPaths, SysfsError, list_dir, read_opt};

/// Drivers that hold a device without using it (a device bound to them is not "in use").
const STUB_DRIVERS: &[&str] = &["vfio-pci", "pci-stub", "pcieport"];

/// Reads the IOMMU mode: groups present, their `type` file, and the kernel command line.
///
/// # Errors
/// Read errors other than missing files.
pub fn iommu_mode(paths: &HostPaths) -> Result<(IommuMode, String), SysfsError> {
    let groups = list_dir(&paths.sys.join("kernel/iommu_groups"))?;
    let units = list_dir(&paths.sys.join("class/iommu"))?;
    let cmdline = read_opt(&paths.proc.join("cmdline"))?.unwrap_or_default();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let said = |w: &str| words.contains(&w);
    let mut evidence = format!("{} iommu groups, {} iommu units", groups.len(), units.len());
    if groups.is_empty() {
        evidence.push_str(if said("intel_iommu=off") || said("amd_iommu=off") {
            ", disabled on the kernel command line"
        } else {
            ", no groups: no IOMMU or not enabled"
        });
        return Ok((IommuMode::Off, evidence));
    }
    let first_type = groups.iter().find_map(|g| {
        read_opt(&paths.sys.join("kernel/iommu_groups").join(g).join("type"))
            .ok()
            .flatten()
    });
    if let Some(t) = &first_type {
        evidence.push_str(&format!(", group type '{t}'"));
    }
    let passthrough = said("iommu=pt")
        || said("iommu.passthrough=1")
        || first_type.as_deref() == Some("identity");
    let mode = match first_type.as_deref() {
        _ if passthrough => IommuMode::Passthrough,
        Some(t) if t.starts_with("DMA") => IommuMode::Translated,
        _ => IommuMode::Unknown,
    };
    Ok((mode, evidence))
}

/// Host-wide facts.
///
/// # Errors
/// Read errors other than missing files.
pub fn platform_facts(paths: &HostPaths, inv: &HostInventory) -> Result<PlatformFacts, SysfsError> {
    let (iommu, iommu_evidence) = iommu_mode(paths)?;
    let devices = paths.pci_devices();
    let driver_override = inv.devices.iter().any(|d| {
        devices
            .join(d.bdf.to_string())
            .join("driver_override")
            .exists()
    });
    let sriov_capable: Vec<&DeviceRecord> = inv
        .devices
        .iter()
        .filter(|d| d.facts.sriov().is_some())
        .collect();
    let sriov_support = sriov_capable.is_empty() || sriov_capable.iter().any(|d| d.sriov.is_some());
    let host_bridge = inv
        .devices
        .iter()
        .find(|d| {
            d.parent_chain.is_empty() && d.facts.class.base == 0x06 && d.facts.class.sub == 0x00
        })
        .map(|d| (d.facts.vendor_id, d.facts.device_id));
    let cpuinfo = read_opt(&paths.proc.join("cpuinfo"))?.unwrap_or_default();
    Ok(PlatformFacts {
        cpu: parse_cpu(&cpuinfo),
        kernel_release: inv.kernel_release.clone(),
        iommu,
        iommu_evidence,
        driver_override,
        drivers_probe: paths.sys.join("bus/pci/drivers_probe").exists(),
        sriov_support,
        host_bridge,
    })
}

/// Vendor and family of the first CPU in `/proc/cpuinfo`.
pub fn parse_cpu(cpuinfo: &str) -> Option<(String, u32)> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    Some((field("vendor_id")?, field("cpu family")?.parse().ok()?))
}

/// Loads a borrower's driver aliases from `modules.alias`, or from a module directory holding
/// `modules.alias` and `modules.builtin.modinfo`.
///
/// # Errors
/// When neither file can be read.
pub fn load_aliases(path: &Path) -> Result<Vec<Alias>, SysfsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| SysfsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    if path.is_dir() {
        let mut aliases = Vec::new();
        let alias_file = path.join("modules.alias");
        let builtin = path.join("modules.builtin.modinfo");
        if !alias_file.exists() && !builtin.exists() {
            return Err(SysfsError::Parse {
                path: path.to_owned(),
                content: "neither modules.alias nor modules.builtin.modinfo here".into(),
            });
        }
        if alias_file.exists() {
            aliases.extend(parse_modules_alias(&String::from_utf8_lossy(&read(
                &alias_file,
            )?)));
        }
        if builtin.exists() {
            aliases.extend(parse_builtin_modinfo(&read(&builtin)?));
        }
        Ok(aliases)
    } else {
        let bytes = read(path)?;
        Ok(
            if path
                .file_name()
                .is_some_and(|n| n == "modules.builtin.modinfo")
            {
                parse_builtin_modinfo(&bytes)
            } else {
                parse_modules_alias(&String::from_utf8_lossy(&bytes))
            },
        )
    }
}

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
        reset_methods_from_kernel: record.reset_methods_source
            == pcipool_backend::ResetMethodSource::Kernel,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cpu_reads_vendor_and_family() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n";
        assert_eq!(parse_cpu(text), Some(("AuthenticAMD".to_owned(), 25)));
    }

    #[test]
    fn parse_cpu_garbage_is_none() {
        assert_eq!(parse_cpu("cpu family: lots\n"), None);
    }
}
