use pcipool_sim_shm::Region;
use pcipool_sim_shm::window::{Window, WindowTable};

#[test]
fn a_closed_window_reads_all_ones_drops_writes_and_counts_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bar = Region::create(dir.path(), "bar0", 4096).expect("bar");
    bar.store_u32(0, 0x1234_5678).expect("store");
    let table = WindowTable::create(dir.path(), "windows", 4).expect("table");
    let generation = table.open_slot(2).expect("open");
    let w = Window::attach(dir.path(), "windows", 2, generation, "bar0").expect("attach");
    let open_read = w.read_u32(0).expect("read");
    w.write_u32(4, 7).expect("write");
    let reached = bar.load_u32(4).expect("load");
    table.close_slot(2).expect("close");
    let closed_read = w.read_u32(0).expect("read");
    w.write_u32(4, 9).expect("write");
    let mut buf = [0u8; 4];
    w.read(0, &mut buf).expect("read");
    // Reopening the slot for another mapping does not revive the old window.
    let next = table.open_slot(2).expect("reopen");
    let stale = w.read_u32(0).expect("read");
    assert_eq!(
        (
            open_read,
            reached,
            closed_read,
            bar.load_u32(4).expect("load"),
            buf,
            next != generation,
            stale,
            table.faults(2).expect("faults"),
        ),
        (0x1234_5678, 7, u32::MAX, 7, [0xff; 4], true, u32::MAX, 4)
    );
}

/// The child half of the cross-process test (ignored in ordinary runs).
#[test]
#[ignore = "run by a_window_is_revoked_under_another_process in a child process"]
fn child_reads_through_its_window() {
    let dir = std::env::var("PCIPOOL_SHM_CHILD_DIR").expect("started by the parent test");
    let dir = std::path::Path::new(&dir);
    let generation: u32 = std::env::var("PCIPOOL_SHM_GENERATION")
        .expect("generation")
        .parse()
        .expect("number");
    let w = Window::attach(dir, "windows", 0, generation, "bar0").expect("attach");
    let mailbox = Region::open(dir, "mailbox").expect("mailbox");
    // Report what the window reads until the parent says stop.
    while mailbox.load_u32(0).expect("load") != 2 {
        let v = w.read_u32(0).expect("read");
        mailbox.store_u32(4, v).expect("store");
        mailbox
            .store_u32(8, mailbox.load_u32(8).expect("load").wrapping_add(1))
            .expect("store");
        std::thread::yield_now();
    }
}

#[test]
fn a_window_is_revoked_under_another_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bar = Region::create(dir.path(), "bar0", 4096).expect("bar");
    bar.store_u32(0, 0xabcd).expect("store");
    let mailbox = Region::create(dir.path(), "mailbox", 64).expect("mailbox");
    let table = WindowTable::create(dir.path(), "windows", 1).expect("table");
    let generation = table.open_slot(0).expect("open");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "window::child_reads_through_its_window",
            "--ignored",
            "--nocapture",
        ])
        .env("PCIPOOL_SHM_CHILD_DIR", dir.path())
        .env("PCIPOOL_SHM_GENERATION", generation.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child starts");
    let wait_for = |want: u32| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while mailbox.load_u32(4).expect("load") != want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        mailbox.load_u32(4).expect("load")
    };
    let seen_open = wait_for(0xabcd);
    table.close_slot(0).expect("revoke");
    let seen_closed = wait_for(u32::MAX);
    mailbox.store_u32(0, 2).expect("stop");
    let status = child.wait().expect("child ends");
    assert_eq!(
        (
            seen_open,
            seen_closed,
            status.success(),
            table.faults(0).expect("faults") > 0
        ),
        (0xabcd, u32::MAX, true, true)
    );
}

/// A process that was never given the key cannot use an open slot: guessing a neighbouring key, or the
/// previous one, reaches nothing.
#[test]
fn a_window_with_a_forged_key_reaches_nothing_while_the_slot_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bar = Region::create(dir.path(), "bar0", 4096).expect("bar");
    bar.store_u32(0, 0xfeed_f00d).expect("store");
    let table = WindowTable::create(dir.path(), "windows", 1).expect("table");
    let first = table.open_slot(0).expect("open");
    let key = table.open_slot(0).expect("reopen for the real holder");
    let owner = Window::attach(dir.path(), "windows", 0, key, "bar0").expect("attach");
    let forged: Vec<u32> = [first, key.wrapping_add(2), key.wrapping_sub(2), 1]
        .into_iter()
        .filter(|k| *k != key)
        .map(|k| {
            Window::attach(dir.path(), "windows", 0, k, "bar0")
                .expect("attach")
                .read_u32(0)
                .expect("read")
        })
        .collect();
    assert_eq!(
        (
            owner.read_u32(0).expect("read"),
            forged.iter().all(|v| *v == u32::MAX),
            forged.is_empty()
        ),
        (0xfeed_f00d, true, false)
    );
}
