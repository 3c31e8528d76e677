//! The simulated data path. A device's BAR 0 is a shared region; host memory the device may reach by DMA
//! are shared segments, each visible to the device at a device-side address (its DMA window). The device
//! runner ([`SharedNvme`]) watches its BAR for register writes and doorbells, runs the NVMe model, and
//! moves data straight between the medium and the segments: no copy through any intermediary, as on a
//! real NTB where the device's DMA crosses the fabric to the borrower's memory.
//!
//! A driver in another process writes the BAR through a [`pcipool_sim_shm::window::Window`] (so the lender
//! side can revoke it) and keeps its queues and buffers in its own segment.
//!
//! # Layout
//! - [`SegmentDma`]: the device's DMA onto shared segments.
//! - [`SharedNvme`]: the device runner.
//! - [`driver`]: a small polled driver over a BAR (direct or through a window).
//! - [`FileMedium`]: a device's blocks in a backing file.
//! - [`wire`]: the service's HTTP messages.
//! - [`service`]: the fabric's data-path service: devices served from shared memory, and the BAR
//!   windows, DMA mappings, device memory and interrupt routes it grants per lease and tears down.
#![deny(missing_docs)]

pub mod driver;
pub mod service;
pub mod wire;

use std::path::Path;

use pcipool_sim_nvme::regs::{ACQ, AQA, ASQ, CAP, CC, CSTS, DOORBELLS, VS};
use pcipool_sim_nvme::{Controller, DmaFault, HostMemory, Medium};
use pcipool_sim_shm::{Region, ShmError};

/// BAR 0 size: registers and the doorbells of up to 256 queue pairs.
pub const BAR_SIZE: u64 = 0x2000;
/// Queue pairs whose doorbells the runner watches (admin + I/O).
pub const QUEUE_PAIRS: u64 = 64;

/// One DMA window: device-side addresses `[base, base + len)` reach `region` from offset 0.
#[derive(Debug)]
struct DmaWindow {
    base: u64,
    region: Region,
    /// The lease the window was made for (0 = the lender's own use).
    lease: u64,
}

/// An interrupt vector's target: the counter cell in a host's memory the MSI-X message increments.
#[derive(Debug)]
struct Vector {
    cell: Region,
    lease: u64,
}

/// The device's DMA onto shared segments. An address outside every window is refused (the IOMMU and the
/// NTB would refuse it too).
#[derive(Debug, Default)]
pub struct SegmentDma {
    windows: Vec<DmaWindow>,
    vectors: std::collections::BTreeMap<u16, Vector>,
    /// Refused accesses and interrupt messages so far.
    pub faults: u64,
}

impl SegmentDma {
    /// Maps the segment `name` under `dir` at device-side address `base` for the lender's own use.
    ///
    /// # Errors
    /// The segment cannot be opened.
    pub fn map(&mut self, dir: &Path, name: &str, base: u64) -> Result<(), ShmError> {
        self.map_for(dir, name, base, 0)
    }

    /// Maps the segment `name` at `base` on behalf of `lease` (removed by [`SegmentDma::unmap_lease`]).
    ///
    /// # Errors
    /// The segment cannot be opened.
    pub fn map_for(
        &mut self,
        dir: &Path,
        name: &str,
        base: u64,
        lease: u64,
    ) -> Result<(), ShmError> {
        let region = Region::open(dir, name)?;
        self.windows.push(DmaWindow {
            base,
            region,
            lease,
        });
        Ok(())
    }

    /// Points interrupt `vector` at the counter cell (first 4 bytes of region `cell`) for `lease`.
    ///
    /// # Errors
    /// The cell cannot be opened.
    pub fn route_vector(
        &mut self,
        dir: &Path,
        cell: &str,
        vector: u16,
        lease: u64,
    ) -> Result<(), ShmError> {
        let cell = Region::open(dir, cell)?;
        self.vectors.insert(vector, Vector { cell, lease });
        Ok(())
    }

    /// Removes `lease`'s window at device-side address `base`; returns whether there was one.
    pub fn unmap_at(&mut self, lease: u64, base: u64) -> bool {
        let before = self.windows.len();
        self.windows
            .retain(|w| !(w.lease == lease && w.base == base));
        self.windows.len() != before
    }

    /// Removes `lease`'s route of interrupt `vector`; returns whether there was one.
    pub fn unroute_vector(&mut self, lease: u64, vector: u16) -> bool {
        self.vectors
            .remove(&vector)
            .map(|v| {
                if v.lease != lease {
                    // Someone else's route: put it back untouched.
                    self.vectors.insert(vector, v);
                    false
                } else {
                    true
                }
            })
            .unwrap_or(false)
    }

    /// Removes every window and vector of `lease`: further DMA to them is refused.
    pub fn unmap_lease(&mut self, lease: u64) {
        self.windows.retain(|w| w.lease != lease);
        self.vectors.retain(|_, v| v.lease != lease);
    }

    fn find(&self, addr: u64, len: usize) -> Option<(&Region, u64)> {
        self.windows.iter().find_map(|w| {
            let off = addr.checked_sub(w.base)?;
            (off.checked_add(len as u64)? <= w.region.len()).then_some((&w.region, off))
        })
    }
}

