//! The two drivers of the simulated NVMe-like device, polled, over any BAR access ([`Bar`]):
//! - [`Driver`], the native driver: it owns the controller (enable, the admin queue, I/O queue creation)
//!   and does I/O on its own queue pair — the lender's driver, or a borrower's under Device Lending.
//! - [`SharedClient`], the shared-access client (libnvm over SmartIO): one I/O queue pair that a manager
//!   (a native driver on some host) created for it; it has no admin queue and cannot reset or
//!   reconfigure the controller, so clients on several hosts share one device safely.
//!
//! Queues and buffers live in the driver's own shared segment; the device reaches the segment at `base`
//! (its DMA window).

use std::time::{Duration, Instant};

use pcipool_sim_nvme::regs::*;
use pcipool_sim_shm::{Region, ShmError};

/// Register access to BAR 0: directly (the driver on the lender) or through a fabric window (a borrower).
pub trait Bar {
    /// Reads a 32-bit register.
    ///
    /// # Errors
    /// Out of range or misaligned.
    fn read32(&self, offset: u64) -> Result<u32, ShmError>;
    /// Writes a 32-bit register.
    ///
    /// # Errors
    /// Out of range or misaligned.
    fn write32(&self, offset: u64, value: u32) -> Result<(), ShmError>;
}

impl Bar for Region {
    fn read32(&self, offset: u64) -> Result<u32, ShmError> {
        self.load_u32(offset)
    }
    fn write32(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        self.store_u32(offset, value)
    }
}

impl Bar for pcipool_sim_shm::window::Window {
    fn read32(&self, offset: u64) -> Result<u32, ShmError> {
        self.read_u32(offset)
    }
    fn write32(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        self.write_u32(offset, value)
    }
}

/// Offsets in the driver's segment.
pub mod layout {
    /// Admin submission queue.
    pub const SQ: u64 = 0x0000;
    /// Admin completion queue.
    pub const CQ: u64 = 0x1000;
    /// I/O submission queue.
    pub const IOSQ: u64 = 0x2000;
    /// I/O completion queue.
    pub const IOCQ: u64 = 0x3000;
    /// Data buffers: [`super::MAX_IN_FLIGHT`] pages, one per command in flight.
    pub const DATA: u64 = 0x4000;
    /// The smallest segment a driver needs.
    pub const SEGMENT: u64 = DATA + super::MAX_IN_FLIGHT as u64 * 4096;
}

/// Entries per queue (a 64-byte entry ring fills one 4 KiB page).
const DEPTH: u16 = 64;
/// Most I/O commands a driver keeps in flight (queue depth 32 plus headroom stays below the ring size).
pub const MAX_IN_FLIGHT: u16 = 32;

/// Why a command did not complete well.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Shared memory failed.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// No completion within the timeout (the device is gone, or the window was revoked).
    #[error("no completion within {0:?}")]
    Timeout(Duration),
    /// The device completed the command with an error status.
    #[error("status {0:#x}")]
    Status(u16),
    /// More commands in flight than the queue allows.
    #[error("{0} commands already in flight")]
    QueueFull(u16),
}

/// A completed I/O command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The command identifier [`Driver::submit_read`]/[`Driver::submit_write`] returned.
    pub cid: u16,
    /// NVMe status code (0 = success).
    pub status: u16,
}

/// A polled driver.
#[derive(Debug)]
pub struct Driver<B> {
    bar: B,
    /// The driver's segment.
    pub seg: Region,
    /// Where the device sees the segment.
    pub base: u64,
    io_qid: u16,
    tails: [u16; 2],
    heads: [u16; 2],
    phases: [bool; 2],
    cid: u16,
    in_flight: u16,
    timeout: Duration,
}

impl<B: Bar> Driver<B> {
    /// A driver owning I/O queue `io_qid`.
    pub fn new(bar: B, seg: Region, base: u64, io_qid: u16) -> Self {
        Self {
            bar,
            seg,
            base,
            io_qid,
            tails: [0; 2],
            heads: [0; 2],
            phases: [true; 2],
            cid: 0,
            in_flight: 0,
            timeout: Duration::from_secs(10),
        }
    }

