//! [`LinuxControl`]: the device-control primitives on a Linux host, through its sysfs root.
//!
//! Binding follows libvirt's and driverctl's use of `driver_override`: write the driver's name to the
//! function's `driver_override`, unbind the current driver, write the address to
//! `bus/pci/drivers_probe`, and check the `driver` link. A function held for the pool keeps the
//! override `pcipool` (no driver has that name, so nothing binds it behind our back); giving it back
//! clears the override. Every write goes through the [`Writer`] (scope, deadline, record), so a dry
//! run lists exactly what a live run writes: the plan depends only on what was read before the first
//! write, never on a write's effect.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pcipool_backend::{DeviceControl, DeviceError, DeviceHealth};
use pcipool_fabric::Fdid;
use pcipool_pcie::{Bdf, ResetMethod};

use crate::quiesce;
use crate::sysfs::{HostPaths, SysfsError, link_name, list_dir, read_opt};
use crate::write::{Mode, Write, WriteError, Writer};

/// The `driver_override` that holds a function for the pool: no driver is called this.
pub const HELD_OVERRIDE: &str = "pcipool";

/// Config-space bytes saved around a reset and compared after it: the type 0 header's BARs.
const BARS: std::ops::Range<u16> = 0x10..0x28;

/// The Linux host's device control.
#[derive(Debug)]
pub struct LinuxControl {
    paths: HostPaths,
    writer: Writer,
    /// Functions present when this control started; a borrowed function is one that appeared since.
    known: BTreeSet<Bdf>,
    /// Borrowed functions the fabric attached here, and whose they are.
    borrowed: BTreeMap<Bdf, Fdid>,
}

fn sysfs_err(bdf: Bdf, e: &SysfsError) -> DeviceError {
    match e {
        SysfsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            DeviceError::NoDevice(bdf)
        }
        other => DeviceError::BadReply(other.to_string()),
    }
}

fn write_err(bdf: Bdf, attribute: &str, e: WriteError) -> DeviceError {
    match e {
        WriteError::Timeout { after_ms, .. } => DeviceError::Timeout {
            bdf,
            step: format!("writing {attribute}"),
            after_ms,
        },
        WriteError::NotAllowed { why, .. } => DeviceError::NotAllowed { bdf, why },
        WriteError::Kernel { value, source, .. } => DeviceError::Refused {
            bdf,
            attribute: attribute.to_owned(),
            value,
            reason: source.to_string(),
        },
    }
}

impl LinuxControl {
    /// Control of the host under `paths`, writing through `writer`.
    ///
    /// # Errors
    /// The PCI device list cannot be read.
    pub fn new(paths: HostPaths, writer: Writer) -> Result<Self, SysfsError> {
        let known = Self::present(&paths)?;
        Ok(Self {
            paths,
            writer,
            known,
            borrowed: BTreeMap::new(),
        })
    }

