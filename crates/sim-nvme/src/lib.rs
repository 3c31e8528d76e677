//! An NVMe-like block device, modelled closely enough that a driver written against the NVMe base
//! specification's register and queue layout works with it: controller registers in BAR 0 (CAP, VS, CC,
//! CSTS, AQA, ASQ, ACQ, doorbells), an admin queue pair, I/O queue pairs the driver creates, Identify,
//! Read and Write with PRP data pointers (including PRP lists), and completion entries with phase tags.
//!
//! Sans-IO: the controller sees host memory only through [`HostMemory`] (in the simulator that is the
//! fabric's DMA translation onto shared memory) and its medium through [`Medium`]; nothing here touches
//! the clock or a file. A driver writes a doorbell, then the runtime calls [`Controller::process`].
//!
//! # Layout
//! - [`regs`]: register offsets and fields.
//! - [`Controller`]: the device.
#![deny(missing_docs)]

pub mod regs;

use std::collections::BTreeMap;

use regs::*;

/// A DMA access the fabric refused (unmapped, outside the device's window).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DMA to {addr:#x} refused")]
pub struct DmaFault {
    /// The device-side address.
    pub addr: u64,
}

/// Host memory as the device reaches it by DMA.
pub trait HostMemory {
    /// Reads `buf.len()` bytes at device-side address `addr`.
    ///
    /// # Errors
    /// The fabric refused the access.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault>;
    /// Writes `data` at device-side address `addr`.
    ///
    /// # Errors
    /// The fabric refused the access.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaFault>;
    /// Raises interrupt `vector` (on PCIe an MSI-X message: a posted write of the vector's data to the
    /// vector's address, which the fabric carries to whichever host the vector points at).
    ///
    /// # Errors
    /// The fabric refused the message (no host registered for the vector).
    fn interrupt(&mut self, vector: u16) -> Result<(), DmaFault>;
}

/// The medium behind the namespace: fixed-size blocks.
pub trait Medium {
    /// Block size in bytes (512 or 4096).
    fn block_size(&self) -> u32;
    /// Number of blocks.
    fn blocks(&self) -> u64;
    /// Reads whole blocks starting at `lba` into `buf`.
    ///
    /// # Errors
    /// A medium error.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Writes whole blocks starting at `lba`.
    ///
    /// # Errors
    /// A medium error.
    fn write(&mut self, lba: u64, data: &[u8]) -> std::io::Result<()>;
}

/// A medium in memory (tests and small simulations).
#[derive(Debug, Clone)]
pub struct RamMedium {
    block: u32,
    data: Vec<u8>,
}

impl RamMedium {
    /// `blocks` blocks of `block` bytes, zeroed.
    pub fn new(block: u32, blocks: u64) -> Self {
        let len = usize::try_from(u64::from(block).saturating_mul(blocks)).unwrap_or(0);
        Self {
            block,
            data: vec![0; len],
        }
    }

    fn range(&self, lba: u64, len: usize) -> std::io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(lba.saturating_mul(u64::from(self.block)))
            .map_err(|_| std::io::Error::other("LBA out of range"))?;
        let end = start.checked_add(len).filter(|e| *e <= self.data.len());
        end.map(|e| start..e)
            .ok_or_else(|| std::io::Error::other("LBA out of range"))
    }
}

