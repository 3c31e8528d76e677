//! A fake sysfs (and the bits of procfs pcipool reads), laid out as the kernel lays out the real ones.
//!
//! ```text
//! <root>/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/{config,resource,vendor,...}
//! <root>/sys/bus/pci/devices/0000:01:00.0 -> ../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0
//! <root>/sys/bus/pci/drivers/nvme/0000:01:00.0 -> ../../../../devices/...
//! <root>/sys/kernel/iommu_groups/7/devices/0000:01:00.0 -> ...
//! <root>/sys/class/block/nvme0n1 -> ../../devices/.../0000:01:00.0/nvme/nvme0/nvme0n1
//! <root>/proc/self/mountinfo, <root>/proc/net/route
//! ```

use std::fmt::Write as _;
use std::io;
use std::path::{Component, Path, PathBuf};

use pcipool_pcie::{Bdf, BuiltConfig};

/// One function to put in the tree.
#[derive(Debug, Clone)]
pub struct FakeDevice {
    /// Address.
    pub bdf: Bdf,
    /// Parent bridge (None = on a root bus).
    pub parent: Option<Bdf>,
    /// Config space and BAR sizes.
    pub config: BuiltConfig,
    /// How many config bytes the `config` file shows (64 for non-root readers, 256 or 4096).
    pub config_len: usize,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`.
    pub driver_override: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// NUMA node (-1 = none).
    pub numa_node: i32,
    /// `reset_method` file content (None = file absent, as before Linux 5.15).
    pub reset_method: Option<String>,
    /// Block devices: (name, "major:minor").
    pub block_devices: Vec<(String, String)>,
    /// Network interfaces.
    pub net_interfaces: Vec<String>,
    /// SR-IOV (total, enabled) when the PF exposes it.
    pub sriov: Option<(u16, u16)>,
    /// The PF, when this is a VF.
    pub physfn: Option<Bdf>,
}

impl FakeDevice {
    /// A device with a 4096-byte config file and nothing else attached.
    pub fn new(bdf: Bdf, config: BuiltConfig) -> Self {
        Self {
            bdf,
            parent: None,
            config,
            config_len: 4096,
            driver: None,
            driver_override: None,
            iommu_group: None,
            numa_node: -1,
            reset_method: None,
            block_devices: Vec::new(),
            net_interfaces: Vec::new(),
            sriov: None,
            physfn: None,
        }
    }

    /// Sets the parent bridge.
    pub fn under(mut self, parent: Bdf) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Binds a driver.
    pub fn driver(mut self, name: &str) -> Self {
        self.driver = Some(name.to_owned());
        self
    }

    /// Puts the device in an IOMMU group.
    pub fn iommu_group(mut self, group: u32) -> Self {
        self.iommu_group = Some(group);
        self
    }

    /// Adds a block device.
    pub fn block(mut self, name: &str, dev: &str) -> Self {
        self.block_devices.push((name.to_owned(), dev.to_owned()));
        self
    }

    /// Adds a network interface.
    pub fn net(mut self, name: &str) -> Self {
        self.net_interfaces.push(name.to_owned());
        self
    }

    /// Exposes SR-IOV with `total` VFs, `enabled` of them on.
    pub fn sriov(mut self, total: u16, enabled: u16) -> Self {
        self.sriov = Some((total, enabled));
        self
    }

    /// Writes a `reset_method` file.
    pub fn reset_method(mut self, methods: &str) -> Self {
        self.reset_method = Some(methods.to_owned());
        self
    }
}

/// Paths of a built fake host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeHost {
    /// The fake `/sys`.
    pub sys: PathBuf,
    /// The fake `/proc`.
    pub proc: PathBuf,
}

/// Builds a fake tree under a directory the caller owns (usually a `tempfile::TempDir`).
#[derive(Debug, Clone)]
pub struct SysfsTreeBuilder {
    root: PathBuf,
    devices: Vec<FakeDevice>,
    mounts: Vec<(String, String)>,
    default_route: Option<String>,
    kernel_release: String,
    processes: Vec<FakeProcess>,
    drivers: Vec<String>,
}

/// A process in the fake `/proc`: what it has open (`fd/N` links) and mapped (`maps` paths).
#[derive(Debug, Clone)]
pub struct FakeProcess {
    /// Process id.
    pub pid: u32,
    /// `comm`.
    pub comm: String,
    /// Targets of its open file descriptors.
    pub open: Vec<String>,
    /// Paths in its memory maps.
    pub maps: Vec<String>,
}

/// Path from directory `from` to `to`, both absolute: what `ln -s` would store for a relative link.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to_parts[common..] {
        out.push(part.as_os_str());
    }
    out
}

fn symlink(link: &Path, target: &Path) -> io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::symlink(relative_path(dir, target), link)
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, content)
}

fn modalias(cfg: &[u8]) -> String {
    let w = |o: usize| u16::from_le_bytes([cfg[o], cfg[o + 1]]);
    format!(
        "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
        w(0),
        w(2),
        w(0x2c),
        w(0x2e),
        cfg[0x0b],
        cfg[0x0a],
        cfg[0x09]
    )
}

impl SysfsTreeBuilder {
    /// A tree rooted at `root` (which should be empty).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            devices: Vec::new(),
            mounts: Vec::new(),
            default_route: None,
            kernel_release: "6.1.0-fake".to_owned(),
            processes: Vec::new(),
            drivers: Vec::new(),
        }
    }

    /// Adds a process to the fake `/proc`.
    pub fn process(mut self, process: FakeProcess) -> Self {
        self.processes.push(process);
        self
    }

    /// Registers a driver nothing is bound to yet (`bus/pci/drivers/NAME/`), as a loaded module does.
    pub fn loaded_driver(mut self, name: &str) -> Self {
        self.drivers.push(name.to_owned());
        self
    }

    /// Adds a device.
    pub fn device(mut self, device: FakeDevice) -> Self {
        self.devices.push(device);
        self
    }

    /// Mounts block device `dev` ("major:minor") at `mount_point`.
    pub fn mount(mut self, dev: &str, mount_point: &str) -> Self {
        self.mounts.push((dev.to_owned(), mount_point.to_owned()));
        self
    }

    /// Sets the kernel release (`/proc/sys/kernel/osrelease`); before 5.15 there is no `reset_method`.
    pub fn kernel_release(mut self, release: &str) -> Self {
        self.kernel_release = release.to_owned();
        self
    }

    /// Sends the default route through `iface`.
    pub fn default_route(mut self, iface: &str) -> Self {
        self.default_route = Some(iface.to_owned());
        self
    }

    fn device_dir(&self, sys: &Path, bdf: Bdf, depth: usize) -> PathBuf {
        let dev = self.devices.iter().find(|d| d.bdf == bdf);
        match dev.and_then(|d| d.parent) {
            Some(parent) if depth < 32 => self
                .device_dir(sys, parent, depth + 1)
                .join(bdf.to_string()),
            _ => sys
                .join("devices")
                .join(format!("pci{:04x}:{:02x}", bdf.domain(), bdf.bus()))
                .join(bdf.to_string()),
        }
    }

    /// Writes the tree.
    ///
    /// # Errors
    /// Any I/O error while writing.
    pub fn build(self) -> io::Result<FakeHost> {
        let sys = self.root.join("sys");
        let proc = self.root.join("proc");
        std::fs::create_dir_all(sys.join("bus/pci/devices"))?;
        std::fs::create_dir_all(sys.join("kernel/iommu_groups"))?;
        std::fs::create_dir_all(sys.join("class/block"))?;
        std::fs::create_dir_all(sys.join("class/net"))?;
        std::fs::create_dir_all(sys.join("dev/block"))?;
        write(&sys.join("bus/pci/drivers_probe"), "")?;
        write(&sys.join("bus/pci/rescan"), "")?;
        for dev in &self.devices {
            self.write_device(&sys, dev)?;
        }
        for name in &self.drivers {
            let drv = sys.join("bus/pci/drivers").join(name);
            write(&drv.join("bind"), "")?;
            write(&drv.join("unbind"), "")?;
        }
        for p in &self.processes {
            let dir = proc.join(p.pid.to_string());
            write(&dir.join("comm"), format!("{}\n", p.comm))?;
            // A user process has an executable (a kernel thread has none).
            std::os::unix::fs::symlink(format!("/usr/bin/{}", p.comm), dir.join("exe"))?;
            std::fs::create_dir_all(dir.join("fd"))?;
            for (n, target) in p.open.iter().enumerate() {
                std::os::unix::fs::symlink(target, dir.join("fd").join((n + 3).to_string()))?;
            }
            let mut maps = String::new();
            for (n, path) in p.maps.iter().enumerate() {
                let start = 0x7f00_0000_0000u64 + (n as u64) * 0x10_0000;
                let _ = writeln!(
                    maps,
                    "{start:x}-{:x} rw-s 00000000 00:14 1234 {path}",
                    start + 0x4000
                );
            }
            write(&dir.join("maps"), maps)?;
        }
        let mut mountinfo = String::new();
        for (i, (dev, mount_point)) in self.mounts.iter().enumerate() {
            let _ = writeln!(
                mountinfo,
                "{} 1 {dev} / {mount_point} rw,relatime - ext4 /dev/fake{i} rw",
                20 + i
            );
        }
        let _ = writeln!(mountinfo, "90 1 0:21 / /proc rw,relatime - proc proc rw");
        write(&proc.join("self/mountinfo"), mountinfo)?;
        let mut route = String::from(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        if let Some(iface) = &self.default_route {
            let _ = writeln!(
                route,
                "{iface}\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0"
            );
            let _ = writeln!(
                route,
                "{iface}\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0"
            );
        }
        write(&proc.join("net/route"), route)?;
        write(
            &proc.join("sys/kernel/osrelease"),
            format!("{}\n", self.kernel_release),
        )?;
        write(&proc.join("sys/kernel/hostname"), "fakehost\n")?;
        write(&proc.join("cmdline"), "root=/dev/fake0 quiet\n")?;
        Ok(FakeHost { sys, proc })
    }

    fn write_device(&self, sys: &Path, dev: &FakeDevice) -> io::Result<()> {
        let dir = self.device_dir(sys, dev.bdf, 0);
        let cfg = &dev.config.bytes;
        let len = dev.config_len.min(cfg.len());
        write(&dir.join("config"), &cfg[..len])?;
        let w = |o: usize| u16::from_le_bytes([cfg[o], cfg[o + 1]]);
        write(&dir.join("vendor"), format!("0x{:04x}\n", w(0)))?;
        write(&dir.join("device"), format!("0x{:04x}\n", w(2)))?;
        write(
            &dir.join("subsystem_vendor"),
            format!("0x{:04x}\n", w(0x2c)),
        )?;
        write(
            &dir.join("subsystem_device"),
            format!("0x{:04x}\n", w(0x2e)),
        )?;
        write(&dir.join("revision"), format!("0x{:02x}\n", cfg[8]))?;
        write(
            &dir.join("class"),
            format!("0x{:02x}{:02x}{:02x}\n", cfg[0x0b], cfg[0x0a], cfg[0x09]),
        )?;
        write(&dir.join("modalias"), format!("{}\n", modalias(cfg)))?;
        write(&dir.join("numa_node"), format!("{}\n", dev.numa_node))?;
        write(
            &dir.join("driver_override"),
            format!("{}\n", dev.driver_override.as_deref().unwrap_or("(null)")),
        )?;
        write(&dir.join("resource"), self.resource_file(dev))?;
        write(&dir.join("remove"), "")?;
        write(&dir.join("rescan"), "")?;
        if let Some(methods) = &dev.reset_method {
            write(&dir.join("reset_method"), format!("{methods}\n"))?;
            write(&dir.join("reset"), "")?;
        }
        if let Some(facts) = pcipool_pcie::decode(cfg)
            .ok()
            .and_then(|f| f.pci_express().cloned())
        {
            let speed = |s: pcipool_pcie::LinkSpeed| match s.field() {
                1 => "2.5 GT/s PCIe",
                2 => "5.0 GT/s PCIe",
                3 => "8.0 GT/s PCIe",
                4 => "16.0 GT/s PCIe",
                5 => "32.0 GT/s PCIe",
                6 => "64.0 GT/s PCIe",
                _ => "Unknown",
            };
            write(
                &dir.join("current_link_speed"),
                format!("{}\n", speed(facts.link.speed)),
            )?;
            write(
                &dir.join("current_link_width"),
                format!("{}\n", facts.link.width),
            )?;
            write(
                &dir.join("max_link_speed"),
                format!("{}\n", speed(facts.link.max_speed)),
            )?;
            write(
                &dir.join("max_link_width"),
                format!("{}\n", facts.link.max_width),
            )?;
        }
        let bus_link = sys.join("bus/pci/devices").join(dev.bdf.to_string());
        symlink(&bus_link, &dir)?;
        if let Some(driver) = &dev.driver {
            let drv = sys.join("bus/pci/drivers").join(driver);
            write(&drv.join("bind"), "")?;
            write(&drv.join("unbind"), "")?;
            write(&drv.join("new_id"), "")?;
            symlink(&dir.join("driver"), &drv)?;
            symlink(&drv.join(dev.bdf.to_string()), &dir)?;
        }
        if let Some(group) = dev.iommu_group {
            let g = sys.join("kernel/iommu_groups").join(group.to_string());
            write(&g.join("type"), "DMA\n")?;
            symlink(&g.join("devices").join(dev.bdf.to_string()), &dir)?;
            symlink(&dir.join("iommu_group"), &g)?;
        }
        if let Some((total, num)) = dev.sriov {
            write(&dir.join("sriov_totalvfs"), format!("{total}\n"))?;
            write(&dir.join("sriov_numvfs"), format!("{num}\n"))?;
            write(&dir.join("sriov_drivers_autoprobe"), "1\n")?;
        }
        if let Some(pf) = dev.physfn {
            symlink(&dir.join("physfn"), &self.device_dir(sys, pf, 0))?;
        }
        for (name, majmin) in &dev.block_devices {
            let bdir = dir.join("block").join(name);
            write(&bdir.join("dev"), format!("{majmin}\n"))?;
            symlink(&sys.join("class/block").join(name), &bdir)?;
            symlink(&sys.join("dev/block").join(majmin), &bdir)?;
        }
        for name in &dev.net_interfaces {
            let ndir = dir.join("net").join(name);
            write(&ndir.join("operstate"), "up\n")?;
            symlink(&sys.join("class/net").join(name), &ndir)?;
        }
        Ok(())
    }

    fn resource_file(&self, dev: &FakeDevice) -> String {
        let facts = pcipool_pcie::decode_with_sizes(&dev.config.bytes, &dev.config.sizes).ok();
        let mut lines = vec![(0u64, 0u64, 0u64); 13];
        for bar in facts.iter().flat_map(|f| f.bars.iter()) {
            if let (Some(size), Some(slot)) = (bar.size, lines.get_mut(usize::from(bar.index))) {
                let flags = match bar.kind {
                    pcipool_pcie::BarKind::Io => 0x101,
                    _ => 0x200 | if bar.prefetchable { 0x2000 } else { 0 },
                };
                *slot = (bar.address, bar.address + size - 1, flags);
            }
        }
        if let (Some(rom), Some(size)) = (
            facts.as_ref().and_then(|f| f.expansion_rom.clone()),
            dev.config.sizes.rom,
        ) {
            lines[6] = (rom.address, rom.address + size - 1, 0x4600);
        }
        let mut out = String::new();
        for (start, end, flags) in lines {
            let _ = writeln!(out, "0x{start:016x} 0x{end:016x} 0x{flags:016x}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_climbs_to_common_ancestor() {
        let rel = relative_path(
            Path::new("/s/bus/pci/devices"),
            Path::new("/s/devices/pci0000:00/x"),
        );
        assert_eq!(rel, PathBuf::from("../../../devices/pci0000:00/x"));
    }
}