    /// A register, through the driver's BAR access.
    ///
    /// # Errors
    /// Shared memory failed.
    pub fn reg(&self, offset: u64) -> Result<u32, ShmError> {
        self.bar.read32(offset)
    }

    fn set(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        self.bar.write32(offset, value)
    }

    /// Sets up the admin queue in the segment and enables the controller; waits until it is ready.
    ///
    /// # Errors
    /// Timeout or shared memory.
    pub fn enable(&self) -> Result<(), DriverError> {
        let split = |a: u64| {
            (
                u32::try_from(a & 0xffff_ffff).unwrap_or(0),
                u32::try_from(a >> 32).unwrap_or(0),
            )
        };
        let (sq_lo, sq_hi) = split(self.base + layout::SQ);
        let (cq_lo, cq_hi) = split(self.base + layout::CQ);
        let q = u32::from(DEPTH - 1);
        self.set(AQA, (q << 16) | q)?;
        self.set(ASQ, sq_lo)?;
        self.set(ASQ + 4, sq_hi)?;
        self.set(ACQ, cq_lo)?;
        self.set(ACQ + 4, cq_hi)?;
        self.set(CC, CC_EN)?;
        let until = Instant::now() + self.timeout;
        while self.reg(CSTS)? & CSTS_RDY == 0 {
            if Instant::now() > until {
                return Err(DriverError::Timeout(self.timeout));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Creates the I/O queue pair `qid` in the segment of a client seen by the device at `client_base`
    /// (the manager does this for every client; a single driver for itself).
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn create_io_queues(&mut self, qid: u16, client_base: u64) -> Result<(), DriverError> {
        self.create_io_queues_with(qid, client_base, None)
    }

    /// As [`Driver::create_io_queues`]; with `Some(vector)` the completion queue raises that interrupt
    /// vector on every completion.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn create_io_queues_with(
        &mut self,
        qid: u16,
        client_base: u64,
        vector: Option<u16>,
    ) -> Result<(), DriverError> {
        let q = u32::from(DEPTH - 1);
        // CDW11 of Create I/O CQ: PC (bit 0), IEN (bit 1), IV (bits 31:16).
        let cdw11 = match vector {
            Some(v) => (u32::from(v) << 16) | 0b11,
            None => 1,
        };
        self.admin(
            ADMIN_CREATE_CQ,
            0,
            client_base + layout::IOCQ,
            [(q << 16) | u32::from(qid), cdw11, 0],
        )?;
        self.admin(
            ADMIN_CREATE_SQ,
            0,
            client_base + layout::IOSQ,
            [(q << 16) | u32::from(qid), u32::from(qid) << 16, 0],
        )
    }

    /// An admin command; `prp1` is a device-side address.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn admin(
        &mut self,
        opcode: u8,
        nsid: u32,
        prp1: u64,
        cdw: [u32; 3],
    ) -> Result<(), DriverError> {
        self.submit(0, opcode, nsid, prp1, cdw)
    }

    /// Reads `blocks` blocks (at most a page) at `lba` into the segment's data buffer at `offset`, and
    /// waits for it.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        let cid = self.submit_read(lba, blocks, offset)?;
        self.wait_for(1, cid)
    }

