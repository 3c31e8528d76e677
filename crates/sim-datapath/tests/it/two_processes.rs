use std::path::Path;
use std::time::{Duration, Instant};

use pcipool_sim_datapath::SharedNvme;
use pcipool_sim_datapath::driver::{BlockIo, Driver, SharedClient, layout};
use pcipool_sim_nvme::regs::*;
use pcipool_sim_nvme::{Controller, Medium, RamMedium};
use pcipool_sim_shm::Region;
use pcipool_sim_shm::window::{Window, WindowTable};

/// Where the device sees the driver's segment (its DMA window).
const DEVICE_BASE: u64 = 0x1_0000_0000;
const DATA: u64 = layout::DATA;

/// The device process: serves BAR "bar0" until the control region says stop, then reports what is on
/// its medium at LBA 8 so the parent can check the data really reached the device.
#[test]
#[ignore = "run by the tests of this file in a child process"]
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
    // Segments to map: "name@base,name@base" (default: the single driver's segment).
    let segments = std::env::var("PCIPOOL_DATAPATH_SEGMENTS")
        .unwrap_or_else(|_| format!("segment@{DEVICE_BASE}"));
    for entry in segments.split(',') {
        let (name, base) = entry.split_once('@').expect("name@base");
        dev.dma
            .map(dir, name, base.parse().expect("base"))
            .expect("segment");
    }
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

/// Starts the device process with the segments `name@base,...` and waits for it.
fn start_device(dir: &Path, control: &Region, segments: &str) -> std::process::Child {
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "two_processes::device_process",
            "--ignored",
            "--nocapture",
        ])
        .env("PCIPOOL_DATAPATH_DIR", dir)
        .env("PCIPOOL_DATAPATH_SEGMENTS", segments)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("device process starts");
    let until = Instant::now() + Duration::from_secs(30);
    while control.load_u32(0).expect("ready?") != 1 {
        assert!(Instant::now() < until, "device process never came up");
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

#[test]
fn a_driver_in_another_process_uses_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Region::create(dir.path(), "control", 4096).expect("control");
    let seg = Region::create(dir.path(), "segment", 0x10000).expect("segment");
    let table = WindowTable::create(dir.path(), "windows", 1).expect("table");
    let mut device = start_device(dir.path(), &control, &format!("segment@{DEVICE_BASE}"));
    // The lender maps BAR 0 for this borrower.
    let generation = table.open_slot(0).expect("window");
    let bar = Window::attach(dir.path(), "windows", 0, generation, "bar0").expect("attach");
    let mut d = Driver::new(bar, seg, DEVICE_BASE, 1);
    let version = d.reg(VS).expect("VS");
    d.enable().expect("enable");
    let identify = d.admin(
        ADMIN_IDENTIFY,
        0,
        DEVICE_BASE + DATA,
        [CNS_CONTROLLER, 0, 0],
    );
    let mut model = [0u8; 40];
    d.seg.read(DATA + 24, &mut model).expect("identify data");
    let queues = d.create_io_queues(1, DEVICE_BASE);
    let pattern: Vec<u8> = (0..512u32)
        .map(|i| u8::try_from(i % 253).unwrap_or(0))
        .collect();
    d.seg.write(DATA, &pattern).expect("buffer");
    let wrote = d.write(8, 1, 0);
    d.seg.write(DATA, &[0u8; 512]).expect("clear");
    let read = d.read(8, 1, 0);
    let mut back = vec![0u8; 512];
    d.seg.read(DATA, &mut back).expect("buffer");
    // The lender revokes the BAR mapping: the driver's accesses stop reaching the device.
    table.close_slot(0).expect("revoke");
    let after_revoke = d.reg(CSTS).expect("CSTS");
    control.store_u32(4, 1).expect("stop");
    let status = device.wait().expect("device process ends");
    let mut on_medium = vec![0u8; 512];
    control.read(64, &mut on_medium).expect("report");
    assert_eq!(
        (
            version,
            identify.is_ok(),
            String::from_utf8_lossy(&model).trim().to_owned(),
            (queues.is_ok(), wrote.is_ok(), read.is_ok()),
            back == pattern,
            on_medium == pattern,
            after_revoke,
            status.success(),
        ),
        (
            VERSION,
            true,
            "pcipool shared NVMe".to_owned(),
            (true, true, true),
            true,
            true,
            u32::MAX,
            true
        )
    );
}

const CLIENTS: u32 = 4;

