use std::path::Path;
use std::time::{Duration, Instant};

use pcipool_datapath::SharedNvme;
use pcipool_nvme::regs::*;
use pcipool_nvme::{Controller, Medium, RamMedium};
use pcipool_shm::Region;
use pcipool_shm::window::{Window, WindowTable};

/// Where the device sees the driver's segment (its DMA window).
const DEVICE_BASE: u64 = 0x1_0000_0000;
const SQ: u64 = 0x0000;
const CQ: u64 = 0x1000;
const IOSQ: u64 = 0x2000;
const IOCQ: u64 = 0x3000;
const DATA: u64 = 0x4000;

/// The device process: serves BAR "bar0" until the control region says stop, then reports what is on
/// its medium at LBA 8 so the parent can check the data really reached the device.
#[test]
#[ignore = "run by a_driver_in_another_process_uses_the_device in a child process"]
fn device_process() {
    let dir = std::env::var("PCIPOOL_DATAPATH_DIR").expect("started by the parent test");
    let dir = Path::new(&dir);
    let control = Region::open(dir, "control").expect("control");
    let mut dev = SharedNvme::create(
        dir,
        "bar0",
        Controller::new("PCIPOOL-DP", "pcipool shared NVMe"),
        RamMedium::new(512, 1024),
    )
    .expect("bar");
    dev.dma.map(dir, "segment", DEVICE_BASE).expect("segment");
    control.store_u32(0, 1).expect("ready");
    while control.load_u32(4).expect("stop?") == 0 {
        if dev.poll().expect("poll") == 0 {
            std::thread::yield_now();
        }
    }
    let mut block = [0u8; 512];
    dev.medium().read(8, &mut block).expect("medium");
    control.write(64, &block).expect("report");
    control.store_u32(8, 1).expect("done");
}

struct Driver {
    bar: Window,
    seg: Region,
    tails: [u16; 2],
    heads: [u16; 2],
    phases: [bool; 2],
    cid: u16,
}

