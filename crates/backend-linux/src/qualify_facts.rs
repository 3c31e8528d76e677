//! The Linux-only facts qualification needs (read-only): IOMMU mode, binding controls, CPU, and the
//! borrower's module lists. Per-device context is built backend-independently by
//! `pcipool_qualify::gather` from the inventory.

use std::path::Path;

use pcipool_backend::{DeviceRecord, HostInventory};
use pcipool_qualify::modalias::{Alias, parse_builtin_modinfo, parse_modules_alias};
use pcipool_qualify::{IommuMode, PlatformFacts};

use crate::sysfs::{HostPaths, SysfsError, list_dir, read_opt};

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