    /// Writes `blocks` blocks (at most a page) at `lba` from the segment's data buffer at `offset`, and
    /// waits for it.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        let cid = self.submit_write(lba, blocks, offset)?;
        self.wait_for(1, cid)
    }

    /// Reads `blocks` blocks at `lba` into device-side address `addr` (any memory the device may reach:
    /// device memory, a peer's exported segment), and waits for it.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn read_to(&mut self, lba: u64, blocks: u16, addr: u64) -> Result<(), DriverError> {
        let cid = self.submit_io_at(IO_READ, lba, blocks, addr)?;
        self.wait_for(1, cid)
    }

    /// Queues a read without waiting; returns its command identifier (see [`Driver::reap`]).
    ///
    /// # Errors
    /// Queue full, or shared memory.
    pub fn submit_read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError> {
        self.submit_io(IO_READ, lba, blocks, offset)
    }

    /// Queues a write without waiting; returns its command identifier.
    ///
    /// # Errors
    /// Queue full, or shared memory.
    pub fn submit_write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError> {
        self.submit_io(IO_WRITE, lba, blocks, offset)
    }

    /// Commands submitted and not yet reaped.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Takes the next I/O completion if the device has posted one (never blocks).
    ///
    /// # Errors
    /// Shared memory.
    pub fn reap(&mut self) -> Result<Option<Completion>, DriverError> {
        self.completion(1)
    }

    /// Waits for command `cid` on queue `q` (0 admin, 1 I/O); completions of other commands met on
    /// the way are dropped, so callers that keep several in flight use [`Driver::reap`] instead.
    fn wait_for(&mut self, q: usize, cid: u16) -> Result<(), DriverError> {
        let until = Instant::now() + self.timeout;
        loop {
            if let Some(c) = self.completion(q)?
                && c.cid == cid
            {
                return match c.status {
                    SC_SUCCESS => Ok(()),
                    other => Err(DriverError::Status(other)),
                };
            }
            if Instant::now() > until {
                return Err(DriverError::Timeout(self.timeout));
            }
            std::hint::spin_loop();
        }
    }

    fn submit_io(
        &mut self,
        opcode: u8,
        lba: u64,
        blocks: u16,
        offset: u64,
    ) -> Result<u16, DriverError> {
        self.submit_io_at(opcode, lba, blocks, self.base + layout::DATA + offset)
    }

    fn submit_io_at(
        &mut self,
        opcode: u8,
        lba: u64,
        blocks: u16,
        addr: u64,
    ) -> Result<u16, DriverError> {
        if self.in_flight >= MAX_IN_FLIGHT {
            return Err(DriverError::QueueFull(self.in_flight));
        }
        let lo = u32::try_from(lba & 0xffff_ffff).unwrap_or(0);
        let hi = u32::try_from(lba >> 32).unwrap_or(0);
        let nlb = u32::from(blocks.saturating_sub(1));
        let cid = self.push(1, opcode, 1, addr, [lo, hi, nlb])?;
        self.in_flight += 1;
        Ok(cid)
    }

    /// Writes a submission entry to queue `q` (0 admin, 1 I/O) and rings its doorbell.
    fn push(
        &mut self,
        q: usize,
        opcode: u8,
        nsid: u32,
        prp1: u64,
        cdw: [u32; 3],
    ) -> Result<u16, DriverError> {
        let qid = if q == 0 { 0 } else { u64::from(self.io_qid) };
        self.cid = self.cid.wrapping_add(1);
        let mut sqe = [0u8; SQE];
        sqe[0] = opcode;
        sqe[2..4].copy_from_slice(&self.cid.to_le_bytes());
        sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe[24..32].copy_from_slice(&prp1.to_le_bytes());
        sqe[40..44].copy_from_slice(&cdw[0].to_le_bytes());
        sqe[44..48].copy_from_slice(&cdw[1].to_le_bytes());
        sqe[48..52].copy_from_slice(&cdw[2].to_le_bytes());
        let sq = if q == 0 { layout::SQ } else { layout::IOSQ };
        self.seg
            .write(sq + u64::from(self.tails[q]) * SQE as u64, &sqe)?;
        self.tails[q] = (self.tails[q] + 1) % DEPTH;
        self.set(DOORBELLS + 8 * qid, u32::from(self.tails[q]))?;
        Ok(self.cid)
    }

    /// The next completion on queue `q`, if posted; frees its entry (head doorbell).
    fn completion(&mut self, q: usize) -> Result<Option<Completion>, DriverError> {
        let qid = if q == 0 { 0 } else { u64::from(self.io_qid) };
        let cq = if q == 0 { layout::CQ } else { layout::IOCQ };
        let mut cqe = [0u8; CQE];
        self.seg
            .read(cq + u64::from(self.heads[q]) * CQE as u64, &mut cqe)?;
        let status = u16::from_le_bytes([cqe[14], cqe[15]]);
        if (status & 1 == 1) != self.phases[q] {
            return Ok(None);
        }
        self.heads[q] = (self.heads[q] + 1) % DEPTH;
        if self.heads[q] == 0 {
            self.phases[q] = !self.phases[q];
        }
        self.set(DOORBELLS + 8 * qid + 4, u32::from(self.heads[q]))?;
        if q == 1 {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        Ok(Some(Completion {
            cid: u16::from_le_bytes([cqe[12], cqe[13]]),
            status: status >> 1,
        }))
    }

    /// Submits to queue `q` and waits for the completion (admin commands: one at a time).
    fn submit(
        &mut self,
        q: usize,
        opcode: u8,
        nsid: u32,
        prp1: u64,
        cdw: [u32; 3],
    ) -> Result<(), DriverError> {
        let cid = self.push(q, opcode, nsid, prp1, cdw)?;
        self.wait_for(q, cid)
    }
}

