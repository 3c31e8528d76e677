//! What holds a PCI function on its host, before the function is taken away: its block devices mounted,
//! held by device-mapper or md, or open; its character devices, `resource*`/`config` files or VFIO
//! group open or mapped by a process; its network interfaces up and carrying routes. Each holder is one
//! line an operator can act on (path, process id and name).
//!
//! "Cannot tell" is a holder too: a process whose open files cannot be read is reported, because a
//! check that cannot see must not say the device is free.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pcipool_pcie::Bdf;

use crate::procfs;
use crate::sysfs::{HostPaths, SysfsError, list_dir, read_opt, resolve};

/// What the device exposes to programs: `/dev` node names and network interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposed {
    /// Block devices (disks and partitions), with `major:minor`.
    pub blocks: Vec<(String, String)>,
    /// Other `/dev` nodes (`nvme0`, `vfio/12`).
    pub nodes: Vec<String>,
    /// Network interfaces.
    pub interfaces: Vec<String>,
    /// The device's directory relative to the sysfs root (`devices/pci0000:00/...`), which a
    /// process's open `resource0` or `config` names.
    pub sysfs_dir: PathBuf,
}

/// How deep below the function's directory its class devices are looked for (`nvme/nvme0/nvme0n1p1`
/// is four; a disk behind a storage controller about six).
const CLASS_DEPTH: usize = 8;

/// Finds what the function exposes: the class devices (disks, interfaces, character devices) in the
/// directories below its own. Walking those reads a few dozen entries, where resolving every entry of
/// every `/sys/class` directory would follow hundreds of links (seconds under emulation).
///
/// # Errors
/// The device directory does not resolve (no such function), or a directory below it cannot be read.
pub fn exposed(paths: &HostPaths, bdf: Bdf) -> Result<Exposed, SysfsError> {
    let dir = resolve(&paths.pci_devices().join(bdf.to_string()))?;
    let sys = resolve(&paths.sys)?;
    let mut out = Exposed {
        sysfs_dir: dir.strip_prefix(&sys).unwrap_or(&dir).to_path_buf(),
        ..Exposed::default()
    };
    let mut pending = vec![(dir.clone(), 0usize)];
    while let Some((at, depth)) = pending.pop() {
        for (name, path) in subdirectories(&at)? {
            // A class device names its class through `subsystem`; a tree without those links (a
            // test's fake) puts it in a directory named after its class (`block/sda`, `net/eth0`).
            let class = match crate::sysfs::link_name(&path.join("subsystem"))? {
                Some(class) => Some(class),
                None => at.file_name().map(|n| n.to_string_lossy().into_owned()),
            };
            match class.as_deref() {
                Some("block") => {
                    let dev = read_opt(&path.join("dev"))?.unwrap_or_default();
                    out.blocks.push((name, dev));
                }
                Some("net") => out.interfaces.push(name),
                _ if path.join("dev").exists() => out.nodes.push(name),
                _ => {}
            }
            if depth + 1 < CLASS_DEPTH {
                pending.push((path, depth + 1));
            }
        }
    }
    if let Some(group) = crate::sysfs::link_name(&dir.join("iommu_group"))? {
        out.nodes.push(format!("vfio/{group}"));
    }
    out.blocks.sort();
    out.interfaces.sort();
    out.nodes.sort();
    out.nodes.dedup();
    Ok(out)
}

