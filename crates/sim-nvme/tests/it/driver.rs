use pcipool_sim_nvme::regs::*;
use pcipool_sim_nvme::{Controller, DmaFault, HostMemory, Medium, RamMedium};

/// Host memory for the tests: one flat buffer at a base address; anything else faults.
struct Ram {
    base: u64,
    bytes: Vec<u8>,
    /// Interrupt vectors raised, in order.
    interrupts: Vec<u16>,
}

impl Ram {
    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, DmaFault> {
        let start = addr
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(DmaFault { addr })?;
        let end = start.checked_add(len).filter(|e| *e <= self.bytes.len());
        end.map(|e| start..e).ok_or(DmaFault { addr })
    }
}

impl HostMemory for Ram {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        let r = self.range(addr, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
    fn interrupt(&mut self, vector: u16) -> Result<(), DmaFault> {
        self.interrupts.push(vector);
        Ok(())
    }
}

const BASE: u64 = 0x1_0000_0000;
const ASQ_AT: u64 = BASE;
const ACQ_AT: u64 = BASE + 0x1000;
const IOSQ_AT: u64 = BASE + 0x2000;
const IOCQ_AT: u64 = BASE + 0x3000;
const PRP_LIST_AT: u64 = BASE + 0x4000;
const DATA_AT: u64 = BASE + 0x10000;

/// A minimal driver: one admin and one I/O queue pair of 16 entries, polled.
struct Driver {
    ctrl: Controller,
    ram: Ram,
    disk: RamMedium,
    tails: [u16; 2],
    heads: [u16; 2],
    phases: [bool; 2],
    cid: u16,
}

impl Driver {
    fn new() -> Self {
        let mut d = Self {
            ctrl: Controller::new("PCIPOOL0001", "pcipool simulated NVMe"),
            ram: Ram {
                base: BASE,
                bytes: vec![0; 0x40000],
                interrupts: Vec::new(),
            },
            disk: RamMedium::new(512, 4096),
            tails: [0; 2],
            heads: [0; 2],
            phases: [true; 2],
            cid: 0,
        };
        d.ctrl.write32(AQA, (15 << 16) | 15);
        d.ctrl.write32(ASQ, (ASQ_AT & 0xffff_ffff) as u32);
        d.ctrl.write32(ASQ + 4, (ASQ_AT >> 32) as u32);
        d.ctrl.write32(ACQ, (ACQ_AT & 0xffff_ffff) as u32);
        d.ctrl.write32(ACQ + 4, (ACQ_AT >> 32) as u32);
        d.ctrl.write32(CC, CC_EN);
        d
    }

    /// Submits one command on queue `q` and waits for its completion; returns the status code.
    fn submit(
        &mut self,
        q: usize,
        opcode: u8,
        nsid: u32,
        prp1: u64,
        prp2: u64,
        cdw: [u32; 3],
    ) -> u16 {
        self.cid += 1;
        let mut sqe = [0u8; SQE];
        sqe[0] = opcode;
        sqe[2..4].copy_from_slice(&self.cid.to_le_bytes());
        sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe[24..32].copy_from_slice(&prp1.to_le_bytes());
        sqe[32..40].copy_from_slice(&prp2.to_le_bytes());
        sqe[40..44].copy_from_slice(&cdw[0].to_le_bytes());
        sqe[44..48].copy_from_slice(&cdw[1].to_le_bytes());
        sqe[48..52].copy_from_slice(&cdw[2].to_le_bytes());
        let sq = if q == 0 { ASQ_AT } else { IOSQ_AT };
        let cq = if q == 0 { ACQ_AT } else { IOCQ_AT };
        self.ram
            .write(sq + u64::from(self.tails[q]) * SQE as u64, &sqe)
            .expect("sq in ram");
        self.tails[q] = (self.tails[q] + 1) % 16;
        self.ctrl
            .write32(DOORBELLS + 8 * q as u64, u32::from(self.tails[q]));
        self.ctrl.process(&mut self.ram, &mut self.disk);
        let mut cqe = [0u8; CQE];
        self.ram
            .read(cq + u64::from(self.heads[q]) * CQE as u64, &mut cqe)
            .expect("cq in ram");
        let status = u16::from_le_bytes([cqe[14], cqe[15]]);
        let cid = u16::from_le_bytes([cqe[12], cqe[13]]);
        assert_eq!(
            (status & 1 == 1, cid),
            (self.phases[q], self.cid),
            "completion posted with the right phase and command id"
        );
        self.heads[q] = (self.heads[q] + 1) % 16;
        if self.heads[q] == 0 {
            self.phases[q] = !self.phases[q];
        }
        self.ctrl
            .write32(DOORBELLS + 8 * q as u64 + 4, u32::from(self.heads[q]));
        status >> 1
    }

