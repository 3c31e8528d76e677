//! A small polled NVMe driver over any BAR access ([`Bar`]): what the native-driver path and the
//! shared-access clients of the simulated data path use. Queues and buffers live in the driver's own
//! shared segment; the device reaches the segment at `base` (its DMA window).

use std::time::{Duration, Instant};

use pcipool_nvme::regs::*;
use pcipool_shm::{Region, ShmError};

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

impl Bar for pcipool_shm::window::Window {
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
    /// Data buffers.
    pub const DATA: u64 = 0x4000;
}

/// Entries per queue.
const DEPTH: u16 = 16;

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
        let q = u32::from(DEPTH - 1);
        self.admin(
            ADMIN_CREATE_CQ,
            0,
            client_base + layout::IOCQ,
            [(q << 16) | u32::from(qid), 1, 0],
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

    /// Reads `blocks` blocks (at most a page) at `lba` into the segment's data buffer at `offset`.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn read(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        self.io(IO_READ, lba, blocks, offset)
    }

    /// Writes `blocks` blocks (at most a page) at `lba` from the segment's data buffer at `offset`.
    ///
    /// # Errors
    /// The device refused, or timeout.
    pub fn write(&mut self, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        self.io(IO_WRITE, lba, blocks, offset)
    }

    fn io(&mut self, opcode: u8, lba: u64, blocks: u16, offset: u64) -> Result<(), DriverError> {
        let lo = u32::try_from(lba & 0xffff_ffff).unwrap_or(0);
        let hi = u32::try_from(lba >> 32).unwrap_or(0);
        let nlb = u32::from(blocks.saturating_sub(1));
        self.submit(
            1,
            opcode,
            1,
            self.base + layout::DATA + offset,
            [lo, hi, nlb],
        )
    }

    fn submit(
        &mut self,
        q: usize,
        opcode: u8,
        nsid: u32,
        prp1: u64,
        cdw: [u32; 3],
    ) -> Result<(), DriverError> {
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
        let (sq, cq) = if q == 0 {
            (layout::SQ, layout::CQ)
        } else {
            (layout::IOSQ, layout::IOCQ)
        };
        self.seg
            .write(sq + u64::from(self.tails[q]) * SQE as u64, &sqe)?;
        self.tails[q] = (self.tails[q] + 1) % DEPTH;
        self.set(DOORBELLS + 8 * qid, u32::from(self.tails[q]))?;
        let at = cq + u64::from(self.heads[q]) * CQE as u64;
        let until = Instant::now() + self.timeout;
        let mut cqe = [0u8; CQE];
        loop {
            self.seg.read(at, &mut cqe)?;
            if (u16::from_le_bytes([cqe[14], cqe[15]]) & 1 == 1) == self.phases[q] {
                break;
            }
            if Instant::now() > until {
                return Err(DriverError::Timeout(self.timeout));
            }
            std::hint::spin_loop();
        }
        self.heads[q] = (self.heads[q] + 1) % DEPTH;
        if self.heads[q] == 0 {
            self.phases[q] = !self.phases[q];
        }
        self.set(DOORBELLS + 8 * qid + 4, u32::from(self.heads[q]))?;
        match u16::from_le_bytes([cqe[14], cqe[15]]) >> 1 {
            SC_SUCCESS => Ok(()),
            other => Err(DriverError::Status(other)),
        }
    }
}