/// The real directories in `dir` (links such as `driver`, `subsystem`, `iommu_group` lead out of the
/// device's tree), by the entries' own types: no extra call per entry.
fn subdirectories(dir: &Path) -> Result<Vec<(String, PathBuf)>, SysfsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::sysfs::read_err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| crate::sysfs::read_err(dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Everything that holds the function now; empty when it can be taken away.
///
/// # Errors
/// The function does not exist, or a table cannot be read.
pub fn holders(paths: &HostPaths, bdf: Bdf) -> Result<Vec<String>, SysfsError> {
    let exposed = exposed(paths, bdf)?;
    let mut out = Vec::new();
    let mounts = procfs::read_mounts(&paths.proc)?;
    let class_block = paths.sys.join("class/block");
    for (name, dev) in &exposed.blocks {
        for m in mounts.iter().filter(|m| !dev.is_empty() && m.dev == *dev) {
            out.push(format!("/dev/{name} is mounted on {}", m.mount_point));
        }
        for holder in list_dir(&class_block.join(name).join("holders"))? {
            out.push(format!("/dev/{name} is held by {holder}"));
        }
    }
    let routed = routed_interfaces(&paths.proc)?;
    for iface in &exposed.interfaces {
        let state = read_opt(&paths.sys.join("class/net").join(iface).join("operstate"))?;
        let up = matches!(state.as_deref(), Some("up" | "unknown"));
        if up && routed.contains(iface) {
            out.push(format!("interface {iface} is up and carries routes"));
        }
    }
    out.extend(processes(paths, &exposed)?);
    Ok(out)
}

/// Interfaces named by any IPv4 or IPv6 route (an address with a prefix adds one).
fn routed_interfaces(proc: &Path) -> Result<BTreeSet<String>, SysfsError> {
    let mut out = BTreeSet::new();
    if let Some(text) = read_opt(&proc.join("net/route"))? {
        out.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned)),
        );
    }
    if let Some(text) = read_opt(&proc.join("net/ipv6_route"))? {
        out.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(9).map(str::to_owned))
                .filter(|i| i != "lo"),
        );
    }
    Ok(out)
}

/// Whether a path a process has open or mapped is one of the device's.
fn names_device(target: &str, exposed: &Exposed) -> bool {
    let dev_node = target.strip_prefix("/dev/");
    dev_node.is_some_and(|n| {
        exposed.blocks.iter().any(|(b, _)| b == n) || exposed.nodes.iter().any(|c| c == n)
    }) || target.contains(&format!("/{}/", exposed.sysfs_dir.display()))
}

fn processes(paths: &HostPaths, exposed: &Exposed) -> Result<Vec<String>, SysfsError> {
    let mut out = Vec::new();
    let me = std::process::id().to_string();
    let real_proc = paths.proc == Path::new("/proc");
    for pid in list_dir(&paths.proc)? {
        if !pid.bytes().all(|b| b.is_ascii_digit()) || (real_proc && pid == me) {
            continue;
        }
        let dir = paths.proc.join(&pid);
        // A kernel thread has no executable, no open files and no maps: one call tells it apart
        // (the scan of every process's files is the check's cost, many times over under emulation).
        // A zombie has none either; a process whose `exe` cannot be read for another reason is
        // looked at like any other.
        if let Err(e) = std::fs::read_link(dir.join("exe"))
            && e.kind() == std::io::ErrorKind::NotFound
        {
            continue;
        }
        // Read only for a process that is reported: most processes hold nothing.
        let comm = || {
            read_opt(&dir.join("comm"))
                .ok()
                .flatten()
                .unwrap_or_else(|| "?".into())
        };
        let mut seen = BTreeSet::new();
        match std::fs::read_dir(dir.join("fd")) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if let Ok(target) = std::fs::read_link(entry.path()) {
                        let target = target.to_string_lossy().into_owned();
                        if names_device(&target, exposed) && seen.insert(target.clone()) {
                            out.push(format!("pid {pid} ({}) has {target} open", comm()));
                        }
                    }
                }
            }
            // The process ended while we looked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.push(format!(
                    "pid {pid} ({}): cannot read its open files ({e})",
                    comm()
                ));
                continue;
            }
        }
        if let Ok(Some(maps)) = read_opt(&dir.join("maps")) {
            for line in maps.lines() {
                if let Some(target) = line.split_whitespace().nth(5)
                    && names_device(target, exposed)
                    && seen.insert(target.to_owned())
                {
                    out.push(format!("pid {pid} ({}) maps {target}", comm()));
                }
            }
        }
    }
    Ok(out)
}
