//! The validation suites against a running VM lab (`pcipool lab up`): the controller through its HTTP
//! API (as the lab's admin, and as its tenant `tenant` for what another tenant may not do), the
//! hardware through the lab's control socket: QEMU's own view of where each drive is (which guest's
//! QEMU holds its image, which guests' PCI trees have it, the free hot-plug slots), and the guests'
//! kernels through their shells (sysfs: which kernel presents the drive, its driver, its config space,
//! the kernel's reset methods). Faults are real: a guest's QEMU SIGKILLed and booted again, its
//! network link cut (QMP `set_link`), its agent SIGKILLed and started again, the controller SIGKILLed
//! in the middle of a lend and started again on its store.
//!
//! What the lab cannot do: make QEMU's NVMe device hang or fail a reset (those recovery scenarios are
//! reported as not run), or log bus resets (no drive of the lab shares a bus, so none is needed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_lab::{FabricView, LabClient};
use pcipool_pcie::{Bdf, ResetMethod};
use pcipool_qualify::AccessModel;

use crate::control_plane::ControlPlane;
use crate::target::{Attachment, Audited, Fault, Free, Held, PoolDevice, Seen, Target};

/// How long a guest command may take.
const GUEST: Duration = Duration::from_secs(60);
/// How long `advance` waits for what is due to be done.
const DUE_WITHIN: Duration = Duration::from_secs(120);