    fn present(paths: &HostPaths) -> Result<BTreeSet<Bdf>, SysfsError> {
        Ok(list_dir(&paths.pci_devices())?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    /// The roots.
    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }

    /// The writer (its log, its scope).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The writer, to adopt functions into its scope.
    pub fn writer_mut(&mut self) -> &mut Writer {
        &mut self.writer
    }

    fn dir(&self, bdf: Bdf) -> PathBuf {
        self.paths.pci_devices().join(bdf.to_string())
    }

    fn attr(&self, bdf: Bdf, name: &str) -> PathBuf {
        self.dir(bdf).join(name)
    }

    fn exists(&self, bdf: Bdf) -> Result<(), DeviceError> {
        if self.dir(bdf).exists() {
            Ok(())
        } else {
            Err(DeviceError::NoDevice(bdf))
        }
    }

    fn put(&self, bdf: Bdf, attribute: &str, value: &str) -> Result<(), DeviceError> {
        self.writer
            .write(Write::text(self.attr(bdf, attribute), value))
            .map_err(|e| write_err(bdf, attribute, e))
    }

    fn probe(&self, bdf: Bdf) -> Result<(), DeviceError> {
        let path = self.paths.sys.join("bus/pci/drivers_probe");
        self.writer
            .write(Write::text(path, &bdf.to_string()))
            .map_err(|e| write_err(bdf, "drivers_probe", e))
    }

    /// The current `driver_override` (None when unset, shown by the kernel as `(null)`).
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`] and unreadable files.
    pub fn driver_override(&self, bdf: Bdf) -> Result<Option<String>, DeviceError> {
        let text = read_opt(&self.attr(bdf, "driver_override")).map_err(|e| sysfs_err(bdf, &e))?;
        Ok(text.filter(|t| !t.is_empty() && t != "(null)"))
    }

    /// What holds the function now (empty when it may be taken).
    ///
    /// # Errors
    /// [`DeviceError::NoDevice`] and unreadable tables.
    pub fn holders(&self, bdf: Bdf) -> Result<Vec<String>, DeviceError> {
        self.exists(bdf)?;
        quiesce::holders(&self.paths, bdf).map_err(|e| sysfs_err(bdf, &e))
    }

    /// Waits (up to the step's deadline) for the function to be in the PCI tree: a device a fabric has
    /// just plugged back into its lender takes the kernel a moment to enumerate.
    fn await_present(&self, bdf: Bdf) -> Result<(), DeviceError> {
        let started = Instant::now();
        let until = started + self.writer.deadline();
        while !self.dir(bdf).exists() {
            if self.writer.mode() == Mode::DryRun || Instant::now() >= until {
                return Err(DeviceError::NoDevice(bdf));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.writer.add_waited(started);
        Ok(())
    }

    /// Waits (up to the write deadline) for the `driver` link to name `want`; a live run only.
    fn await_driver(&self, bdf: Bdf, want: Option<&str>) -> Result<(), DeviceError> {
        if self.writer.mode() == Mode::DryRun {
            return Ok(());
        }
        let started = Instant::now();
        let until = started + self.writer.deadline();
        loop {
            let now = self.driver(bdf)?;
            if now.as_deref() == want {
                self.writer.add_waited(started);
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(match want {
                    Some(driver) => DeviceError::NoMatchingDriver {
                        bdf,
                        driver: driver.to_owned(),
                    },
                    None => DeviceError::Timeout {
                        bdf,
                        step: "unbind".into(),
                        after_ms: u64::try_from(self.writer.deadline().as_millis())
                            .unwrap_or(u64::MAX),
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Holds the function for the pool: the override `pcipool`, then the driver unbound. Refused
    /// while anything holds it unless `force` (the caller audits a forced hold).
    ///
    /// # Errors
    /// [`DeviceError::Held`] with what holds it; write errors.
    pub fn hold(&mut self, bdf: Bdf, force: bool) -> Result<(), DeviceError> {
        self.await_present(bdf)?;
        let holders = self.holders(bdf)?;
        if !holders.is_empty() && !force {
            return Err(DeviceError::Held { bdf, holders });
        }
        let bound = self.driver(bdf)?;
        if self.driver_override(bdf)?.as_deref() != Some(HELD_OVERRIDE) {
            self.put(bdf, "driver_override", HELD_OVERRIDE)?;
        }
        if bound.is_some() {
            self.put(bdf, "driver/unbind", &bdf.to_string())?;
            self.await_driver(bdf, None)?;
        }
        Ok(())
    }

    /// Binds `driver` (or, with `None`, whatever driver the kernel matches natively) and clears the
    /// override unless `keep_override` (VFIO keeps it, so the function stays with vfio-pci).
    /// Returns the driver bound.
    ///
    /// # Errors
    /// [`DeviceError::Held`] when the function must be unbound from another driver and something
    /// holds it; [`DeviceError::NoMatchingDriver`]; write errors.
    pub fn give(
        &mut self,
        bdf: Bdf,
        driver: Option<&str>,
        keep_override: bool,
    ) -> Result<Option<String>, DeviceError> {
        self.exists(bdf)?;
        if let Some(d) = driver
            && !self.paths.sys.join("bus/pci/drivers").join(d).exists()
        {
            return Err(DeviceError::NoMatchingDriver {
                bdf,
                driver: format!("{d} (not loaded: no bus/pci/drivers/{d})"),
            });
        }
        let bound = self.driver(bdf)?;
        if bound.is_some() && bound.as_deref() == driver {
            if !keep_override && self.driver_override(bdf)?.is_some() {
                self.put(bdf, "driver_override", "\n")?;
            }
            return Ok(bound);
        }
        if bound.is_some() {
            let holders = self.holders(bdf)?;
            if !holders.is_empty() {
                return Err(DeviceError::Held { bdf, holders });
            }
        }
        let wanted_override = driver.map_or("\n", |d| d);
        self.put(bdf, "driver_override", wanted_override)?;
        if bound.is_some() {
            self.put(bdf, "driver/unbind", &bdf.to_string())?;
            self.await_driver(bdf, None)?;
        }
        self.probe(bdf)?;
        if let Some(d) = driver {
            self.await_driver(bdf, Some(d))?;
            if !keep_override {
                self.put(bdf, "driver_override", "\n")?;
            }
        } else if self.writer.mode() == Mode::Live {
            // A native driver binds in the probe's write; a device no driver matches stays unbound.
            return self.driver(bdf);
        }
        Ok(driver.map(str::to_owned))
    }

    /// The reset methods the kernel offers for the function (`reset_method`), or `None` on a kernel
    /// older than 5.15 that does not say.
    ///
    /// # Errors
    /// Unreadable file.
    pub fn reset_methods(&self, bdf: Bdf) -> Result<Option<Vec<String>>, DeviceError> {
        Ok(read_opt(&self.attr(bdf, "reset_method"))
            .map_err(|e| sysfs_err(bdf, &e))?
            .map(|t| t.split_whitespace().map(str::to_owned).collect()))
    }

    fn config_bytes(&self, bdf: Bdf, range: std::ops::Range<u16>) -> Result<Vec<u8>, DeviceError> {
        let mut buf = vec![0u8; usize::from(range.end - range.start)];
        self.read_config(bdf, range.start, &mut buf)?;
        Ok(buf)
    }

    /// Rescans the whole PCI bus (`bus/pci/rescan`) or below one bridge (`<bridge>/rescan`).
    ///
    /// # Errors
    /// Write errors.
    pub fn rescan(&self, bridge: Option<Bdf>) -> Result<(), DeviceError> {
        let path = match bridge {
            Some(b) => self.attr(b, "rescan"),
            None => self.paths.sys.join("bus/pci/rescan"),
        };
        self.writer
            .write(Write::text(path, "1"))
            .map_err(|e| match e {
                WriteError::Timeout { after_ms, .. } => DeviceError::Unreachable(format!(
                    "a rescan did not finish within {after_ms} ms"
                )),
                other => DeviceError::BadReply(other.to_string()),
            })
    }
}

impl DeviceControl for LinuxControl {
    fn read_config(&self, bdf: Bdf, offset: u16, buf: &mut [u8]) -> Result<(), DeviceError> {
        use std::os::unix::fs::FileExt;
        let path = self.attr(bdf, "config");
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DeviceError::NoDevice(bdf),
            _ => DeviceError::BadReply(format!("{}: {e}", path.display())),
        })?;
        let got = file
            .read_at(buf, u64::from(offset))
            .map_err(|e| DeviceError::BadReply(format!("{}: {e}", path.display())))?;
        if got == buf.len() {
            Ok(())
        } else {
            Err(DeviceError::ConfigRange {
                bdf,
                offset,
                len: buf.len(),
            })
        }
    }

    fn write_config(&mut self, bdf: Bdf, offset: u16, data: &[u8]) -> Result<(), DeviceError> {
        self.exists(bdf)?;
        self.writer
            .write(Write::at(self.attr(bdf, "config"), u64::from(offset), data))
            .map_err(|e| write_err(bdf, "config", e))
    }

    fn driver(&self, bdf: Bdf) -> Result<Option<String>, DeviceError> {
        self.exists(bdf)?;
        link_name(&self.attr(bdf, "driver")).map_err(|e| sysfs_err(bdf, &e))
    }

    fn users(&self, bdf: Bdf) -> Result<u32, DeviceError> {
        Ok(u32::try_from(self.holders(bdf)?.len()).unwrap_or(u32::MAX))
    }

    fn unbind(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        self.hold(bdf, false)
    }

    fn bind(&mut self, bdf: Bdf, driver: &str) -> Result<(), DeviceError> {
        self.give(bdf, Some(driver), false).map(|_| ())
    }

    /// Refused while a driver is bound (the device is someone's); saves the BARs, selects the
    /// method through `reset_method` (then puts the kernel's list back), writes `reset`, and puts
    /// back BARs the reset cleared.
    fn reset(&mut self, bdf: Bdf, method: ResetMethod) -> Result<(), DeviceError> {
        if let Some(driver) = self.driver(bdf)? {
            return Err(DeviceError::Busy {
                bdf,
                driver,
                users: 1,
            });
        }
        let name = method.sysfs_name();
        let methods = self.reset_methods(bdf)?;
        match &methods {
            Some(list) if !list.iter().any(|m| m == name) => {
                return Err(DeviceError::ResetUnsupported { bdf, method });
            }
            None if !self.attr(bdf, "reset").exists() => {
                return Err(DeviceError::ResetUnsupported { bdf, method });
            }
            _ => {}
        }
        if method == ResetMethod::Bus
            && let Some(first) = self.busy_bus_siblings(bdf)?.first()
        {
            return Err(DeviceError::Held {
                bdf,
                holders: vec![format!("sibling {first} on the same bus is in use")],
            });
        }
        let saved = self.config_bytes(bdf, BARS)?;
        if let Some(list) = &methods
            && list.len() > 1
        {
            self.put(bdf, "reset_method", name)?;
        }
        let reset = self.put(bdf, "reset", "1");
        if let Some(list) = &methods
            && list.len() > 1
        {
            self.put(bdf, "reset_method", &list.join(" "))?;
        }
        reset?;
        if self.writer.mode() == Mode::DryRun {
            return Ok(());
        }
        let mut ids = [0u8; 2];
        self.read_config(bdf, 0, &mut ids)?;
        if ids == [0xff, 0xff] {
            return Err(DeviceError::ResetFailed { bdf, method });
        }
        let after = self.config_bytes(bdf, BARS)?;
        if after != saved {
            tracing::info!(%bdf, "the reset cleared BARs; writing the saved ones back");
            self.write_config(bdf, BARS.start, &saved)?;
        }
        Ok(())
    }

    /// Other functions on the same bus with a driver bound or a holder.
    fn busy_bus_siblings(&self, bdf: Bdf) -> Result<Vec<Bdf>, DeviceError> {
        self.exists(bdf)?;
        let mut busy = Vec::new();
        for other in Self::present(&self.paths).map_err(|e| sysfs_err(bdf, &e))? {
            if other == bdf || other.domain() != bdf.domain() || other.bus() != bdf.bus() {
                continue;
            }
            if self.driver(other)?.is_some() || !self.holders(other)?.is_empty() {
                busy.push(other);
            }
        }
        Ok(busy)
    }

    /// Bus mastering off (a driver's remove turns it off; a borrower that left it on left DMA live)
    /// and the function answering.
    fn at_reset_baseline(&self, bdf: Bdf) -> Result<bool, DeviceError> {
        let head = self.config_bytes(bdf, 0..6)?;
        Ok(head[..2] != [0xff, 0xff] && head[4] & 0x04 == 0)
    }

    fn vf_count(&self, pf: Bdf) -> Result<u16, DeviceError> {
        self.exists(pf)?;
        match read_opt(&self.attr(pf, "sriov_numvfs")).map_err(|e| sysfs_err(pf, &e))? {
            None => Ok(0),
            Some(t) => t
                .parse()
                .map_err(|_| DeviceError::BadReply(format!("sriov_numvfs reads {t:?}"))),
        }
    }

    /// Writes 0 first when another count is enabled (the kernel refuses a change between non-zero
    /// counts), then the count.
    fn enable_vfs(&mut self, pf: Bdf, count: u16) -> Result<(), DeviceError> {
        self.exists(pf)?;
        let total = read_opt(&self.attr(pf, "sriov_totalvfs"))
            .map_err(|e| sysfs_err(pf, &e))?
            .and_then(|t| t.parse::<u16>().ok());
        let Some(total) = total else {
            return Err(DeviceError::Unsupported {
                bdf: pf,
                what: "SR-IOV (no sriov_totalvfs)".into(),
            });
        };
        if count > total {
            return Err(DeviceError::Unsupported {
                bdf: pf,
                what: format!("{count} VFs (sriov_totalvfs is {total})"),
            });
        }
        let now = self.vf_count(pf)?;
        if now == count {
            return Ok(());
        }
        if now != 0 {
            self.put(pf, "sriov_numvfs", "0")?;
        }
        if count != 0 {
            self.put(pf, "sriov_numvfs", &count.to_string())?;
        }
        Ok(())
    }

    fn borrowed(&self) -> Result<Vec<(Bdf, Fdid)>, DeviceError> {
        let here = Self::present(&self.paths).map_err(|e| DeviceError::BadReply(e.to_string()))?;
        Ok(self
            .borrowed
            .iter()
            .filter(|(b, _)| here.contains(b))
            .map(|(b, f)| (*b, *f))
            .collect())
    }

    /// On a fabric that attaches whole devices (a hypervisor's hot-plug, a switch), the device is
    /// already in this host's PCI tree or appears with a rescan: the new function is the one that was
    /// not here when this control started and is not another lease's.
    fn hot_add(&mut self, remote: Fdid) -> Result<Bdf, DeviceError> {
        if let Some((at, _)) = self.borrowed.iter().find(|(_, f)| **f == remote) {
            return Ok(*at);
        }
        let fresh = |me: &Self| -> Result<Vec<Bdf>, DeviceError> {
            let here =
                Self::present(&me.paths).map_err(|e| DeviceError::BadReply(e.to_string()))?;
            Ok(here
                .into_iter()
                .filter(|b| !me.known.contains(b) && !me.borrowed.contains_key(b))
                .collect())
        };
        // A hot-plugged device takes the kernel a moment to enumerate: wait for it within the step's
        // deadline, and rescan once (where this agent may) if it has not shown up by half of it.
        let started = Instant::now();
        let until = started + self.writer.deadline();
        let rescan_at = started + self.writer.deadline() / 2;
        let mut rescanned = self.writer.mode() == Mode::DryRun;
        let new = loop {
            let new = fresh(self)?;
            if !new.is_empty() || Instant::now() >= until {
                break new;
            }
            if !rescanned && Instant::now() >= rescan_at {
                rescanned = true;
                if let Err(e) = self.rescan(None) {
                    tracing::info!(error = %e, "no rescan for a hot-added device");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.writer.add_waited(started);
        match new.as_slice() {
            [] => Err(DeviceError::Unreachable(format!(
                "{remote} did not appear in this host's PCI tree"
            ))),
            [first, ..] => {
                // Functions of one attached device share its bus and device number; the lowest is it.
                self.borrowed.insert(*first, remote);
                self.writer.scope_mut().adopt(*first);
                Ok(*first)
            }
        }
    }

    fn hot_remove(&mut self, bdf: Bdf) -> Result<(), DeviceError> {
        if !self.dir(bdf).exists() {
            self.borrowed.remove(&bdf);
            return Ok(());
        }
        self.put(bdf, "remove", "1")?;
        self.borrowed.remove(&bdf);
        Ok(())
    }

    fn set_deadline(&mut self, until: Instant) {
        self.writer.set_step_deadline(until);
    }

    fn waited(&self) -> Duration {
        self.writer.waited()
    }

    /// Gone when config reads all ones; hung when AER counted a fatal error.
    fn health(&self, bdf: Bdf) -> Result<DeviceHealth, DeviceError> {
        let mut ids = [0u8; 2];
        self.read_config(bdf, 0, &mut ids)?;
        if ids == [0xff, 0xff] {
            return Ok(DeviceHealth::Gone);
        }
        let fatal = read_opt(&self.attr(bdf, "aer_dev_fatal"))
            .map_err(|e| sysfs_err(bdf, &e))?
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("TOTAL_ERR_FATAL "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Ok(if fatal > 0 {
            DeviceHealth::Hung
        } else {
            DeviceHealth::Ok
        })
    }
}