impl Driver {
    fn wait(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    fn reg(&self, off: u64) -> u32 {
        self.bar.read_u32(off).expect("register")
    }

    fn set(&self, off: u64, v: u32) {
        self.bar.write_u32(off, v).expect("register");
    }

    fn submit(&mut self, q: usize, opcode: u8, nsid: u32, prp1: u64, cdw: [u32; 3]) -> u16 {
        self.cid += 1;
        let mut sqe = [0u8; SQE];
        sqe[0] = opcode;
        sqe[2..4].copy_from_slice(&self.cid.to_le_bytes());
        sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe[24..32].copy_from_slice(&(DEVICE_BASE + prp1).to_le_bytes());
        sqe[40..44].copy_from_slice(&cdw[0].to_le_bytes());
        sqe[44..48].copy_from_slice(&cdw[1].to_le_bytes());
        sqe[48..52].copy_from_slice(&cdw[2].to_le_bytes());
        let (sq, cq) = if q == 0 { (SQ, CQ) } else { (IOSQ, IOCQ) };
        self.seg
            .write(sq + u64::from(self.tails[q]) * SQE as u64, &sqe)
            .expect("sqe");
        self.tails[q] = (self.tails[q] + 1) % 16;
        self.set(DOORBELLS + 8 * q as u64, u32::from(self.tails[q]));
        let at = cq + u64::from(self.heads[q]) * CQE as u64;
        let phase = self.phases[q];
        self.wait("a completion", |d| {
            let mut cqe = [0u8; CQE];
            d.seg.read(at, &mut cqe).expect("cqe");
            (u16::from_le_bytes([cqe[14], cqe[15]]) & 1 == 1) == phase
        });
        let mut cqe = [0u8; CQE];
        self.seg.read(at, &mut cqe).expect("cqe");
        self.heads[q] = (self.heads[q] + 1) % 16;
        if self.heads[q] == 0 {
            self.phases[q] = !self.phases[q];
        }
        self.set(DOORBELLS + 8 * q as u64 + 4, u32::from(self.heads[q]));
        u16::from_le_bytes([cqe[14], cqe[15]]) >> 1
    }
}

#[test]
fn a_driver_in_another_process_uses_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Region::create(dir.path(), "control", 4096).expect("control");
    let seg = Region::create(dir.path(), "segment", 0x10000).expect("segment");
    let table = WindowTable::create(dir.path(), "windows", 1).expect("table");
    let mut device = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "two_processes::device_process",
            "--ignored",
            "--nocapture",
        ])
        .env("PCIPOOL_DATAPATH_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("device process starts");
    let until = Instant::now() + Duration::from_secs(30);
    while control.load_u32(0).expect("ready?") != 1 {
        assert!(Instant::now() < until, "device process never came up");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The lender maps BAR 0 for this borrower.
    let generation = table.open_slot(0).expect("window");
    let bar = Window::attach(dir.path(), "windows", 0, generation, "bar0").expect("attach");
    let mut d = Driver {
        bar,
        seg,
        tails: [0; 2],
        heads: [0; 2],
        phases: [true; 2],
        cid: 0,
    };
    let version = d.reg(VS);
    d.set(AQA, (15 << 16) | 15);
    d.set(
        ASQ,
        u32::try_from((DEVICE_BASE + SQ) & 0xffff_ffff).expect("low"),
    );
    d.set(
        ASQ + 4,
        u32::try_from((DEVICE_BASE + SQ) >> 32).expect("high"),
    );
    d.set(
        ACQ,
        u32::try_from((DEVICE_BASE + CQ) & 0xffff_ffff).expect("low"),
    );
    d.set(
        ACQ + 4,
        u32::try_from((DEVICE_BASE + CQ) >> 32).expect("high"),
    );
    d.set(CC, CC_EN);
    d.wait("the controller ready", |d| d.reg(CSTS) & CSTS_RDY != 0);
    let identify = d.submit(0, ADMIN_IDENTIFY, 0, DATA, [CNS_CONTROLLER, 0, 0]);
    let mut model = [0u8; 40];
    d.seg.read(DATA + 24, &mut model).expect("identify data");
    let cq = d.submit(0, ADMIN_CREATE_CQ, 0, IOCQ, [(15 << 16) | 1, 1, 0]);
    let sq = d.submit(0, ADMIN_CREATE_SQ, 0, IOSQ, [(15 << 16) | 1, 1 << 16, 0]);
    let pattern: Vec<u8> = (0..512u32)
        .map(|i| u8::try_from(i % 253).unwrap_or(0))
        .collect();
    d.seg.write(DATA, &pattern).expect("buffer");
    let wrote = d.submit(1, IO_WRITE, 1, DATA, [8, 0, 0]);
    d.seg.write(DATA, &[0u8; 512]).expect("clear");
    let read = d.submit(1, IO_READ, 1, DATA, [8, 0, 0]);
    let mut back = vec![0u8; 512];
    d.seg.read(DATA, &mut back).expect("buffer");
    // The lender revokes the BAR mapping: the driver's accesses stop reaching the device.
    table.close_slot(0).expect("revoke");
    let after_revoke = d.reg(CSTS);
    control.store_u32(4, 1).expect("stop");
    let status = device.wait().expect("device process ends");
    let mut on_medium = vec![0u8; 512];
    control.read(64, &mut on_medium).expect("report");
    assert_eq!(
        (
            version,
            identify,
            String::from_utf8_lossy(&model).trim().to_owned(),
            (cq, sq, wrote, read),
            back == pattern,
            on_medium == pattern,
            after_revoke,
            status.success(),
        ),
        (
            VERSION,
            SC_SUCCESS,
            "pcipool shared NVMe".to_owned(),
            (SC_SUCCESS, SC_SUCCESS, SC_SUCCESS, SC_SUCCESS),
            true,
            true,
            u32::MAX,
            true
        )
    );
}
