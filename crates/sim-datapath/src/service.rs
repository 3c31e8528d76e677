//! The fabric's data-path service: what the lender side of a real NTB does when an application borrows a
//! device through SmartIO. It serves each device from shared memory (a runner thread per device) and, per
//! lease, grants and tears down what the application asked for:
//!
//! - a BAR window: a slot in the fabric's window table, opened with a fresh random key;
//! - DMA mappings: the application's own segment, or another host's exported segment (peer-to-peer),
//!   made visible to the device at a device-side address the service chooses;
//! - device memory: a region the service creates with a placement hint, mapped for the device's DMA and,
//!   near the device, reached by the application only through a window;
//! - interrupt routes: a vector of the device pointed at a counter cell in the application's memory.
//!
//! [`DataPath::unmap`] ends all of it at once: windows close (reads all ones, writes dropped, faults
//! counted), the device's DMA to the lease's memory is refused, vectors are dropped. The service trusts
//! its caller about leases; the runtime in front of it (`pcipool sim serve`) checks every request against
//! the controller and calls [`DataPath::reconcile`] with the leases the controller still holds.
//!
//! File names under the service's directory: `windows` (the table), `bar0.<device>`, `medium.<device>`,
//! `seg.<host>.<name>` (applications' segments and interrupt cells, made here for them),
//! `devmem.<lease>.<n>` (device memory).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pcipool_sim_nvme::Controller;
use pcipool_sim_shm::window::WindowTable;
use pcipool_sim_shm::{Region, ShmError};

use crate::{FileMedium, SharedNvme};

/// Window slots in the table (BAR windows and near-device memory windows of every lease).
pub const SLOTS: u32 = 256;
/// Windows one lease may hold at once.
pub const WINDOWS_PER_LEASE: usize = 16;
/// Teardowns kept for the event log.
const TORN_DOWN_KEPT: usize = 1_000;
/// Device-side addresses handed out per DMA mapping: one 4 GiB aperture each.
const APERTURE: u64 = 1 << 32;

/// Why the service refused.
#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    /// No device of that id is served.
    #[error("no device {0} on the data path")]
    NoDevice(String),
    /// A host, segment or cell name that is not `[A-Za-z0-9_-]{1,64}`.
    #[error("name {0:?} must be 1-64 of A-Z a-z 0-9 _ -")]
    BadName(String),
    /// Another host's segment that its owner has not exported.
    #[error("host {owner} has not exported segment {name}")]
    NotExported {
        /// Owner host.
        owner: String,
        /// Segment name.
        name: String,
    },
    /// The lease already maps a different device or belongs to another host.
    #[error("lease {lease} is for {fdid} on {host}")]
    LeaseMismatch {
        /// The lease.
        lease: u64,
        /// Its device.
        fdid: String,
        /// Its host.
        host: String,
    },
    /// The lease, segment or grant belongs to another application (another token).
    #[error("{0} belongs to another application")]
    NotOwner(String),
    /// No such segment was created through the data path.
    #[error("host {host} has no segment {name}")]
    NoSegment {
        /// Owner host.
        host: String,
        /// Segment name.
        name: String,
    },
    /// A lease asked for more than its share.
    #[error("lease {lease} already holds the most {what} one lease may ({max})")]
    TooMany {
        /// The lease.
        lease: u64,
        /// Of what.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// Every window slot is in use.
    #[error("all {SLOTS} window slots are in use")]
    NoSlots,
    /// A zero or oversized device-memory request.
    #[error("device memory of {0} bytes: must be 1 byte to 1 GiB")]
    BadSize(u64),
    /// Shared memory failed (a missing segment is reported here).
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// The backing file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where device memory should live.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// On the lender, next to the device: the device reaches it locally, the application through a
    /// window across the fabric.
    NearDevice,
    /// In the borrower's memory: the application reaches it directly, the device by DMA across the
    /// fabric.
    NearHost,
}

/// A window onto a region: what an application attaches to with
/// [`pcipool_sim_shm::window::Window::attach`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WindowGrant {
    /// The window table's file name.
    pub table: String,
    /// The slot.
    pub slot: u32,
    /// The key the window must present.
    pub key: u32,
    /// The region the window reaches.
    pub region: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Device memory the service made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeviceMemoryGrant {
    /// The region.
    pub region: String,
    /// Size in bytes.
    pub size: u64,
    /// Where the device reaches it.
    pub device_addr: u64,
    /// Where it lives.
    pub placement: Placement,
    /// Near the device: the only way the application reaches it. Near the host: none (the
    /// application maps `region` directly).
    pub window: Option<WindowGrant>,
}

