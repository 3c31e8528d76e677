//! The fabric's data-path service in one process: grants per lease, and what ending them does.

use std::collections::BTreeSet;
use std::time::Duration;

use pcipool_sim_datapath::driver::{Driver, DriverError, layout};
use pcipool_sim_datapath::service::{DataPath, DataPathError, Grant, Idle, Placement};
use pcipool_sim_nvme::regs::{CSTS, CSTS_RDY};
use pcipool_sim_shm::Region;
use pcipool_sim_shm::window::Window;

const DEV: &str = "n1:0000:03:00.0";

fn service() -> (tempfile::TempDir, DataPath) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dp = DataPath::new(dir.path()).expect("service");
    dp.add_nvme(DEV, 512, 4096, Idle::Sleep(Duration::from_micros(200)))
        .expect("device");
    (dir, dp)
}

/// The application every test speaks for (the HTTP layer derives it from the caller's token).
const APP: &str = "app";

/// A host's segment, made for [`APP`] as the access crate has it made.
fn segment(dp: &mut DataPath, host: &str, name: &str) -> Region {
    let file = dp
        .create_segment(APP, host, name, layout::SEGMENT)
        .expect("segment");
    Region::open(dp.dir(), &file).expect("map")
}

fn bar(dp: &mut DataPath, lease: u64, host: &str) -> Window {
    let g = dp.map_bar(lease, DEV, host, APP).expect("bar window");
    Window::attach(dp.dir(), &g.table, g.slot, g.key, &g.region).expect("attach")
}

/// Lease 7 on n2: BAR window, own segment for DMA, a driver doing I/O through both. After the lease is
/// unmapped, the same window reads all ones and the device's DMA to the segment is refused.
#[test]
fn a_lease_drives_the_device_and_nothing_works_after_it_is_unmapped() {
    let (_dir, mut dp) = service();
    let w = bar(&mut dp, 7, "n2");
    let seg = segment(&mut dp, "n2", "queues");
    let base = dp
        .map_segment(7, DEV, "n2", APP, "n2", "queues")
        .expect("dma");
    let mut d = Driver::new(w, seg, base, 1);
    d.enable().expect("enable");
    d.create_io_queues(1, base).expect("queues");
    d.seg.write(layout::DATA, &[0x5a; 512]).expect("buffer");
    d.write(9, 1, 0).expect("write");
    let mut on_medium = [0u8; 512];
    dp.read_medium(DEV, 9, &mut on_medium).expect("medium");
    let before = dp.faults();
    assert!(dp.unmap(7, "test"));
    let after_unmap_csts = d.reg(CSTS).expect("read");
    let again = dp.unmap(7, "test");
    assert_eq!(
        (
            on_medium == [0x5a; 512],
            before,
            after_unmap_csts,
            again,
            dp.faults().0 > before.0,
            dp.mapped_leases().count()
        ),
        (true, (0, 0), u32::MAX, false, true, 0)
    );
}

/// A segment mapped for DMA by one lease, then unmapped while a command still points at it: the device's
/// DMA is refused (counted) and the command fails with a transfer error instead of touching memory.
#[test]
fn the_device_cannot_reach_a_segment_no_lease_mapped() {
    let (_dir, mut dp) = service();
    let w = bar(&mut dp, 1, "n2");
    let seg = segment(&mut dp, "n2", "q");
    let base = dp.map_segment(1, DEV, "n2", APP, "n2", "q").expect("dma");
    let data = segment(&mut dp, "n2", "data");
    let data_base = dp
        .map_segment(1, DEV, "n2", APP, "n2", "data")
        .expect("dma");
    let mut d = Driver::new(w, seg, base, 1);
    d.enable().expect("enable");
    d.create_io_queues(1, base).expect("queues");
    // The driver's own buffer works; then the data segment's mapping is given back.
    assert!(dp.release(1, APP, Grant::Dma(data_base)).expect("mine"));
    data.write(0, &[0x11; 512]).expect("fill");
    // Point a write at the data segment's old device address: the device cannot fetch it.
    let offset = data_base - (base + layout::DATA);
    let refused = d.write(3, 1, offset);
    let mut on_medium = [0u8; 512];
    dp.read_medium(DEV, 3, &mut on_medium).expect("medium");
    assert_eq!(
        (
            matches!(refused, Err(DriverError::Status(0x04))),
            on_medium == [0u8; 512],
            dp.faults().1 > 0
        ),
        (true, true, true)
    );
}

