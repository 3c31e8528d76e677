//! Application-managed shared access: the SISCI SmartIO model (`docs/background.md`) in our
//! own words. An application on any host of the pool finds a device, borrows it exclusive or shared,
//! maps its BAR for register access, maps memory for the device's DMA (its own, or a peer's that the
//! peer exported), creates device memory with a placement hint, and routes the device's interrupts to
//! itself. Several applications on several hosts may use one device at once; they coordinate among
//! themselves (for an NVMe device: one manager creates a queue pair per client).
//!
//! Every borrow is a controller lease (shared model; exclusive = a limit of one sharer, which the holder
//! may raise with [`Borrow::downgrade`] once the device is initialised). Every mapping is granted by the
//! fabric's data path only after it checked the lease with the controller. Handles give back what they
//! hold when dropped; the borrow is returned (mappings torn down, lease released) when its last handle
//! goes, or at once with [`Borrow::give_back`], after which any handle still held reaches nothing:
//! register reads are all ones and writes are dropped, as through a torn-down NTB window.
//!
//! # Layout
//! - [`Pool`]: the connection (controller, fabric, this host): find, borrow, attach to a lent device,
//!   segments.
//! - [`Borrow`]: one lease, and what it maps: [`BarMap`], [`DmaMapping`], [`DeviceMemory`],
//!   [`Interrupt`].
//! - [`Segment`]: this host's memory that devices may reach by DMA.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcipool_client::{Client, ClientError};
use pcipool_fabric::{Fdid, NodeId};
use pcipool_pool::schedule::{DeviceClass, Selector};
use pcipool_qualify::AccessModel;
use pcipool_sim_datapath::service::{DeviceMemoryGrant, Grant, WindowGrant};
use pcipool_sim_datapath::wire::{
    DeviceMemoryRequest, ExportRequest, Holder, Info, InterruptRequest, Mapped, SegmentCreate,
    SegmentMade, SegmentRequest,
};
use pcipool_sim_shm::window::Window;
use pcipool_sim_shm::{Region, ShmError};
use pcipool_wire::{BorrowRequest, DeviceView};

pub use pcipool_sim_datapath::service::Placement;

mod handles;

use handles::Reach;
pub use handles::{BarMap, DeviceMemory, DmaMapping, Interrupt};

/// Why an access call failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The controller refused or could not be reached.
    #[error("controller: {0}")]
    Controller(#[source] ClientError),
    /// The fabric's data path refused or could not be reached.
    #[error("fabric: {0}")]
    Fabric(#[source] ClientError),
    /// Shared memory failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// A host or device id that does not parse, or a bad segment name.
    #[error("{0}")]
    BadInput(String),
    /// The controller answered a borrow without a lease.
    #[error("the controller granted no lease")]
    NoLease,
    /// The borrow was returned already.
    #[error("lease {0} was returned")]
    Returned(u64),
    /// No interrupt arrived in time.
    #[error("no interrupt within {0:?}")]
    Timeout(Duration),
}

impl AccessError {
    /// Whether trying again later may succeed (the controller or fabric was unreachable or briefly
    /// unavailable, e.g. restarting).
    pub fn is_transient(&self) -> bool {
        let transient = |e: &ClientError| match e {
            ClientError::Transport { .. } | ClientError::Body { .. } => true,
            ClientError::Api { status, code, .. } => {
                *status == 503
                    || pcipool_wire::ErrorCode::parse(code).is_some_and(|c| c.is_transient())
            }
        };
        match self {
            Self::Controller(e) | Self::Fabric(e) => transient(e),
            _ => false,
        }
    }

    /// The API error code, when the controller or fabric answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Controller(ClientError::Api { code, .. })
            | Self::Fabric(ClientError::Api { code, .. }) => Some(code),
            _ => None,
        }
    }
}

/// Where the pool is and who this application is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The controller's URL.
    pub controller: String,
    /// The fabric's URL (its data path).
    pub fabric: String,
    /// The application's bearer token (its tenant at the controller).
    pub token: String,
    /// The host the application runs on (`n2`).
    pub host: String,
    /// How long a borrow's lease lasts without renewal (seconds; None = 60). Borrows renew their lease
    /// from a thread of their own; an application that dies loses its leases this long after.
    pub lease_secs: Option<u64>,
}