/// One thing a lease was granted, to give back on its own.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Grant {
    /// A window slot.
    Window(u32),
    /// A DMA mapping at this device-side address.
    Dma(u64),
    /// An interrupt route.
    Vector(u16),
}

/// How a device runner waits when there is nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Poll without sleeping (benchmarks: a device never sleeps; it only yields the CPU now and then).
    Spin,
    /// Sleep this long after a run of empty polls (a simulator serving many devices on few cores).
    Sleep(Duration),
}

/// Empty polls before an idle runner sleeps.
const IDLE_POLLS: u32 = 2_000;

struct Device {
    nvme: Arc<Mutex<SharedNvme<FileMedium>>>,
    stop: Arc<AtomicBool>,
    runner: Option<std::thread::JoinHandle<()>>,
    bar: String,
    next_aperture: u64,
}

/// What one lease holds.
#[derive(Debug)]
struct Grants {
    /// When the lease first mapped something ([`DataPath::mark`] order).
    since: u64,
    fdid: String,
    host: String,
    /// Who mapped for the lease first (an opaque identity of the application's credentials); only it
    /// may give grants back.
    caller: String,
    slots: Vec<u32>,
    device_memory: Vec<String>,
}

/// A segment made through the data path.
#[derive(Debug)]
struct SegmentEntry {
    /// Who made it; only it may map it as its own, export it or delete it.
    owner: String,
    exported: bool,
}

/// The service.
pub struct DataPath {
    dir: PathBuf,
    table: WindowTable,
    slot_owner: Vec<Option<u64>>,
    devices: BTreeMap<String, Device>,
    leases: BTreeMap<u64, Grants>,
    segments: BTreeMap<(String, String), SegmentEntry>,
    /// Bumped whenever a lease first maps something.
    marks: u64,
    /// The latest leases torn down (up to 1,000), oldest first, with why (for the event log).
    pub torn_down: Vec<(u64, String)>,
    /// Teardowns not yet reported to the controller's audit chain (up to 1,000, oldest first).
    unreported: Vec<(u64, String)>,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath")
            .field("dir", &self.dir)
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .field("leases", &self.leases)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<(), DataPathError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DataPathError::BadName(name.to_owned()))
    }
}