/// Peer-to-peer needs the owner's export; only the segment's maker may export it, map it as its own
/// or delete it, whatever host another application claims to be on.
#[test]
fn a_peer_segment_needs_its_owners_export_and_only_its_maker_controls_it() {
    let (_dir, mut dp) = service();
    let _peer = segment(&mut dp, "n3", "results");
    let before = dp.map_segment(4, DEV, "n2", "bob", "n3", "results");
    let export_by_other = dp.export("bob", "n3", "results");
    let own_by_other = dp.map_segment(5, DEV, "n3", "bob", "n3", "results");
    let remake_by_other = dp.create_segment("bob", "n3", "results", 4096);
    let delete_by_other = dp.delete_segment("bob", "n3", "results");
    dp.export(APP, "n3", "results").expect("export");
    let after = dp.map_segment(4, DEV, "n2", "bob", "n3", "results");
    let missing = dp.export(APP, "n3", "nothing");
    assert_eq!(
        (
            matches!(before, Err(DataPathError::NotExported { .. })),
            matches!(export_by_other, Err(DataPathError::NotOwner(_))),
            matches!(own_by_other, Err(DataPathError::NotOwner(_))),
            matches!(remake_by_other, Err(DataPathError::NotOwner(_))),
            matches!(delete_by_other, Err(DataPathError::NotOwner(_))),
            after.is_ok(),
            matches!(missing, Err(DataPathError::NoSegment { .. }))
        ),
        (true, true, true, true, true, true, true)
    );
}

#[test]
fn a_lease_stays_with_its_device_and_host_and_names_stay_plain() {
    let (_dir, mut dp) = service();
    let _ = bar(&mut dp, 5, "n2");
    let other_host = dp.map_bar(5, DEV, "n3", APP);
    let other_device = dp.map_bar(5, "n1:0000:04:00.0", "n2", APP);
    let other_app = dp.map_bar(5, DEV, "n2", "bob");
    let give_back_by_other = dp.unmap_for(5, "bob");
    let escape = dp.map_segment(6, DEV, "n2", APP, "n2", "../windows");
    let huge = dp.device_memory(6, DEV, "n2", APP, 2 << 30, Placement::NearHost);
    assert_eq!(
        (
            matches!(other_host, Err(DataPathError::LeaseMismatch { .. })),
            matches!(other_device, Err(DataPathError::NoDevice(_))),
            matches!(other_app, Err(DataPathError::NotOwner(_))),
            matches!(give_back_by_other, Err(DataPathError::NotOwner(_))),
            matches!(escape, Err(DataPathError::BadName(_))),
            matches!(huge, Err(DataPathError::BadSize(_)))
        ),
        (true, true, true, true, true, true)
    );
}

/// Device memory near the device is reached through a window (revocable); near the host directly. Both
/// are where the device's DMA lands, and both go when the lease does.
#[test]
fn device_memory_is_placed_as_hinted_and_removed_with_the_lease() {
    let (dir, mut dp) = service();
    let w = bar(&mut dp, 2, "n2");
    let seg = segment(&mut dp, "n2", "q");
    let base = dp.map_segment(2, DEV, "n2", APP, "n2", "q").expect("dma");
    let near_device = dp
        .device_memory(2, DEV, "n2", APP, 0x1000, Placement::NearDevice)
        .expect("near device");
    let near_host = dp
        .device_memory(2, DEV, "n2", APP, 0x1000, Placement::NearHost)
        .expect("near host");
    let g = near_device
        .window
        .clone()
        .expect("a window near the device");
    let through = Window::attach(dir.path(), &g.table, g.slot, g.key, &g.region).expect("attach");
    let direct = Region::open(dir.path(), &near_host.region).expect("open");
    let mut d = Driver::new(w, seg, base, 1);
    d.enable().expect("enable");
    d.create_io_queues(1, base).expect("queues");
    d.seg.write(layout::DATA, &[0x77; 512]).expect("buffer");
    d.write(0, 1, 0).expect("write");
    // Read block 0 into each device memory (offsets relative to the driver's data area).
    d.read_to(0, 1, near_device.device_addr)
        .expect("read into device memory");
    d.read_to(0, 1, near_host.device_addr)
        .expect("read into host memory");
    let mut a = [0u8; 512];
    let mut b = [0u8; 512];
    through.read(0, &mut a).expect("window");
    direct.read(0, &mut b).expect("direct");
    dp.unmap(2, "test");
    let mut gone = [0u8; 4];
    through.read(0, &mut gone).expect("window");
    assert_eq!(
        (
            a == [0x77; 512],
            b == [0x77; 512],
            near_host.window.is_none(),
            gone,
            dir.path().join(&near_device.region).exists(),
            dir.path().join(&near_host.region).exists()
        ),
        (true, true, true, [0xff; 4], false, false)
    );
}