/// Lease length when [`Config::lease_secs`] is not set.
const LEASE_SECS: u64 = 60;

/// Which devices [`Pool::find`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this class.
    pub class: Option<DeviceClass>,
    /// Only names containing this (case-insensitive).
    pub name_contains: Option<String>,
    /// Only devices served on the fabric's data path (those an application can map).
    pub on_data_path: bool,
}

/// How to borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Alone: fails while anyone holds the device; see [`Borrow::downgrade`].
    Exclusive,
    /// Together with others, up to `max_sharers` hosts at once (the first borrower sets the limit).
    Shared {
        /// Most sharers.
        max_sharers: u32,
    },
}

struct PoolInner {
    controller: Client,
    lease_secs: u64,
    fabric: Client,
    host: String,
    dir: PathBuf,
    devices: Vec<String>,
}

/// A connection to the pool for one application on one host.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("host", &self.inner.host)
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Connects: asks the fabric where its shared regions live.
    ///
    /// # Errors
    /// A bad host name, or the fabric cannot be reached.
    pub fn connect(config: &Config) -> Result<Self, AccessError> {
        config
            .host
            .parse::<NodeId>()
            .map_err(|e| AccessError::BadInput(format!("host {:?}: {e}", config.host)))?;
        let fabric = Client::new(&config.fabric, &config.token);
        let info: Info = fabric.get("/v1/datapath").map_err(AccessError::Fabric)?;
        Ok(Self {
            inner: Arc::new(PoolInner {
                controller: Client::new(&config.controller, &config.token),
                lease_secs: config.lease_secs.unwrap_or(LEASE_SECS).max(1),
                fabric,
                host: config.host.clone(),
                dir: PathBuf::from(info.dir),
                devices: info.devices,
            }),
        })
    }

    /// This application's host.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Devices of the pool matching `filter`.
    ///
    /// # Errors
    /// The controller failed.
    pub fn find(&self, filter: &Filter) -> Result<Vec<DeviceView>, AccessError> {
        let all = self
            .inner
            .controller
            .devices()
            .map_err(AccessError::Controller)?;
        let needle = filter.name_contains.as_deref().map(str::to_lowercase);
        Ok(all
            .into_iter()
            .filter(|d| filter.class.is_none_or(|c| DeviceClass::of(d.class) == c))
            .filter(|d| {
                needle
                    .as_deref()
                    .is_none_or(|n| d.name.to_lowercase().contains(n))
            })
            .filter(|d| !filter.on_data_path || self.inner.devices.contains(&d.fdid.to_string()))
            .collect())
    }

    /// Borrows `fdid`.
    ///
    /// # Errors
    /// The controller refused (held exclusively, all sharers taken, not qualified for sharing) or
    /// could not be reached.
    pub fn borrow(&self, fdid: &str, mode: Mode) -> Result<Borrow, AccessError> {
        let id: Fdid = fdid
            .parse()
            .map_err(|e| AccessError::BadInput(format!("device {fdid:?}: {e}")))?;
        let borrower: NodeId = self
            .inner
            .host
            .parse()
            .map_err(|e| AccessError::BadInput(format!("host: {e}")))?;
        let max_sharers = match mode {
            Mode::Exclusive => 1,
            Mode::Shared { max_sharers } => max_sharers.max(2),
        };
        let request = BorrowRequest {
            selector: Selector {
                fdid: Some(id),
                ..Selector::default()
            },
            count: 1,
            model: AccessModel::Shared,
            borrower,
            duration_secs: Some(self.inner.lease_secs),
            max_sharers: Some(max_sharers),
            request_id: None,
            wait: true,
        };
        let granted = self
            .inner
            .controller
            .borrow(&request)
            .map_err(AccessError::Controller)?;
        let lease = granted.first().ok_or(AccessError::NoLease)?;
        let inner = Arc::new(BorrowInner {
            pool: self.inner.clone(),
            lease: lease.lease_id.0,
            // The controller's spelling: the fabric compares it with the lease's.
            fdid: lease.fdid.to_string(),
            returned: AtomicBool::new(false),
            done: AtomicBool::new(false),
            owns_lease: true,
        });
        keep_alive(
            Arc::downgrade(&inner),
            lease.epoch.0,
            // A quarter of the lease: a renewal or two may be late or lost (a restarting controller, a
            // busy host) before the lease is in danger.
            Duration::from_millis(self.inner.lease_secs.saturating_mul(1000) / 4),
        );
        Ok(Borrow { inner })
    }

    /// A handle on a device lent to this host by Device Lending (lease `lease`, borrowed e.g. with
    /// `pcipool borrow`): the borrower's native driver maps the device's BAR and its own memory through
    /// it. The lease stays the borrower's: dropping the handle unmaps, and the device goes back when
    /// the lease is released.
    ///
    /// # Errors
    /// No such lease visible to this application on this host, or the controller failed.
    pub fn attach(&self, lease: u64) -> Result<Borrow, AccessError> {
        let leases = self
            .inner
            .controller
            .leases()
            .map_err(AccessError::Controller)?;
        let held = leases
            .iter()
            .find(|l| l.lease_id.0 == lease && l.borrower.to_string() == self.inner.host)
            .ok_or_else(|| {
                AccessError::BadInput(format!(
                    "no lease {lease} of this application on {}",
                    self.inner.host
                ))
            })?;
        Ok(Borrow {
            inner: Arc::new(BorrowInner {
                pool: self.inner.clone(),
                lease,
                fdid: held.fdid.to_string(),
                returned: AtomicBool::new(false),
                done: AtomicBool::new(false),
                owns_lease: false,
            }),
        })
    }

    /// Creates `size` bytes of this host's memory named `name`, which devices may be given for DMA
    /// (see [`Borrow::map_for_dma`]). Removed when the segment is dropped.
    ///
    /// # Errors
    /// A bad name or size, or shared memory.
    pub fn segment(&self, name: &str, size: u64) -> Result<Segment, AccessError> {
        let made: SegmentMade = self
            .inner
            .fabric
            .post(
                "/v1/datapath/segments",
                &SegmentCreate {
                    host: self.inner.host.clone(),
                    name: name.to_owned(),
                    size,
                },
            )
            .map_err(AccessError::Fabric)?;
        match Region::open(&self.inner.dir, &made.file) {
            Ok(region) => Ok(Segment {
                pool: self.inner.clone(),
                name: name.to_owned(),
                file: made.file,
                region,
            }),
            Err(e) => {
                let path = format!("/v1/datapath/segments/{}/{name}", self.inner.host);
                let _ = self.inner.fabric.delete(&path);
                Err(e.into())
            }
        }
    }
}