    fn create_io_queues(&mut self) -> (u16, u16) {
        let cq = self.submit(0, ADMIN_CREATE_CQ, 0, IOCQ_AT, 0, [(15 << 16) | 1, 1, 0]);
        let sq = self.submit(
            0,
            ADMIN_CREATE_SQ,
            0,
            IOSQ_AT,
            0,
            [(15 << 16) | 1, 1 << 16, 0],
        );
        (cq, sq)
    }
}

#[test]
fn enable_identify_create_queues_write_and_read_back() {
    let mut d = Driver::new();
    let ready = d.ctrl.read32(CSTS) & CSTS_RDY;
    let ident = d.submit(0, ADMIN_IDENTIFY, 0, DATA_AT, 0, [CNS_CONTROLLER, 0, 0]);
    let mut page = [0u8; 64];
    d.ram.read(DATA_AT, &mut page).expect("ram");
    let model = String::from_utf8_lossy(&page[24..64]).trim().to_owned();
    let ns = d.submit(0, ADMIN_IDENTIFY, 1, DATA_AT, 0, [CNS_NAMESPACE, 0, 0]);
    let mut nsze = [0u8; 8];
    d.ram.read(DATA_AT, &mut nsze).expect("ram");
    let queues = d.create_io_queues();
    // 24 blocks of 512 bytes = 3 pages: PRP1 + a PRP list of two entries.
    let pattern: Vec<u8> = (0..24 * 512u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    d.ram.write(DATA_AT, &pattern).expect("ram");
    let list: Vec<u8> = [DATA_AT + 0x1000, DATA_AT + 0x2000]
        .iter()
        .flat_map(|a| a.to_le_bytes())
        .collect();
    d.ram.write(PRP_LIST_AT, &list).expect("ram");
    let wrote = d.submit(1, IO_WRITE, 1, DATA_AT, PRP_LIST_AT, [100, 0, 23]);
    d.ram
        .write(DATA_AT, &vec![0; pattern.len()])
        .expect("clear");
    let read = d.submit(1, IO_READ, 1, DATA_AT, PRP_LIST_AT, [100, 0, 23]);
    let mut back = vec![0u8; pattern.len()];
    d.ram.read(DATA_AT, &mut back).expect("ram");
    let mut on_disk = vec![0u8; 512];
    d.disk.read(100, &mut on_disk).expect("disk");
    assert_eq!(
        (
            ready,
            ident,
            model.as_str(),
            ns,
            u64::from_le_bytes(nsze),
            queues,
            wrote,
            read,
            back == pattern,
            on_disk[..] == pattern[..512]
        ),
        (
            CSTS_RDY,
            SC_SUCCESS,
            "pcipool simulated NVMe",
            SC_SUCCESS,
            4096,
            (SC_SUCCESS, SC_SUCCESS),
            SC_SUCCESS,
            SC_SUCCESS,
            true,
            true
        )
    );
}

#[test]
fn errors_a_driver_must_see() {
    let mut d = Driver::new();
    d.create_io_queues();
    let bad_opcode = d.submit(0, 0x7f, 0, 0, 0, [0; 3]);
    let out_of_range = d.submit(1, IO_READ, 1, DATA_AT, 0, [4095, 0, 1]);
    let bad_namespace = d.submit(1, IO_READ, 2, DATA_AT, 0, [0, 0, 0]);
    // A data pointer outside host memory: the DMA is refused and the command says so.
    let dma_refused = d.submit(1, IO_READ, 1, 0xdead_0000, 0, [0, 0, 0]);
    let same_queue_again = d.submit(0, ADMIN_CREATE_CQ, 0, IOCQ_AT, 0, [(15 << 16) | 1, 1, 0]);
    let sq_without_cq = d.submit(
        0,
        ADMIN_CREATE_SQ,
        0,
        IOSQ_AT,
        0,
        [(15 << 16) | 2, 9 << 16, 0],
    );
    assert_eq!(
        (
            bad_opcode,
            out_of_range,
            bad_namespace,
            dma_refused,
            same_queue_again,
            sq_without_cq
        ),
        (
            SC_INVALID_OPCODE,
            SC_LBA_OUT_OF_RANGE,
            SC_INVALID_NAMESPACE,
            SC_DATA_TRANSFER_ERROR,
            SC_INVALID_QUEUE_ID,
            SC_INVALID_CQ
        )
    );
}

#[test]
fn disabling_the_controller_drops_its_queues() {
    let mut d = Driver::new();
    d.create_io_queues();
    d.ctrl.write32(CC, 0);
    let not_ready = d.ctrl.read32(CSTS) & CSTS_RDY;
    // A doorbell on a queue that no longer exists does nothing.
    d.ctrl.write32(DOORBELLS + 8, 5);
    let ran = d.ctrl.process(&mut d.ram, &mut d.disk);
    assert_eq!((not_ready, ran), (0, 0));
}

#[test]
fn a_submission_queue_the_device_cannot_fetch_is_fatal_until_reset() {
    let mut d = Driver::new();
    // Point the admin queue outside host memory, enable, ring: the fetch fails.
    d.ctrl.write32(CC, 0);
    d.ctrl.write32(ASQ, 0xdead_0000);
    d.ctrl.write32(ASQ + 4, 0);
    d.ctrl.write32(CC, CC_EN);
    d.ctrl.write32(DOORBELLS, 1);
    let ran = d.ctrl.process(&mut d.ram, &mut d.disk);
    let fatal = d.ctrl.read32(CSTS) & CSTS_CFS;
    d.ctrl.write32(CC, 0);
    let cleared = d.ctrl.read32(CSTS) & CSTS_CFS;
    assert_eq!((ran, fatal, cleared), (0, CSTS_CFS, 0));
}

#[test]
fn a_completion_queue_with_interrupts_enabled_raises_its_vector_per_completion() {
    let mut d = Driver::new();
    // Create I/O CQ 1 with IEN and vector 5; the admin queue itself was made without interrupts.
    let cq = d.submit(
        0,
        ADMIN_CREATE_CQ,
        0,
        IOCQ_AT,
        0,
        [(15 << 16) | 1, (5 << 16) | 0b11, 0],
    );
    let sq = d.submit(
        0,
        ADMIN_CREATE_SQ,
        0,
        IOSQ_AT,
        0,
        [(15 << 16) | 1, 1 << 16, 0],
    );
    let before = d.ram.interrupts.clone();
    let w = d.submit(1, IO_WRITE, 1, DATA_AT, 0, [0, 0, 0]);
    let r = d.submit(1, IO_READ, 1, DATA_AT, 0, [0, 0, 0]);
    assert_eq!(
        (cq, sq, before, w, r, d.ram.interrupts.clone()),
        (
            SC_SUCCESS,
            SC_SUCCESS,
            vec![],
            SC_SUCCESS,
            SC_SUCCESS,
            vec![5, 5]
        )
    );
}