/// The I/O side both drivers have: data buffers in the driver's segment, reads and writes on its own
/// queue pair, waited for or kept in flight.
pub trait BlockIo {
    /// The driver's segment (queues and data buffers).
    fn seg(&self) -> &Region;
    /// Reads `blocks` blocks at `lba` into the data buffer at `offset`, and waits for it.
    ///
    /// # Errors
    /// The device refused, or timeout.
    fn read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError>;
    /// Writes `blocks` blocks at `lba` from the data buffer at `offset`, and waits for it.
    ///
    /// # Errors
    /// The device refused, or timeout.
    fn write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError>;
    /// Queues a read without waiting; returns its command identifier.
    ///
    /// # Errors
    /// Queue full, or shared memory.
    fn submit_read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError>;
    /// Queues a write without waiting; returns its command identifier.
    ///
    /// # Errors
    /// Queue full, or shared memory.
    fn submit_write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError>;
    /// Takes the next completion if the device has posted one (never blocks).
    ///
    /// # Errors
    /// Shared memory.
    fn reap(&mut self) -> Result<Option<Completion>, DriverError>;
}

impl<B: Bar> BlockIo for Driver<B> {
    fn seg(&self) -> &Region {
        &self.seg
    }
    fn read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        Driver::read(self, lba, blocks, offset)
    }
    fn write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        Driver::write(self, lba, blocks, offset)
    }
    fn submit_read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError> {
        Driver::submit_read(self, lba, blocks, offset)
    }
    fn submit_write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError> {
        Driver::submit_write(self, lba, blocks, offset)
    }
    fn reap(&mut self) -> Result<Option<Completion>, DriverError> {
        Driver::reap(self)
    }
}

/// The shared-access client: I/O on the queue pair `qid` a manager created in this client's segment
/// (seen by the device at `base`). Only I/O ([`BlockIo`]) and register reads: no enable, no admin
/// commands.
#[derive(Debug)]
pub struct SharedClient<B>(Driver<B>);

impl<B: Bar> SharedClient<B> {
    /// A client of queue pair `qid`.
    pub fn new(bar: B, seg: Region, base: u64, qid: u16) -> Self {
        Self(Driver::new(bar, seg, base, qid))
    }

    /// A register, read through the client's BAR access.
    ///
    /// # Errors
    /// Shared memory failed.
    pub fn reg(&self, offset: u64) -> Result<u32, ShmError> {
        self.0.reg(offset)
    }
}

impl<B: Bar> BlockIo for SharedClient<B> {
    fn seg(&self) -> &Region {
        &self.0.seg
    }
    fn read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        self.0.read(lba, blocks, offset)
    }
    fn write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        self.0.write(lba, blocks, offset)
    }
    fn submit_read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError> {
        self.0.submit_read(lba, blocks, offset)
    }
    fn submit_write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<u16, DriverError> {
        self.0.submit_write(lba, blocks, offset)
    }
    fn reap(&mut self) -> Result<Option<Completion>, DriverError> {
        self.0.reap()
    }
}