/// The device's MSI-X message for a completion queue created with interrupts lands in the routed cell.
#[test]
fn completions_raise_the_routed_interrupt() {
    let (_dir, mut dp) = service();
    let w = bar(&mut dp, 3, "n2");
    let seg = segment(&mut dp, "n2", "q");
    let base = dp.map_segment(3, DEV, "n2", APP, "n2", "q").expect("dma");
    let cell = segment(&mut dp, "n2", "v4");
    dp.route_interrupt(3, DEV, "n2", APP, 4, "v4")
        .expect("route");
    let mut d = Driver::new(w, seg, base, 1);
    d.enable().expect("enable");
    d.create_io_queues_with(1, base, Some(4)).expect("queues");
    let ready = d.reg(CSTS).expect("csts") & CSTS_RDY;
    for lba in 0..3 {
        d.read(lba, 1, 0).expect("read");
    }
    // The message follows the completion entry (as on PCIe, where the MSI-X write is posted after the
    // entry): wait for it as an application waiting on its interrupt would.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut delivered = cell.load_u32(0).expect("cell");
    while delivered < 3 && std::time::Instant::now() < until {
        std::thread::yield_now();
        delivered = cell.load_u32(0).expect("cell");
    }
    assert!(dp.release(3, APP, Grant::Vector(4)).expect("mine"));
    d.read(0, 1, 0).expect("read");
    assert_eq!(
        (ready, delivered, cell.load_u32(0).expect("cell")),
        (CSTS_RDY, 3, 3)
    );
}

/// Reconciling against the controller's leases ends only leases that mapped before the list was taken.
#[test]
fn reconcile_ends_leases_the_controller_no_longer_holds_but_not_newer_ones() {
    let (_dir, mut dp) = service();
    let _ = bar(&mut dp, 10, "n2");
    let _ = bar(&mut dp, 11, "n3");
    let mark = dp.mark();
    // Lease 12 maps after the controller was asked: the answer cannot know it yet.
    let _ = bar(&mut dp, 12, "n4");
    let live: BTreeSet<u64> = [11].into_iter().collect();
    let ended = dp.reconcile(&live, mark);
    let mut left: Vec<u64> = dp.mapped_leases().collect();
    left.sort_unstable();
    assert_eq!((ended, left), (vec![10], vec![11, 12]));
}

/// One application cannot take the whole window table: a lease holds at most 16 windows, and windows
/// it gives back can be had again.
#[test]
fn a_lease_cannot_take_every_window() {
    use pcipool_sim_datapath::service::WINDOWS_PER_LEASE;
    let (_dir, mut dp) = service();
    let slots: Vec<u32> = (0..WINDOWS_PER_LEASE)
        .map(|_| dp.map_bar(8, DEV, "n2", APP).expect("window").slot)
        .collect();
    let one_more = dp.map_bar(8, DEV, "n2", APP);
    let another_lease = dp.map_bar(9, DEV, "n3", APP).map(|g| g.slot);
    let gave_back = dp.release(8, APP, Grant::Window(slots[0])).expect("mine");
    let again = dp.map_bar(8, DEV, "n2", APP).map(|g| g.slot);
    assert_eq!(
        (
            matches!(one_more, Err(DataPathError::TooMany { .. })),
            another_lease.is_ok(),
            gave_back,
            again.is_ok()
        ),
        (true, true, true, true)
    );
}