impl Medium for RamMedium {
    fn block_size(&self) -> u32 {
        self.block
    }
    fn blocks(&self) -> u64 {
        self.data.len() as u64 / u64::from(self.block.max(1))
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let r = self.range(lba, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> std::io::Result<()> {
        let r = self.range(lba, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
}

/// One queue pair's submission or completion ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ring {
    base: u64,
    /// Entries (1-based count).
    size: u16,
    /// Submission: where the device reads next. Completion: where it writes next.
    head: u16,
    /// Submission: the driver's tail (doorbell). Completion: the driver's head (doorbell).
    tail: u16,
    /// Completion phase tag the device writes.
    phase: bool,
    /// Completion queues created with interrupts enabled: the vector raised per completion.
    vector: Option<u16>,
}

impl Ring {
    fn new(base: u64, size: u16) -> Self {
        Self {
            base,
            size: size.max(2),
            head: 0,
            tail: 0,
            phase: true,
            vector: None,
        }
    }
}

/// The controller.
#[derive(Debug, Clone)]
pub struct Controller {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    /// Submission queues by id (0 = admin), with the completion queue each posts to.
    sqs: BTreeMap<u16, (Ring, u16)>,
    /// Completion queues by id.
    cqs: BTreeMap<u16, Ring>,
    serial: String,
    model: String,
    /// Commands completed, for the runtime's statistics.
    pub completed: u64,
}

/// A 64-byte submission queue entry.
#[derive(Debug, Clone, Copy)]
struct Command {
    opcode: u8,
    cid: u16,
    nsid: u32,
    prp1: u64,
    prp2: u64,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
}

/// The low 16 bits (queue ids, sizes and indices are 16-bit fields of 32-bit words).
fn low16(v: u32) -> u16 {
    u16::try_from(v & 0xffff).unwrap_or(u16::MAX)
}

fn low32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX)
}

fn dword(b: &[u8], i: usize) -> u32 {
    let at = i * 4;
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn qword(b: &[u8], i: usize) -> u64 {
    u64::from(dword(b, i)) | (u64::from(dword(b, i + 1)) << 32)
}

impl Command {
    fn parse(b: &[u8; SQE]) -> Self {
        let d0 = dword(b, 0);
        Self {
            opcode: u8::try_from(d0 & 0xff).unwrap_or(u8::MAX),
            cid: low16(d0 >> 16),
            nsid: dword(b, 1),
            prp1: qword(b, 6),
            prp2: qword(b, 8),
            cdw10: dword(b, 10),
            cdw11: dword(b, 11),
            cdw12: dword(b, 12),
        }
    }
}

impl Controller {
    /// A disabled controller with its identity strings.
    pub fn new(serial: &str, model: &str) -> Self {
        Self {
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            serial: serial.to_owned(),
            model: model.to_owned(),
            completed: 0,
        }
    }

    /// Reads a 32-bit register of BAR 0 (unknown offsets read as zero).
    pub fn read32(&self, offset: u64) -> u32 {
        match offset {
            CAP => low32(CAP_VALUE),
            o if o == CAP + 4 => low32(CAP_VALUE >> 32),
            VS => VERSION,
            CC => self.cc,
            CSTS => self.csts,
            AQA => self.aqa,
            ASQ => low32(self.asq),
            o if o == ASQ + 4 => low32(self.asq >> 32),
            ACQ => low32(self.acq),
            o if o == ACQ + 4 => low32(self.acq >> 32),
            _ => 0,
        }
    }

    /// Writes a 32-bit register of BAR 0: configuration, admin queue addresses, or a doorbell.
    pub fn write32(&mut self, offset: u64, value: u32) {
        match offset {
            CC => self.set_cc(value),
            AQA => self.aqa = value,
            ASQ => self.asq = (self.asq & !0xffff_ffff) | u64::from(value),
            o if o == ASQ + 4 => {
                self.asq = (self.asq & 0xffff_ffff) | (u64::from(value) << 32);
            }
            ACQ => self.acq = (self.acq & !0xffff_ffff) | u64::from(value),
            o if o == ACQ + 4 => {
                self.acq = (self.acq & 0xffff_ffff) | (u64::from(value) << 32);
            }
            o if o >= DOORBELLS => self.doorbell(o, value),
            _ => {}
        }
    }

    fn set_cc(&mut self, value: u32) {
        let was = self.cc & CC_EN != 0;
        let now = value & CC_EN != 0;
        self.cc = value;
        if now && !was {
            // Enable: the admin queues come from AQA/ASQ/ACQ (sizes are zero-based).
            let sq = low16((self.aqa & 0xfff) + 1);
            let cq = low16(((self.aqa >> 16) & 0xfff) + 1);
            self.sqs.clear();
            self.cqs.clear();
            self.sqs.insert(0, (Ring::new(self.asq, sq), 0));
            self.cqs.insert(0, Ring::new(self.acq, cq));
            self.csts |= CSTS_RDY;
        } else if !now && was {
            // Controller reset: every queue is gone.
            self.sqs.clear();
            self.cqs.clear();
            self.csts &= !(CSTS_RDY | CSTS_CFS);
        }
        if value & CC_SHN_MASK != 0 {
            self.csts = (self.csts & !CSTS_SHST_MASK) | CSTS_SHST_COMPLETE;
        }
    }

    fn doorbell(&mut self, offset: u64, value: u32) {
        let index = (offset - DOORBELLS) / 4;
        let Ok(qid) = u16::try_from(index / 2) else {
            return;
        };
        let v = low16(value);
        if index.is_multiple_of(2) {
            if let Some((sq, _)) = self.sqs.get_mut(&qid) {
                sq.tail = v % sq.size;
            }
        } else if let Some(cq) = self.cqs.get_mut(&qid) {
            cq.tail = v % cq.size;
        }
    }

    /// Executes every submitted command (all queues, in queue order) and posts its completion. Returns
    /// how many commands ran.
    pub fn process(&mut self, mem: &mut dyn HostMemory, medium: &mut dyn Medium) -> usize {
        if self.csts & CSTS_RDY == 0 || self.csts & CSTS_CFS != 0 {
            return 0;
        }
        let mut ran = 0;
        let qids: Vec<u16> = self.sqs.keys().copied().collect();
        for qid in qids {
            while let Some((sq, cqid)) = self.sqs.get(&qid).copied() {
                if sq.head == sq.tail {
                    break;
                }
                // A full completion queue holds the submission back until the driver frees an entry.
                let Some(cq) = self.cqs.get(&cqid).copied() else {
                    break;
                };
                if (cq.head + 1) % cq.size == cq.tail {
                    break;
                }
                let mut raw = [0u8; SQE];
                let at = sq.base + u64::from(sq.head) * SQE as u64;
                let head = (sq.head + 1) % sq.size;
                if let Some((s, _)) = self.sqs.get_mut(&qid) {
                    s.head = head;
                }
                if mem.read(at, &mut raw).is_err() {
                    // The command itself cannot be fetched: there is nothing to complete, so the
                    // controller reports a fatal status and stops, as hardware does.
                    self.csts |= CSTS_CFS;
                    return ran;
                }
                let cmd = Command::parse(&raw);
                let (status, result) = if qid == 0 {
                    self.admin(&cmd, mem, medium)
                } else {
                    Self::io(&cmd, mem, medium)
                };
                self.post(mem, cqid, qid, head, cmd.cid, status, result);
                ran += 1;
                self.completed += 1;
            }
        }
        ran
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        mem: &mut dyn HostMemory,
        cqid: u16,
        sqid: u16,
        sq_head: u16,
        cid: u16,
        status: u16,
        result: u32,
    ) {
        let Some(cq) = self.cqs.get_mut(&cqid) else {
            return;
        };
        let mut cqe = [0u8; CQE];
        cqe[0..4].copy_from_slice(&result.to_le_bytes());
        cqe[8..10].copy_from_slice(&sq_head.to_le_bytes());
        cqe[10..12].copy_from_slice(&sqid.to_le_bytes());
        cqe[12..14].copy_from_slice(&cid.to_le_bytes());
        let status_field = (status << 1) | u16::from(cq.phase);
        cqe[14..16].copy_from_slice(&status_field.to_le_bytes());
        let at = cq.base + u64::from(cq.head) * CQE as u64;
        let _ = mem.write(at, &cqe);
        cq.head = (cq.head + 1) % cq.size;
        if cq.head == 0 {
            cq.phase = !cq.phase;
        }
        if let Some(vector) = cq.vector {
            // A refused message is lost, as a posted write to an unmapped address is.
            let _ = mem.interrupt(vector);
        }
    }

    fn admin(
        &mut self,
        cmd: &Command,
        mem: &mut dyn HostMemory,
        medium: &mut dyn Medium,
    ) -> (u16, u32) {
        match cmd.opcode {
            ADMIN_IDENTIFY => {
                let mut page = vec![0u8; PAGE];
                match cmd.cdw10 & 0xff {
                    CNS_CONTROLLER => {
                        page[0..2].copy_from_slice(&VENDOR.to_le_bytes());
                        put_str(&mut page[4..24], &self.serial);
                        put_str(&mut page[24..64], &self.model);
                        page[516..520].copy_from_slice(&1u32.to_le_bytes());
                    }
                    CNS_NAMESPACE if cmd.nsid == 1 => {
                        let blocks = medium.blocks();
                        page[0..8].copy_from_slice(&blocks.to_le_bytes());
                        page[8..16].copy_from_slice(&blocks.to_le_bytes());
                        page[16..24].copy_from_slice(&blocks.to_le_bytes());
                        let lbads = medium.block_size().trailing_zeros();
                        page[128..132].copy_from_slice(&(lbads << 16).to_le_bytes());
                    }
                    _ => return (SC_INVALID_FIELD, 0),
                }
                match transfer_out(mem, cmd.prp1, cmd.prp2, &page) {
                    Ok(()) => (SC_SUCCESS, 0),
                    Err(_) => (SC_DATA_TRANSFER_ERROR, 0),
                }
            }
            ADMIN_CREATE_CQ => {
                let qid = low16(cmd.cdw10);
                let size = low16(cmd.cdw10 >> 16).saturating_add(1);
                if qid == 0 || self.cqs.contains_key(&qid) {
                    return (SC_INVALID_QUEUE_ID, 0);
                }
                let mut ring = Ring::new(cmd.prp1, size);
                // CDW11: IEN (bit 1) enables interrupt vector IV (bits 31:16).
                if cmd.cdw11 & 0b10 != 0 {
                    ring.vector = Some(low16(cmd.cdw11 >> 16));
                }
                self.cqs.insert(qid, ring);
                (SC_SUCCESS, 0)
            }
            ADMIN_CREATE_SQ => {
                let qid = low16(cmd.cdw10);
                let size = low16(cmd.cdw10 >> 16).saturating_add(1);
                let cqid = low16(cmd.cdw11 >> 16);
                if qid == 0 || self.sqs.contains_key(&qid) {
                    return (SC_INVALID_QUEUE_ID, 0);
                }
                if !self.cqs.contains_key(&cqid) || cqid == 0 {
                    return (SC_INVALID_CQ, 0);
                }
                self.sqs.insert(qid, (Ring::new(cmd.prp1, size), cqid));
                (SC_SUCCESS, 0)
            }
            ADMIN_DELETE_SQ => {
                let qid = low16(cmd.cdw10);
                if qid == 0 || self.sqs.remove(&qid).is_none() {
                    return (SC_INVALID_QUEUE_ID, 0);
                }
                (SC_SUCCESS, 0)
            }
            ADMIN_DELETE_CQ => {
                let qid = low16(cmd.cdw10);
                if qid == 0 || self.sqs.values().any(|(_, c)| *c == qid) {
                    return (SC_INVALID_QUEUE_ID, 0);
                }
                if self.cqs.remove(&qid).is_none() {
                    return (SC_INVALID_QUEUE_ID, 0);
                }
                (SC_SUCCESS, 0)
            }
            _ => (SC_INVALID_OPCODE, 0),
        }
    }

    fn io(cmd: &Command, mem: &mut dyn HostMemory, medium: &mut dyn Medium) -> (u16, u32) {
        if cmd.nsid != 1 {
            return (SC_INVALID_NAMESPACE, 0);
        }
        let slba = u64::from(cmd.cdw10) | (u64::from(cmd.cdw11) << 32);
        let nlb = u64::from(cmd.cdw12 & 0xffff) + 1;
        if slba
            .checked_add(nlb)
            .is_none_or(|end| end > medium.blocks())
        {
            return (SC_LBA_OUT_OF_RANGE, 0);
        }
        let Ok(len) = usize::try_from(nlb * u64::from(medium.block_size())) else {
            return (SC_INVALID_FIELD, 0);
        };
        match cmd.opcode {
            IO_READ => {
                let mut data = vec![0u8; len];
                if medium.read(slba, &mut data).is_err() {
                    return (SC_INTERNAL, 0);
                }
                match transfer_out(mem, cmd.prp1, cmd.prp2, &data) {
                    Ok(()) => (SC_SUCCESS, 0),
                    Err(_) => (SC_DATA_TRANSFER_ERROR, 0),
                }
            }
            IO_WRITE => {
                let mut data = vec![0u8; len];
                if transfer_in(mem, cmd.prp1, cmd.prp2, &mut data).is_err() {
                    return (SC_DATA_TRANSFER_ERROR, 0);
                }
                match medium.write(slba, &data) {
                    Ok(()) => (SC_SUCCESS, 0),
                    Err(_) => (SC_INTERNAL, 0),
                }
            }
            IO_FLUSH => (SC_SUCCESS, 0),
            _ => (SC_INVALID_OPCODE, 0),
        }
    }
}

fn put_str(field: &mut [u8], s: &str) {
    field.fill(b' ');
    for (d, c) in field.iter_mut().zip(s.bytes()) {
        *d = c;
    }
}

/// The host pages a transfer of `len` bytes covers, from PRP1 and PRP2 (a second page or a PRP list,
/// chained through the last entry of each full list page).
fn pages(
    mem: &mut dyn HostMemory,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<Vec<(u64, usize)>, DmaFault> {
    let page = PAGE as u64;
    // Bytes left in PRP1's page (an offset is allowed there), at most the whole transfer.
    let first = usize::try_from((page - (prp1 % page)).min(len as u64)).unwrap_or(len);
    let mut out = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return Ok(out);
    }
    if left <= PAGE {
        out.push((prp2, left));
        return Ok(out);
    }
    let mut list = prp2;
    loop {
        let mut entries = [0u8; PAGE];
        mem.read(list, &mut entries)?;
        let count = PAGE / 8;
        for i in 0..count {
            let entry = qword(&entries, i * 2);
            // The last entry of a full list page points at the next list page.
            if i == count - 1 && left > PAGE {
                list = entry;
                break;
            }
            let n = left.min(PAGE);
            out.push((entry, n));
            left -= n;
            if left == 0 {
                return Ok(out);
            }
        }
    }
}

fn transfer_out(
    mem: &mut dyn HostMemory,
    prp1: u64,
    prp2: u64,
    data: &[u8],
) -> Result<(), DmaFault> {
    let mut at = 0;
    for (addr, n) in pages(mem, prp1, prp2, data.len())? {
        mem.write(addr, &data[at..at + n])?;
        at += n;
    }
    Ok(())
}

fn transfer_in(
    mem: &mut dyn HostMemory,
    prp1: u64,
    prp2: u64,
    data: &mut [u8],
) -> Result<(), DmaFault> {
    let mut at = 0;
    for (addr, n) in pages(mem, prp1, prp2, data.len())? {
        mem.read(addr, &mut data[at..at + n])?;
        at += n;
    }
    Ok(())
}