fn client_base(i: u32) -> u64 {
    0x2_0000_0000 + u64::from(i) * 0x1000_0000
}

/// A shared-access client: uses the I/O queue pair the manager created for it, writes its own blocks and
/// reads them back, and reports in the control region (1 = intact, 2 = corrupted, 3 = an error).
#[test]
#[ignore = "run by four_hosts_share_one_device_each_with_its_own_queue_pair in child processes"]
fn client_process() {
    let env = |k: &str| std::env::var(k).expect("started by the parent test");
    let dir = env("PCIPOOL_DATAPATH_DIR");
    let dir = Path::new(&dir);
    let i: u32 = env("PCIPOOL_CLIENT").parse().expect("index");
    let generation: u32 = env("PCIPOOL_GENERATION").parse().expect("generation");
    let control = Region::open(dir, "control").expect("control");
    let bar = Window::attach(dir, "windows", i + 1, generation, "bar0").expect("attach");
    let seg = Region::open(dir, &format!("client{i}")).expect("segment");
    let base = client_base(i);
    let mut d = SharedClient::new(bar, seg, base, u16::try_from(i + 1).expect("qid"));
    // Eight blocks of 512 bytes: one page, PRP1 only. Each client its own LBA range and its own bytes.
    let pattern: Vec<u8> = (0..4096u32)
        .map(|b| u8::try_from((b + 61 * i) % 251).unwrap_or(0))
        .collect();
    let lba = 64 * i;
    let mut result = 1;
    for round in 0..20u32 {
        d.seg().write(DATA, &pattern).expect("buffer");
        let w = d.write(u64::from(lba + round % 4 * 8), 8, 0);
        d.seg().write(DATA, &[0u8; 4096]).expect("clear");
        let r = d.read(u64::from(lba + round % 4 * 8), 8, 0);
        let mut back = vec![0u8; 4096];
        d.seg().read(DATA, &mut back).expect("buffer");
        if w.is_err() || r.is_err() {
            result = 3;
            break;
        }
        if back != pattern {
            result = 2;
            break;
        }
    }
    control
        .store_u32(16 + 4 * u64::from(i), result)
        .expect("report");
}

#[test]
fn four_hosts_share_one_device_each_with_its_own_queue_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = Region::create(dir.path(), "control", 4096).expect("control");
    let seg = Region::create(dir.path(), "segment", 0x10000).expect("manager segment");
    let mut segments = vec![format!("segment@{DEVICE_BASE}")];
    for i in 0..CLIENTS {
        Region::create(dir.path(), &format!("client{i}"), 0x10000).expect("client segment");
        segments.push(format!("client{i}@{}", client_base(i)));
    }
    let table = WindowTable::create(dir.path(), "windows", CLIENTS + 1).expect("table");
    let mut device = start_device(dir.path(), &control, &segments.join(","));
    // The manager (the exclusive holder that initialises the device) creates every client's queues.
    let generation = table.open_slot(0).expect("window");
    let bar = Window::attach(dir.path(), "windows", 0, generation, "bar0").expect("attach");
    let mut manager = Driver::new(bar, seg, DEVICE_BASE, 1);
    manager.enable().expect("enable");
    let mut created = Vec::new();
    for i in 0..CLIENTS {
        let qid = u16::try_from(i + 1).expect("qid");
        created.push(manager.create_io_queues(qid, client_base(i)).is_ok());
    }
    // Then the clients run at the same time, each in its own process with its own window on BAR 0.
    let clients: Vec<std::process::Child> = (0..CLIENTS)
        .map(|i| {
            let generation = table.open_slot(i + 1).expect("client window");
            std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "two_processes::client_process",
                    "--ignored",
                    "--nocapture",
                ])
                .env("PCIPOOL_DATAPATH_DIR", dir.path())
                .env("PCIPOOL_CLIENT", i.to_string())
                .env("PCIPOOL_GENERATION", generation.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("client starts")
        })
        .collect();
    let mut exits = Vec::new();
    for mut c in clients {
        exits.push(c.wait().expect("client ends").success());
    }
    let results: Vec<u32> = (0..CLIENTS)
        .map(|i| control.load_u32(16 + 4 * u64::from(i)).expect("result"))
        .collect();
    control.store_u32(4, 1).expect("stop");
    let device_ok = device.wait().expect("device ends").success();
    assert_eq!(
        (created.iter().all(|ok| *ok), exits, results, device_ok),
        (true, vec![true; 4], vec![1; 4], true)
    );
}