/// A device id as a file-name component (`n1:0000:03:00.0` -> `n1_0000_03_00.0`).
pub fn device_file_part(fdid: &str) -> String {
    fdid.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file name of host `host`'s segment `name`.
fn segment_file(host: &str, name: &str) -> Result<String, DataPathError> {
    check_name(host)?;
    check_name(name)?;
    Ok(format!("seg.{host}.{name}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DataPath {
    /// A service keeping its files under `dir` (created if missing).
    ///
    /// # Errors
    /// The directory or the window table cannot be made.
    pub fn new(dir: &Path) -> Result<Self, DataPathError> {
        std::fs::create_dir_all(dir).map_err(|source| DataPathError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            table: WindowTable::create(dir, "windows", SLOTS)?,
            dir: dir.to_owned(),
            slot_owner: vec![None; SLOTS as usize],
            devices: BTreeMap::new(),
            leases: BTreeMap::new(),
            segments: BTreeMap::new(),
            marks: 0,
            torn_down: Vec::new(),
            unreported: Vec::new(),
        })
    }

    /// The directory applications open their windows and segments in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves an NVMe-like device `fdid` with `blocks` blocks of `block` bytes in a backing file, on a
    /// runner thread of its own. Returns the BAR region's file name (the lender's driver maps it
    /// directly).
    ///
    /// # Errors
    /// The backing file or the BAR cannot be made.
    pub fn add_nvme(
        &mut self,
        fdid: &str,
        block: u32,
        blocks: u64,
        idle: Idle,
    ) -> Result<String, DataPathError> {
        let part = device_file_part(fdid);
        let bar = format!("bar0.{part}");
        let medium_path = self.dir.join(format!("medium.{part}"));
        let medium =
            FileMedium::open(&medium_path, block, blocks).map_err(|source| DataPathError::Io {
                path: medium_path.clone(),
                source,
            })?;
        let serial = format!("PCIPOOL-{}", &part[..part.len().min(12)]);
        let nvme = SharedNvme::create(
            &self.dir,
            &bar,
            Controller::new(&serial, "pcipool simulated NVMe"),
            medium,
        )?;
        let nvme = Arc::new(Mutex::new(nvme));
        let stop = Arc::new(AtomicBool::new(false));
        let runner = {
            let (nvme, stop) = (nvme.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("nvme {fdid}"))
                .spawn(move || run_device(&nvme, &stop, idle))
                .map_err(|source| DataPathError::Io {
                    path: self.dir.clone(),
                    source,
                })?
        };
        self.devices.insert(
            fdid.to_owned(),
            Device {
                nvme,
                stop,
                runner: Some(runner),
                bar: bar.clone(),
                next_aperture: 1,
            },
        );
        Ok(bar)
    }

    /// Devices served.
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Leases holding anything.
    pub fn mapped_leases(&self) -> impl Iterator<Item = u64> + '_ {
        self.leases.keys().copied()
    }

    /// Accesses refused so far: through closed or forged windows, and by the devices' DMA and
    /// interrupt messages to memory no longer mapped.
    pub fn faults(&self) -> (u64, u64) {
        let windows = (0..SLOTS)
            .map(|s| u64::from(self.table.faults(s).unwrap_or(0)))
            .sum();
        let dma = self
            .devices
            .values()
            .map(|d| lock(&d.nvme).dma.faults)
            .sum();
        (windows, dma)
    }

    /// Records `lease` as `fdid`'s on `host` for `caller`, or checks it is.
    fn grants(
        &mut self,
        lease: u64,
        fdid: &str,
        host: &str,
        caller: &str,
    ) -> Result<(), DataPathError> {
        check_name(host)?;
        if !self.devices.contains_key(fdid) {
            return Err(DataPathError::NoDevice(fdid.to_owned()));
        }
        let marks = &mut self.marks;
        let g = self.leases.entry(lease).or_insert_with(|| {
            *marks += 1;
            Grants {
                since: *marks,
                fdid: fdid.to_owned(),
                host: host.to_owned(),
                caller: caller.to_owned(),
                slots: Vec::new(),
                device_memory: Vec::new(),
            }
        });
        if g.fdid != fdid || g.host != host {
            return Err(DataPathError::LeaseMismatch {
                lease,
                fdid: g.fdid.clone(),
                host: g.host.clone(),
            });
        }
        if g.caller != caller {
            return Err(DataPathError::NotOwner(format!("lease {lease}")));
        }
        Ok(())
    }

    fn open_window(&mut self, lease: u64, region: &str) -> Result<WindowGrant, DataPathError> {
        // One application must not take the whole table from the others.
        if self
            .leases
            .get(&lease)
            .is_some_and(|g| g.slots.len() >= WINDOWS_PER_LEASE)
        {
            return Err(DataPathError::TooMany {
                lease,
                what: "windows",
                max: WINDOWS_PER_LEASE,
            });
        }
        let slot = self
            .slot_owner
            .iter()
            .position(Option::is_none)
            .ok_or(DataPathError::NoSlots)?;
        let slot_u32 = u32::try_from(slot).map_err(|_| DataPathError::NoSlots)?;
        let size = Region::open(&self.dir, region)?.len();
        let key = self.table.open_slot(slot_u32)?;
        self.slot_owner[slot] = Some(lease);
        if let Some(g) = self.leases.get_mut(&lease) {
            g.slots.push(slot_u32);
        }
        Ok(WindowGrant {
            table: "windows".into(),
            slot: slot_u32,
            key,
            region: region.to_owned(),
            size,
        })
    }

    fn device(&mut self, fdid: &str) -> Result<&mut Device, DataPathError> {
        self.devices
            .get_mut(fdid)
            .ok_or_else(|| DataPathError::NoDevice(fdid.to_owned()))
    }

    /// A window onto `fdid`'s BAR 0 for `lease` held by `host`.
    ///
    /// # Errors
    /// [`DataPathError`].
    pub fn map_bar(
        &mut self,
        lease: u64,
        fdid: &str,
        host: &str,
        caller: &str,
    ) -> Result<WindowGrant, DataPathError> {
        self.grants(lease, fdid, host, caller)?;
        let bar = self.device(fdid)?.bar.clone();
        self.open_window(lease, &bar)
    }

    /// Makes `owner`'s segment `name` visible to `fdid`'s DMA for `lease` held by `host`; returns the
    /// device-side address of its first byte. The holder's own segment must be its caller's; another
    /// host's must be exported by its owner (peer-to-peer: the device's DMA goes to a third host's
    /// memory).
    ///
    /// # Errors
    /// [`DataPathError`].
    pub fn map_segment(
        &mut self,
        lease: u64,
        fdid: &str,
        host: &str,
        caller: &str,
        owner: &str,
        name: &str,
    ) -> Result<u64, DataPathError> {
        let file = segment_file(owner, name)?;
        let entry = self.segment(owner, name)?;
        if owner == host && entry.owner != caller {
            return Err(DataPathError::NotOwner(format!(
                "segment {name} of {owner}"
            )));
        }
        if owner != host && !entry.exported {
            return Err(DataPathError::NotExported {
                owner: owner.to_owned(),
                name: name.to_owned(),
            });
        }
        self.grants(lease, fdid, host, caller)?;
        self.map_for_dma(lease, fdid, &file)
    }

    fn segment(&self, host: &str, name: &str) -> Result<&SegmentEntry, DataPathError> {
        self.segments
            .get(&(host.to_owned(), name.to_owned()))
            .ok_or_else(|| DataPathError::NoSegment {
                host: host.to_owned(),
                name: name.to_owned(),
            })
    }

    /// Creates `size` bytes of `host`'s memory named `name` for `caller` (zeroed); returns the file
    /// name the application maps. Making it again (same caller) starts it afresh; another caller's
    /// name is refused.
    ///
    /// # Errors
    /// Bad names or size, another caller's segment, shared memory.
    pub fn create_segment(
        &mut self,
        caller: &str,
        host: &str,
        name: &str,
        size: u64,
    ) -> Result<String, DataPathError> {
        let file = segment_file(host, name)?;
        if size == 0 || size > 1 << 30 {
            return Err(DataPathError::BadSize(size));
        }
        let key = (host.to_owned(), name.to_owned());
        if self.segments.get(&key).is_some_and(|e| e.owner != caller) {
            return Err(DataPathError::NotOwner(format!("segment {name} of {host}")));
        }
        Region::create(&self.dir, &file, size)?;
        self.segments.insert(
            key,
            SegmentEntry {
                owner: caller.to_owned(),
                exported: false,
            },
        );
        Ok(file)
    }

    /// Removes `caller`'s segment (mappings already made keep the memory until they end); returns
    /// whether it existed.
    ///
    /// # Errors
    /// A name no segment could have; another caller's segment.
    pub fn delete_segment(
        &mut self,
        caller: &str,
        host: &str,
        name: &str,
    ) -> Result<bool, DataPathError> {
        segment_file(host, name)?;
        let key = (host.to_owned(), name.to_owned());
        match self.segments.get(&key) {
            None => Ok(false),
            Some(e) if e.owner != caller => {
                Err(DataPathError::NotOwner(format!("segment {name} of {host}")))
            }
            Some(_) => {
                self.segments.remove(&key);
                let file = segment_file(host, name)?;
                let _ = std::fs::remove_file(self.dir.join(file));
                Ok(true)
            }
        }
    }

    fn map_for_dma(&mut self, lease: u64, fdid: &str, file: &str) -> Result<u64, DataPathError> {
        let dir = self.dir.clone();
        let dev = self.device(fdid)?;
        let base = dev
            .next_aperture
            .checked_mul(APERTURE)
            .ok_or(DataPathError::TooMany {
                lease,
                what: "DMA apertures of the device",
                max: usize::try_from(u64::MAX / APERTURE).unwrap_or(usize::MAX),
            })?;
        lock(&dev.nvme).dma.map_for(&dir, file, base, lease)?;
        dev.next_aperture += 1;
        Ok(base)
    }

    /// Lets other hosts' leases map `host`'s segment `name` for their devices; only its maker may.
    ///
    /// # Errors
    /// No such segment, or another caller's.
    pub fn export(&mut self, caller: &str, host: &str, name: &str) -> Result<(), DataPathError> {
        self.segment(host, name)?;
        match self.segments.get_mut(&(host.to_owned(), name.to_owned())) {
            Some(e) if e.owner == caller => {
                e.exported = true;
                Ok(())
            }
            _ => Err(DataPathError::NotOwner(format!("segment {name} of {host}"))),
        }
    }

    /// Creates `size` bytes of device memory for `lease` with a placement hint.
    ///
    /// # Errors
    /// [`DataPathError`].
    pub fn device_memory(
        &mut self,
        lease: u64,
        fdid: &str,
        host: &str,
        caller: &str,
        size: u64,
        placement: Placement,
    ) -> Result<DeviceMemoryGrant, DataPathError> {
        if size == 0 || size > 1 << 30 {
            return Err(DataPathError::BadSize(size));
        }
        self.grants(lease, fdid, host, caller)?;
        let n = self.leases.get(&lease).map_or(0, |g| g.device_memory.len());
        let region = format!("devmem.{lease}.{n}");
        Region::create(&self.dir, &region, size)?;
        if let Some(g) = self.leases.get_mut(&lease) {
            g.device_memory.push(region.clone());
        }
        let device_addr = self.map_for_dma(lease, fdid, &region)?;
        let window = match placement {
            Placement::NearDevice => Some(self.open_window(lease, &region)?),
            Placement::NearHost => None,
        };
        Ok(DeviceMemoryGrant {
            region,
            size,
            device_addr,
            placement,
            window,
        })
    }

    /// Points `fdid`'s interrupt `vector` for `lease` at the counter in the first 4 bytes of `host`'s
    /// segment `cell`, which must be the caller's.
    ///
    /// # Errors
    /// [`DataPathError`].
    pub fn route_interrupt(
        &mut self,
        lease: u64,
        fdid: &str,
        host: &str,
        caller: &str,
        vector: u16,
        cell: &str,
    ) -> Result<(), DataPathError> {
        let file = segment_file(host, cell)?;
        if self.segment(host, cell)?.owner != caller {
            return Err(DataPathError::NotOwner(format!("segment {cell} of {host}")));
        }
        self.grants(lease, fdid, host, caller)?;
        let dir = self.dir.clone();
        lock(&self.device(fdid)?.nvme)
            .dma
            .route_vector(&dir, &file, vector, lease)?;
        Ok(())
    }

    /// Ends one grant of `lease` for the caller that mapped it (its handle was dropped); returns
    /// whether it existed.
    ///
    /// # Errors
    /// The lease was mapped by another caller.
    pub fn release(
        &mut self,
        lease: u64,
        caller: &str,
        grant: Grant,
    ) -> Result<bool, DataPathError> {
        let Some(g) = self.leases.get_mut(&lease) else {
            return Ok(false);
        };
        if g.caller != caller {
            return Err(DataPathError::NotOwner(format!("lease {lease}")));
        }
        Ok(match grant {
            Grant::Window(slot) => {
                let Some(i) = g.slots.iter().position(|s| *s == slot) else {
                    return Ok(false);
                };
                if self.table.close_slot(slot).is_err() {
                    return Ok(false);
                }
                g.slots.remove(i);
                if let Some(owner) = self.slot_owner.get_mut(slot as usize) {
                    *owner = None;
                }
                true
            }
            Grant::Dma(addr) => self
                .devices
                .get(&g.fdid)
                .is_some_and(|d| lock(&d.nvme).dma.unmap_at(lease, addr)),
            Grant::Vector(vector) => self
                .devices
                .get(&g.fdid)
                .is_some_and(|d| lock(&d.nvme).dma.unroute_vector(lease, vector)),
        })
    }

    /// Ends everything `lease` holds, for the caller that mapped it (its application returns it).
    ///
    /// # Errors
    /// The lease was mapped by another caller.
    pub fn unmap_for(&mut self, lease: u64, caller: &str) -> Result<bool, DataPathError> {
        match self.leases.get(&lease) {
            Some(g) if g.caller != caller => Err(DataPathError::NotOwner(format!("lease {lease}"))),
            _ => Ok(self.unmap(lease, "returned by its holder")),
        }
    }

    /// Ends everything `lease` holds; returns whether it held anything. Idempotent.
    pub fn unmap(&mut self, lease: u64, why: &str) -> bool {
        let Some(g) = self.leases.remove(&lease) else {
            return false;
        };
        for slot in &g.slots {
            // A slot that cannot be closed stays owned: it is never handed out again.
            if self.table.close_slot(*slot).is_ok()
                && let Some(owner) = self.slot_owner.get_mut(*slot as usize)
            {
                *owner = None;
            }
        }
        if let Some(dev) = self.devices.get(&g.fdid) {
            lock(&dev.nvme).dma.unmap_lease(lease);
        }
        for region in &g.device_memory {
            let _ = std::fs::remove_file(self.dir.join(region));
        }
        // A long-running fabric keeps the latest teardowns only.
        for log in [&mut self.torn_down, &mut self.unreported] {
            if log.len() >= TORN_DOWN_KEPT {
                log.remove(0);
            }
            log.push((lease, why.to_owned()));
        }
        true
    }

    /// Takes the teardowns not yet reported to the controller (give back what could not be reported
    /// with [`DataPath::unreported_again`]).
    pub fn take_unreported(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.unreported)
    }

    /// Puts teardowns that could not be reported back in front, to be tried again.
    pub fn unreported_again(&mut self, mut not_yet: Vec<(u64, String)>) {
        not_yet.append(&mut self.unreported);
        let excess = not_yet.len().saturating_sub(TORN_DOWN_KEPT);
        not_yet.drain(..excess);
        self.unreported = not_yet;
    }

    /// A point in the order in which leases first mapped something: take one before asking the
    /// controller for its leases, and pass it to [`DataPath::reconcile`].
    pub fn mark(&self) -> u64 {
        self.marks
    }

    /// Ends every lease not in `live` (the controller's leases as listed after `mark` was taken);
    /// returns those ended. Leases that first mapped after `mark` are left alone: the list may predate
    /// them.
    pub fn reconcile(&mut self, live: &BTreeSet<u64>, mark: u64) -> Vec<u64> {
        let gone: Vec<u64> = self
            .leases
            .iter()
            .filter(|(l, g)| g.since <= mark && !live.contains(l))
            .map(|(l, _)| *l)
            .collect();
        for l in &gone {
            self.unmap(*l, "lease no longer held by the controller");
        }
        gone
    }

    /// Blocks `lba..lba + data.len() / block` of `fdid`'s medium, read directly (tests and operators
    /// checking what reached the device).
    ///
    /// # Errors
    /// No such device, or the medium failed.
    pub fn read_medium(&self, fdid: &str, lba: u64, buf: &mut [u8]) -> Result<(), DataPathError> {
        use pcipool_sim_nvme::Medium as _;
        let dev = self
            .devices
            .get(fdid)
            .ok_or_else(|| DataPathError::NoDevice(fdid.to_owned()))?;
        lock(&dev.nvme)
            .medium()
            .read(lba, buf)
            .map_err(|source| DataPathError::Io {
                path: self.dir.join(format!("medium.{}", device_file_part(fdid))),
                source,
            })
    }
}

impl Drop for DataPath {
    fn drop(&mut self) {
        for d in self.devices.values() {
            d.stop.store(true, Ordering::Relaxed);
        }
        for d in self.devices.values_mut() {
            if let Some(t) = d.runner.take() {
                let _ = t.join();
            }
        }
    }
}

fn run_device(nvme: &Mutex<SharedNvme<FileMedium>>, stop: &AtomicBool, idle: Idle) {
    let mut empty = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match lock(nvme).poll() {
            Ok(0) => empty = empty.saturating_add(1),
            Ok(_) => empty = 0,
            // The BAR region is gone (the service's directory was removed): nothing left to serve.
            Err(_) => return,
        }
        match idle {
            Idle::Sleep(d) if empty > IDLE_POLLS => std::thread::sleep(d),
            Idle::Sleep(_) => std::thread::yield_now(),
            // Even a spinning device lets other threads run between bursts: on few cores the drivers
            // it serves need the CPU it would burn.
            Idle::Spin if empty > 0 && empty.is_multiple_of(64) => std::thread::yield_now(),
            Idle::Spin => std::hint::spin_loop(),
        }
    }
}