/// A running VM lab.
pub struct LabTarget {
    lab: LabClient,
    pool: ControlPlane,
    /// Each lendable drive's NVMe serial: how a guest's kernel is asked whether it has the drive.
    serials: BTreeMap<Fdid, String>,
    /// Each drive's baseline header fields on its lender before the run.
    headers: BTreeMap<Fdid, String>,
    /// Each drive's driver on its lender before the run.
    drivers: BTreeMap<Fdid, String>,
    /// Every lease seen in the run, with its device and borrower, to ask the fabric about it later.
    leases: Mutex<BTreeMap<LeaseId, (Fdid, NodeId)>>,
    /// Hosts whose agent cannot answer now because of a fault injected here (QEMU killed, link cut,
    /// agent killed): the controller is due to count them lost, and the others up.
    silenced: Mutex<BTreeSet<NodeId>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sysfs(bdf: Bdf) -> String {
    format!("/sys/bus/pci/devices/{bdf}")
}

/// The config header as hex.
fn header_command(bdf: Bdf) -> String {
    format!("od -An -v -tx1 -N64 {}/config | tr -d ' \\n'", sysfs(bdf))
}

/// What of a config header a return must bring back: the device's identity (ids, revision, class,
/// header type, subsystem, capability pointer, interrupt pin), its BARs, and the command register's
/// memory and bus-master enables (its native driver bound). Left out: what firmware sets at boot and a
/// hot-plug does not (I/O enable, SERR enable, the legacy interrupt line), cache line size and latency
/// timer, and the status register, which records events (its error bits are checked on their own).
/// None: not a 64-byte header in hex.
fn baseline_fields(hex: &str) -> Option<String> {
    let bytes: Vec<u8> = (0..64)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let kept = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    Some(format!(
        "ids {} command {:02x} class {} type {} bars {} subsystem {} caps {} pin {}",
        kept(0..4),
        bytes[4] & 0x06,
        kept(8..12),
        kept(14..15),
        kept(16..40),
        kept(44..48),
        kept(52..53),
        kept(61..62)
    ))
}

/// Error bits of the status register's upper byte: parity, system error, master and target aborts.
fn status_errors(hex: &str) -> Option<u8> {
    u8::from_str_radix(hex.get(14..16)?, 16)
        .ok()
        .map(|b| b & 0xf9)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl LabTarget {
    /// Connects to the lab running in `dir`: its status gives the controller and the tokens; every
    /// lendable drive's header and driver are read on its lender.
    ///
    /// # Errors
    /// No lab runs there; the controller or a guest does not answer.
    pub fn connect(dir: &Path) -> Result<Self, String> {
        let lab = LabClient::new(dir);
        let status = lab.status().map_err(|e| e.to_string())?;
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let admin = read(&status.admin_token_file)?;
        let tenant = read(&status.tenant_token_file)?;
        let pool = ControlPlane::connect(&status.url, &admin, Some(&tenant))?;
        let serials: BTreeMap<Fdid, String> = status
            .hosts
            .iter()
            .flat_map(|h| &h.drives)
            .filter_map(|d| Some((d.fdid?, d.serial.clone())))
            .collect();
        let mut target = Self {
            lab,
            pool,
            serials,
            headers: BTreeMap::new(),
            drivers: BTreeMap::new(),
            leases: Mutex::default(),
            silenced: Mutex::default(),
        };
        for fdid in target.serials.keys().copied().collect::<Vec<_>>() {
            let header = target.sh(fdid.node, &header_command(fdid.bdf))?;
            let fields = baseline_fields(header.trim())
                .ok_or_else(|| format!("{fdid}: not a config header: {header:?}"))?;
            target.headers.insert(fdid, fields);
            if let Some(Some(driver)) = target.local_driver(fdid) {
                target.drivers.insert(fdid, driver);
            }
        }
        Ok(target)
    }

    /// Runs `command` in `node`'s shell; a non-zero exit is an error with its output.
    fn sh(&self, node: NodeId, command: &str) -> Result<String, String> {
        match self.lab.exec(node, command, GUEST) {
            Ok((0, output)) => Ok(output),
            Ok((status, output)) => Err(format!(
                "{node}: `{command}` exited {status}: {}",
                output.trim()
            )),
            Err(e) => Err(format!("{node}: {e}")),
        }
    }

    /// The driver bound to `bdf` on `node` (outer None: the guest cannot be asked).
    fn driver(&self, node: NodeId, bdf: Bdf) -> Option<Option<String>> {
        let command = format!("readlink {}/driver", sysfs(bdf));
        match self.lab.exec(node, &command, GUEST) {
            Ok((0, link)) => Some(link.trim().rsplit('/').next().map(str::to_owned)),
            Ok(_) => Some(None),
            Err(_) => None,
        }
    }

    fn bind(&self, node: NodeId, bdf: Bdf, driver: &str) -> Result<(), String> {
        self.sh(
            node,
            &format!("echo {bdf} > /sys/bus/pci/drivers/{driver}/bind"),
        )
        .map(|_| ())
    }

    fn unbind(&self, node: NodeId, bdf: Bdf) -> Result<(), String> {
        self.sh(node, &format!("echo {bdf} > {}/driver/unbind", sysfs(bdf)))
            .map(|_| ())
    }

    fn fabric(&self) -> Seen<FabricView> {
        self.lab.fabric().map_err(|e| e.to_string())
    }

    fn remember(&self, lease: LeaseId, fdid: Fdid, borrower: NodeId) {
        lock(&self.leases).insert(lease, (fdid, borrower));
    }

    /// Nothing the controller has to act on is left: every host it counts up is one whose agent can
    /// answer and the other way round, no device lending or returning, no lease past its expiry, no
    /// device lost while its lender's agent is up again.
    fn nothing_due(&self) -> bool {
        let (Ok(devices), Ok(leases), Ok(hosts)) = (
            self.pool.operator.devices(),
            self.pool.operator.leases(),
            self.pool.operator.hosts(),
        ) else {
            return false;
        };
        let silenced = lock(&self.silenced).clone();
        if hosts
            .iter()
            .any(|h| (h.agent == "up") == silenced.contains(&h.node))
        {
            return false;
        }
        let up: BTreeSet<NodeId> = hosts
            .into_iter()
            .filter(|h| h.agent == "up")
            .map(|h| h.node)
            .collect();
        let now = now_ms();
        !devices.iter().any(|d| {
            matches!(d.state.as_str(), "lending" | "returning")
                || (d.state == "lost" && up.contains(&d.fdid.node))
        }) && !leases.iter().any(|l| l.expires_at <= now)
    }
}

impl Target for LabTarget {
    fn devices(&self) -> Vec<PoolDevice> {
        self.pool.devices()
    }

    fn borrowers(&self, fdid: Fdid) -> Vec<NodeId> {
        self.pool.borrowers(fdid)
    }

    fn borrow_for(
        &self,
        _tenant: &str,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
        duration: Option<u64>,
    ) -> Result<Held, String> {
        let held = self.pool.borrow(fdid, model, borrower, duration)?;
        self.remember(held.lease, fdid, borrower);
        Ok(held)
    }

    fn release(&self, tenant: Option<&str>, lease: LeaseId) -> Result<(), String> {
        self.pool.release(tenant, lease)
    }

    fn state(&self, fdid: Fdid) -> Option<String> {
        self.pool.state(fdid)
    }

    /// The header's baseline fields on the lender are those it had before the run, and the status
    /// register records no error.
    fn at_baseline(&self, fdid: Fdid) -> Option<bool> {
        let before = self.headers.get(&fdid)?;
        let now = self.sh(fdid.node, &header_command(fdid.bdf)).ok()?;
        let now = now.trim();
        Some(baseline_fields(now).as_ref() == Some(before) && status_errors(now) == Some(0))
    }

    fn local_driver(&self, fdid: Fdid) -> Option<Option<String>> {
        self.driver(fdid.node, fdid.bdf)
    }

    /// A lease is mapped while QEMU has its drive in its borrower's PCI tree and in no other (a
    /// drive in two kernels is no lease's mapping: it fails "mapped while held").
    fn mapped_leases(&self) -> Seen<BTreeSet<u64>> {
        let view = self.fabric()?;
        let leases = lock(&self.leases).clone();
        Ok(leases
            .into_iter()
            .filter(|(_, (fdid, borrower))| {
                view.drives
                    .iter()
                    .any(|d| d.fdid == *fdid && d.in_pci_tree == [*borrower])
            })
            .map(|(lease, _)| lease.0)
            .collect())
    }

    /// Each running guest's free hot-plug slots.
    fn free_resources(&self) -> Seen<BTreeMap<String, Free>> {
        Ok(self
            .fabric()?
            .free_slots
            .into_iter()
            .filter_map(|(node, free)| {
                let free = u64::try_from(free?).ok()?;
                Some((node.to_string(), Free::from([("hot-plug slots", free)])))
            })
            .collect())
    }

    fn bar_address(&self, _lease: LeaseId) -> Option<(NodeId, u64)> {
        None
    }

    fn dma_window(&self, _lease: LeaseId) -> Option<(u64, u64)> {
        None
    }

    fn host_read(&self, _node: NodeId, _addr: u64) -> u32 {
        u32::MAX
    }

    fn device_dma(&self, _fdid: Fdid, _addr: u64) -> Option<NodeId> {
        None
    }

    fn faults_recorded(&self) -> Seen<usize> {
        Err("the lab's fabric moves whole devices: there is no refused access to record".into())
    }

    fn audit_after(&self, seq: u64) -> Seen<Vec<Audited>> {
        self.pool.audit_after(seq)
    }

    fn audit_head(&self) -> u64 {
        self.pool.audit_head()
    }

    fn drain(&self, fdid: Fdid) -> Result<(), String> {
        self.pool.act(fdid, pcipool_wire::DeviceAction::Drain)
    }

    fn undrain(&self, fdid: Fdid) -> Result<(), String> {
        self.pool.act(fdid, pcipool_wire::DeviceAction::Undrain)
    }

    fn reset_methods(&self, fdid: Fdid) -> Vec<ResetMethod> {
        self.sh(fdid.node, &format!("cat {}/reset_method", sysfs(fdid.bdf)))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|m| m.parse().ok())
            .collect()
    }

    /// The kernel's reset through sysfs (its driver told before and after), timed by the guest's
    /// clock (`/proc/uptime`, 10 ms steps); the kernel's choice of methods is restored after.
    fn reset(&self, fdid: Fdid, method: ResetMethod) -> Result<u64, String> {
        let script = format!(
            "cd {} || exit 1; echo {method} > reset_method || exit 1; \
             a=$(cut -d' ' -f1 /proc/uptime | tr -d .); echo 1 > reset; r=$?; \
             b=$(cut -d' ' -f1 /proc/uptime | tr -d .); echo default > reset_method; \
             [ $r -eq 0 ] || exit $r; echo $((b - a))",
            sysfs(fdid.bdf)
        );
        let centis = self.sh(fdid.node, &script)?;
        centis
            .trim()
            .parse::<u64>()
            .map(|c| c * 10_000)
            .map_err(|_| format!("{}: reset took {centis:?}", fdid.node))
    }

    fn ids_readable(&self, fdid: Fdid) -> bool {
        self.sh(
            fdid.node,
            &format!("od -An -tx2 -N2 {}/config", sysfs(fdid.bdf)),
        )
        .is_ok_and(|v| {
            let v = v.trim();
            !v.is_empty() && v != "ffff"
        })
    }

    /// BAR 0 holds the address the kernel gave it (the reset's state restore wrote it back).
    fn bar_restorable(&self, fdid: Fdid) -> Option<bool> {
        let at = sysfs(fdid.bdf);
        let out = self
            .sh(
                fdid.node,
                &format!(
                    "od -An -v -tx4 -j16 -N8 {at}/config; head -n1 {at}/resource | cut -d' ' -f1"
                ),
            )
            .ok()?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let [low, high, start] = words.as_slice() else {
            return Some(false);
        };
        let register =
            u64::from_str_radix(high, 16).ok()? << 32 | (u64::from_str_radix(low, 16).ok()? & !0xf);
        let start = u64::from_str_radix(start.trim_start_matches("0x"), 16).ok()?;
        Some(start != 0 && register == start)
    }

    fn siblings(&self, fdid: Fdid) -> Seen<Vec<Fdid>> {
        Ok(crate::target::siblings_among(self.serials.keys(), fdid))
    }

    fn event_mark(&self) -> Seen<usize> {
        Err("the lab's QEMU keeps no log of bus resets".into())
    }

    fn bus_resets_since(&self, _mark: usize) -> Seen<Vec<Fdid>> {
        Err("the lab's QEMU keeps no log of bus resets".into())
    }

    fn can_inject(&self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::DeviceHang(_) => Err("QEMU's emulated NVMe drive cannot be made to hang".into()),
            Fault::ResetFails(_) => {
                Err("QEMU's emulated NVMe drive cannot be made to fail a reset".into())
            }
            _ => Ok(()),
        }
    }