impl HostMemory for SegmentDma {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        match self.find(addr, buf.len()) {
            Some((r, off)) => r.read(off, buf).map_err(|_| DmaFault { addr }),
            None => {
                self.faults += 1;
                Err(DmaFault { addr })
            }
        }
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        match self.find(addr, data.len()) {
            Some((r, off)) => r.write(off, data).map_err(|_| DmaFault { addr }),
            None => {
                self.faults += 1;
                Err(DmaFault { addr })
            }
        }
    }

    fn interrupt(&mut self, vector: u16) -> Result<(), DmaFault> {
        match self.vectors.get(&vector) {
            Some(v) => v
                .cell
                .fetch_add_u32(0, 1)
                .map(|_| ())
                .map_err(|_| DmaFault { addr: 0 }),
            None => {
                self.faults += 1;
                Err(DmaFault { addr: 0 })
            }
        }
    }
}

/// A medium in a backing file (sparse: blocks never written cost no disk).
#[derive(Debug)]
pub struct FileMedium {
    file: std::fs::File,
    block: u32,
    blocks: u64,
}

impl FileMedium {
    /// Opens or creates `path` with `blocks` blocks of `block` bytes (existing data is kept, so a
    /// device's contents outlive the process that served it).
    ///
    /// # Errors
    /// The file cannot be opened or sized.
    pub fn open(path: &Path, block: u32, blocks: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(u64::from(block).saturating_mul(blocks))?;
        Ok(Self {
            file,
            block,
            blocks,
        })
    }

    fn at(&self, lba: u64, len: usize) -> std::io::Result<u64> {
        let at = lba.checked_mul(u64::from(self.block));
        at.filter(|a| {
            a.checked_add(len as u64)
                .is_some_and(|end| end <= self.blocks * u64::from(self.block))
        })
        .ok_or_else(|| std::io::Error::other("LBA out of range"))
    }
}

impl Medium for FileMedium {
    fn block_size(&self) -> u32 {
        self.block
    }
    fn blocks(&self) -> u64 {
        self.blocks
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let at = self.at(lba, buf.len())?;
        self.file.read_exact_at(buf, at)
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let at = self.at(lba, data.len())?;
        self.file.write_all_at(data, at)
    }
}

/// The registers a driver writes, which the runner forwards to the model when they change.
const WRITABLE: [u64; 6] = [AQA, ASQ, ASQ + 4, ACQ, ACQ + 4, CC];

/// An NVMe-like device whose BAR 0 lives in a shared region.
#[derive(Debug)]
pub struct SharedNvme<M> {
    ctrl: Controller,
    bar: Region,
    medium: M,
    /// The device's DMA.
    pub dma: SegmentDma,
    /// What the runner last saw in each watched register and doorbell.
    seen: Vec<(u64, u32)>,
}

impl<M: Medium> SharedNvme<M> {
    /// Creates the BAR region `bar` under `dir` and publishes the read-only registers.
    ///
    /// # Errors
    /// The region cannot be created.
    pub fn create(dir: &Path, bar: &str, ctrl: Controller, medium: M) -> Result<Self, ShmError> {
        let bar = Region::create(dir, bar, BAR_SIZE)?;
        let mut watched: Vec<u64> = WRITABLE.to_vec();
        watched.extend((0..QUEUE_PAIRS * 2).map(|i| DOORBELLS + 4 * i));
        let seen = watched.into_iter().map(|o| (o, 0)).collect();
        let mut dev = Self {
            ctrl,
            bar,
            medium,
            dma: SegmentDma::default(),
            seen,
        };
        dev.publish()?;
        Ok(dev)
    }

    /// Writes the registers the device owns (capabilities, version, status) into the shared BAR.
    fn publish(&mut self) -> Result<(), ShmError> {
        for off in [CAP, CAP + 4, VS, CSTS] {
            self.bar.store_u32(off, self.ctrl.read32(off))?;
        }
        Ok(())
    }

    /// One pass: forwards register writes and doorbells that changed, runs the submitted commands, and
    /// publishes the status. Returns how many commands ran.
    ///
    /// # Errors
    /// The BAR region failed.
    pub fn poll(&mut self) -> Result<usize, ShmError> {
        // CC is read before the registers a driver sets up ahead of it (AQA, ASQ, ACQ) and forwarded
        // after them. A driver writes those first and CC last, so an enable seen here comes with every
        // earlier write visible; read in the other order, a pass could catch ASQ still old and then
        // CC already set, and the controller would come up on a stale admin queue address.
        let cc = self.bar.load_u32(CC)?;
        for i in 0..self.seen.len() {
            let (off, last) = self.seen[i];
            if off == CC {
                continue;
            }
            let now = self.bar.load_u32(off)?;
            if now != last {
                self.seen[i].1 = now;
                self.ctrl.write32(off, now);
            }
        }
        if let Some(i) = self.seen.iter().position(|(off, _)| *off == CC)
            && self.seen[i].1 != cc
        {
            self.seen[i].1 = cc;
            self.ctrl.write32(CC, cc);
        }
        let ran = self.ctrl.process(&mut self.dma, &mut self.medium);
        self.publish()?;
        Ok(ran)
    }

    /// The medium (to check what reached it).
    pub fn medium(&mut self) -> &mut M {
        &mut self.medium
    }
}