/// Renews a borrow's lease every `every` until the borrow is returned or gone. A controller that cannot
/// be reached is tried again next time (it may be restarting); a lease the controller no longer knows
/// or has fenced is given up.
fn keep_alive(borrow: std::sync::Weak<BorrowInner>, epoch: u64, every: Duration) {
    let Some(first) = borrow.upgrade() else {
        return;
    };
    let (controller, lease) = (first.pool.controller.clone(), first.lease);
    drop(first);
    let every = every.max(Duration::from_millis(100));
    let _ = std::thread::Builder::new()
        .name(format!("lease {lease}"))
        .spawn(move || {
            let mut due = Instant::now() + every;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                // Held only for the check: the application's drop must stay the one that returns.
                let live = borrow
                    .upgrade()
                    .is_some_and(|b| !b.returned.load(Ordering::SeqCst));
                if !live {
                    return;
                }
                if Instant::now() < due {
                    continue;
                }
                due = Instant::now() + every;
                // The lease is gone or fenced: renewing it again cannot succeed.
                if let Err(ClientError::Api { code, .. }) = controller.renew(lease, epoch)
                    && matches!(
                        code.as_str(),
                        "FORBIDDEN" | "NO_SUCH_LEASE" | "STALE_EPOCH" | "ILLEGAL_TRANSITION"
                    )
                {
                    return;
                }
            }
        });
}

/// Memory of this host that devices may reach by DMA.
pub struct Segment {
    pool: Arc<PoolInner>,
    name: String,
    file: String,
    region: Region,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The memory (loads, stores, copies).
    pub fn memory(&self) -> &Region {
        &self.region
    }

    /// Lets devices borrowed by other hosts reach this segment (peer-to-peer DMA).
    ///
    /// # Errors
    /// The fabric refused or could not be reached.
    pub fn export(&self) -> Result<(), AccessError> {
        self.pool
            .fabric
            .post::<_, serde_json::Value>(
                "/v1/datapath/exports",
                &ExportRequest {
                    host: self.pool.host.clone(),
                    name: self.name.clone(),
                },
            )
            .map(|_| ())
            .map_err(AccessError::Fabric)
    }