    fn inject(&self, fault: Fault) -> Result<(), String> {
        self.can_inject(fault)?;
        match fault {
            Fault::HostCrash(n) | Fault::LinkDown(n) | Fault::AgentKill(n) => {
                lock(&self.silenced).insert(n);
            }
            Fault::HostBack(n) | Fault::LinkUp(n) | Fault::AgentBack(n) => {
                lock(&self.silenced).remove(&n);
            }
            Fault::DeviceHang(_) | Fault::ResetFails(_) => {}
        }
        match fault {
            Fault::HostCrash(node) => self.lab.kill_host(node),
            Fault::HostBack(node) => self.lab.start_host(node),
            Fault::LinkDown(node) => self.lab.set_link(node, false),
            Fault::LinkUp(node) => self.lab.set_link(node, true),
            Fault::AgentKill(node) => self.lab.kill_agent(node),
            Fault::AgentBack(node) => self.lab.start_agent(node),
            Fault::DeviceHang(_) | Fault::ResetFails(_) => Ok(()),
        }
        .map_err(|e| e.to_string())
    }

    /// Real time: waits `ms`, then until the controller has done what is due (hosts silenced here
    /// counted lost and the others up, expired leases returned, lost devices whose lender is back
    /// returned, lends and returns finished), at most two minutes.
    fn advance(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
        let started = Instant::now();
        while started.elapsed() < DUE_WITHIN && !self.nothing_due() {
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts a lend, watches its journal, and SIGKILLs the controller once every step before `step`
    /// is done; then starts it again on its store and waits for the journal's outcome.
    fn kill_controller_during_lend(
        &self,
        fdid: Fdid,
        borrower: NodeId,
        step: pcipool_backend::Step,
    ) -> Result<(), String> {
        let granted = self
            .pool
            .ask(fdid, AccessModel::Lend, borrower, None, false)?;
        self.remember(granted.lease_id, fdid, borrower);
        let name = serde_json::to_value(step).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let seen = loop {
            let journal = self
                .pool
                .operator
                .workflow(granted.workflow)
                .map_err(|e| crate::control_plane::text(&e))?;
            let steps = journal["steps"].as_array().cloned().unwrap_or_default();
            let Some(at) = steps.iter().position(|s| s["step"] == name) else {
                return Err(format!("the lend's journal has no step {name}: {journal}"));
            };
            if steps[..at].iter().all(|s| s["status"]["status"] == "done") {
                break journal;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("the steps before {name} did not finish: {journal}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.lab.kill_controller().map_err(|e| e.to_string())?;
        tracing::info!(workflow = granted.workflow, journal = %seen, "controller killed mid-lend");
        self.lab.start_controller().map_err(|e| e.to_string())?;
        let done = self
            .pool
            .operator
            .workflow_wait(granted.workflow, 120)
            .map_err(|e| crate::control_plane::text(&e))?;
        if done["outcome"].is_null() {
            return Err(format!("the resumed lend has no outcome: {done}"));
        }
        Ok(())
    }

    fn clear_quarantine(&self, fdid: Fdid) -> Result<(), String> {
        self.pool
            .act(fdid, pcipool_wire::DeviceAction::ClearQuarantine)
    }

    fn leases_of(&self, fdid: Fdid) -> Seen<Vec<LeaseId>> {
        self.pool.leases_of(fdid)
    }

    fn audit_intact(&self) -> bool {
        self.pool.audit_intact()
    }

    fn native_driver(&self, fdid: Fdid) -> Option<String> {
        self.drivers.get(&fdid).cloned()
    }

    fn lender_unbind(&self, fdid: Fdid) -> Result<(), String> {
        self.unbind(fdid.node, fdid.bdf)
    }

    fn lender_bind(&self, fdid: Fdid, driver: &str) -> Result<(), String> {
        self.bind(fdid.node, fdid.bdf, driver)
    }

    fn borrower_unbind(&self, held: &Held) -> Result<(), String> {
        self.unbind(held.borrower, held.on_borrower()?)
    }

    fn borrower_bind(&self, held: &Held, driver: &str) -> Result<(), String> {
        self.bind(held.borrower, held.on_borrower()?, driver)
    }

    fn borrower_driver(&self, held: &Held) -> Option<Option<String>> {
        self.driver(held.borrower, held.on_borrower().ok()?)
    }

    /// A program on the borrower holds the drive's first namespace open (or is killed).
    fn set_borrower_users(&self, held: &Held, users: u32) {
        let Ok(bdf) = held.on_borrower() else {
            return;
        };
        let pid_file = format!("/tmp/pcipool-validate-{}.pid", held.lease.0);
        let command = if users > 0 {
            format!(
                "b=$(ls {}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$') && \
                 (sleep 100000 < /dev/$b > /dev/null 2>&1 & echo $! > {pid_file})",
                sysfs(bdf)
            )
        } else {
            format!("kill $(cat {pid_file}) && rm {pid_file} && sleep 0.2")
        };
        if let Err(e) = self.sh(held.borrower, &command) {
            tracing::warn!(error = %e, lease = held.lease.0, "the borrower's program");
        }
    }

    fn attachment(&self) -> Attachment {
        Attachment::WholeDevice
    }

    /// The guests whose kernel presents a drive with the device's serial (its NVMe driver bound; the
    /// kernel pads the serial with spaces to the field's 20 bytes).
    fn kernels_with(&self, fdid: Fdid) -> Seen<Vec<NodeId>> {
        let serial = self
            .serials
            .get(&fdid)
            .ok_or_else(|| format!("{fdid} is not a drive of the lab"))?;
        let status = self.lab.status().map_err(|e| e.to_string())?;
        let mut with = Vec::new();
        for host in status.hosts.iter().filter(|h| h.running) {
            let command = format!(
                "cat /sys/bus/pci/devices/*/nvme/nvme*/serial 2>/dev/null | grep -q '^{serial} *$'"
            );
            match self.lab.exec(host.node, &command, GUEST) {
                Ok((0, _)) => with.push(host.node),
                Ok((1, _)) => {}
                Ok((status, out)) => {
                    return Err(format!("{}: exit {status}: {}", host.node, out.trim()));
                }
                Err(e) => return Err(format!("{}: {e}", host.node)),
            }
        }
        Ok(with)
    }

    /// The guests whose PCI tree has the drive, as QEMU says.
    fn fabric_places(&self, fdid: Fdid) -> Seen<Vec<NodeId>> {
        self.fabric()?
            .drives
            .into_iter()
            .find(|d| d.fdid == fdid)
            .map(|d| d.in_pci_tree)
            .ok_or_else(|| format!("{fdid} is not a drive of the lab"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_settings_are_not_the_baseline_but_the_identity_and_enables_are() {
        // The same drive as booted (firmware enabled I/O and SERR, gave it IRQ 11) and after a
        // return (hot-plugged: the kernel's enables only).
        let booted = "361b1000070510000202080100000000\
                      0400c0fd000000000000000000000000\
                      000000000000000000000000f41a0011\
                      0000000040000000000000000b010000";
        let returned = "361b1000060410000202080100000000\
                        0400c0fd000000000000000000000000\
                        000000000000000000000000f41a0011\
                        00000000400000000000000000010000";
        assert_eq!(baseline_fields(booted), baseline_fields(returned));
        let unbound = returned.replacen("0604", "0004", 1);
        assert_ne!(baseline_fields(&unbound), baseline_fields(returned));
        let other_bar = returned.replacen("0400c0fd", "0400d0fd", 1);
        assert_ne!(baseline_fields(&other_bar), baseline_fields(returned));
        assert_eq!(baseline_fields("36"), None);
        assert_eq!(status_errors(returned), Some(0));
        assert_eq!(status_errors("00000000000010f0"), Some(0xf0));
    }
}