    /// A second mapping of the same memory (the device's view is the first; this is for a driver that
    /// keeps its queues in the segment).
    ///
    /// # Errors
    /// Shared memory.
    pub fn reopen(&self) -> Result<Region, AccessError> {
        Ok(Region::open(&self.pool.dir, &self.file)?)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Mappings already made keep the memory until they end; the name goes now.
        let path = format!("/v1/datapath/segments/{}/{}", self.pool.host, self.name);
        let _ = self.pool.fabric.delete(&path);
    }
}

struct BorrowInner {
    pool: Arc<PoolInner>,
    lease: u64,
    fdid: String,
    /// Set by the first give-back: handles stop asking for anything.
    returned: AtomicBool,
    /// Set once the fabric and the controller both confirmed the return.
    done: AtomicBool,
    /// Whether returning also releases the lease ([`Pool::borrow`]) or only unmaps ([`Pool::attach`]).
    owns_lease: bool,
}

impl BorrowInner {
    fn holder(&self) -> Holder {
        Holder {
            fdid: self.fdid.clone(),
            host: self.pool.host.clone(),
        }
    }

    fn live(&self) -> Result<(), AccessError> {
        if self.returned.load(Ordering::SeqCst) {
            Err(AccessError::Returned(self.lease))
        } else {
            Ok(())
        }
    }

    fn path(&self, what: &str) -> String {
        format!("/v1/datapath/leases/{}/{what}", self.lease)
    }

    /// Gives one grant back (best effort: the lease's return ends it anyway).
    fn release(&self, grant: Grant) {
        if self.returned.load(Ordering::SeqCst) {
            return;
        }
        let path = format!("/v1/datapath/leases/{}/release", self.lease);
        let _ = self.pool.fabric.post::<_, serde_json::Value>(&path, &grant);
    }

    fn give_back(&self) -> Result<(), AccessError> {
        self.returned.store(true, Ordering::SeqCst);
        if self.done.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Mappings first, so nothing reaches the device once the lease is gone.
        let unmapped = self
            .pool
            .fabric
            .delete(&format!("/v1/datapath/leases/{}", self.lease))
            .map_err(AccessError::Fabric);
        let released = if self.owns_lease {
            match self.pool.controller.release(self.lease) {
                // Already ended by the controller (expired, fenced, released by an operator).
                Err(ClientError::Api { status: 404, .. }) => Ok(()),
                other => other.map_err(AccessError::Controller),
            }
        } else {
            Ok(())
        };
        let both = unmapped.and(released);
        if both.is_ok() {
            self.done.store(true, Ordering::SeqCst);
        }
        both
    }

    fn attach(&self, grant: &WindowGrant) -> Result<Window, AccessError> {
        Ok(Window::attach(
            &self.pool.dir,
            &grant.table,
            grant.slot,
            grant.key,
            &grant.region,
        )?)
    }
}

impl Drop for BorrowInner {
    fn drop(&mut self) {
        let _ = self.give_back();
    }
}

/// A borrowed device (one controller lease). Cloning shares the borrow; it is returned when the last
/// clone and the last handle made from it are dropped, or at once by [`Borrow::give_back`].
#[derive(Clone)]
pub struct Borrow {
    inner: Arc<BorrowInner>,
}

impl std::fmt::Debug for Borrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Borrow")
            .field("lease", &self.inner.lease)
            .field("fdid", &self.inner.fdid)
            .finish_non_exhaustive()
    }
}

impl Borrow {
    /// The controller's lease id.
    pub fn lease(&self) -> u64 {
        self.inner.lease
    }

    /// The device.
    pub fn fdid(&self) -> &str {
        &self.inner.fdid
    }

    /// Lets up to `max_sharers` hosts share the device this exclusive borrow holds (after the holder
    /// initialised it).
    ///
    /// # Errors
    /// Not an exclusive borrow, or the controller failed.
    pub fn downgrade(&self, max_sharers: u32) -> Result<(), AccessError> {
        self.inner.live()?;
        self.inner
            .pool
            .controller
            .downgrade(self.inner.lease, max_sharers)
            .map_err(AccessError::Controller)
    }

    /// Maps BAR 0 for register access.
    ///
    /// # Errors
    /// The fabric refused (the lease is not ours, the device is not on the data path) or failed.
    pub fn map_bar(&self) -> Result<BarMap, AccessError> {
        self.inner.live()?;
        let grant: WindowGrant = self
            .inner
            .pool
            .fabric
            .post(&self.inner.path("bar"), &self.inner.holder())
            .map_err(AccessError::Fabric)?;
        Ok(BarMap {
            window: self.inner.attach(&grant)?,
            slot: grant.slot,
            size: grant.size,
            borrow: self.inner.clone(),
        })
    }

    /// Makes this host's `segment` reachable by the device's DMA.
    ///
    /// # Errors
    /// The fabric refused or failed.
    pub fn map_for_dma(&self, segment: &Segment) -> Result<DmaMapping, AccessError> {
        self.map_owned_for_dma(&self.inner.pool.host.clone(), segment.name())
    }

    /// Makes `owner`'s exported segment `name` reachable by the device's DMA (peer-to-peer: the
    /// device writes straight into a third host's memory).
    ///
    /// # Errors
    /// Not exported, or the fabric failed.
    pub fn map_peer_for_dma(&self, owner: &str, name: &str) -> Result<DmaMapping, AccessError> {
        self.map_owned_for_dma(owner, name)
    }

    fn map_owned_for_dma(&self, owner: &str, name: &str) -> Result<DmaMapping, AccessError> {
        self.inner.live()?;
        let request = SegmentRequest {
            fdid: self.inner.fdid.clone(),
            host: self.inner.pool.host.clone(),
            owner: owner.to_owned(),
            name: name.to_owned(),
        };
        let mapped: Mapped = self
            .inner
            .pool
            .fabric
            .post(&self.inner.path("segments"), &request)
            .map_err(AccessError::Fabric)?;
        Ok(DmaMapping {
            device_addr: mapped.device_addr,
            borrow: self.inner.clone(),
        })
    }

    /// Creates `size` bytes of device memory placed as hinted.
    ///
    /// # Errors
    /// The fabric refused or failed.
    pub fn device_memory(
        &self,
        size: u64,
        placement: Placement,
    ) -> Result<DeviceMemory, AccessError> {
        self.inner.live()?;
        let request = DeviceMemoryRequest {
            fdid: self.inner.fdid.clone(),
            host: self.inner.pool.host.clone(),
            size,
            placement,
        };
        let grant: DeviceMemoryGrant = self
            .inner
            .pool
            .fabric
            .post(&self.inner.path("device-memory"), &request)
            .map_err(AccessError::Fabric)?;
        let reach = match &grant.window {
            Some(w) => Reach::Window(self.inner.attach(w)?),
            None => Reach::Direct(Region::open(&self.inner.pool.dir, &grant.region)?),
        };
        Ok(DeviceMemory {
            grant,
            reach,
            borrow: self.inner.clone(),
        })
    }

    /// Routes the device's interrupt `vector` to this application.
    ///
    /// # Errors
    /// The fabric refused or failed.
    pub fn interrupt(&self, vector: u16) -> Result<Interrupt, AccessError> {
        self.inner.live()?;
        let pool = Pool {
            inner: self.inner.pool.clone(),
        };
        let cell = pool.segment(&format!("irq-l{}v{vector}", self.inner.lease), 64)?;
        let request = InterruptRequest {
            fdid: self.inner.fdid.clone(),
            host: self.inner.pool.host.clone(),
            vector,
            cell: cell.name().to_owned(),
        };
        let routed: serde_json::Value = self
            .inner
            .pool
            .fabric
            .post(&self.inner.path("interrupts"), &request)
            .map_err(AccessError::Fabric)?;
        drop(routed);
        Ok(Interrupt {
            cell,
            vector,
            seen: 0,
            borrow: self.inner.clone(),
        })
    }

    /// Returns the device now: the fabric tears down every mapping of the lease and the controller
    /// releases it (a handle from [`Pool::attach`] only unmaps: the lease is the lending's). Handles
    /// still held reach nothing from here on. Idempotent; after an error, calling
    /// again retries what did not happen.
    ///
    /// # Errors
    /// The fabric or the controller failed (retry; or the lease ends when the controller fences it).
    pub fn give_back(&self) -> Result<(), AccessError> {
        self.inner.give_back()
    }
}
