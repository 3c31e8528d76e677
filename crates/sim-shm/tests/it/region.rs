use pcipool_sim_shm::{Region, ShmError};

#[test]
fn two_mappings_of_one_region_see_each_others_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Region::create(dir.path(), "bar0", 4096).expect("create");
    let b = Region::open(dir.path(), "bar0").expect("open");
    a.store_u32(0x10, 0xdead_beef).expect("store");
    b.store_u64(0x20, 0x0123_4567_89ab_cdef).expect("store");
    b.write(0x100, b"payload").expect("write");
    let before = a.fetch_add_u32(0x30, 5).expect("add");
    b.fetch_add_u32(0x30, 2).expect("add");
    let mut buf = [0u8; 7];
    a.read(0x100, &mut buf).expect("read");
    assert_eq!(
        (
            b.load_u32(0x10).expect("load"),
            a.load_u64(0x20).expect("load"),
            &buf,
            a.len(),
            (before, a.load_u32(0x30).expect("load"))
        ),
        (0xdead_beef, 0x0123_4567_89ab_cdef, b"payload", 4096, (0, 7))
    );
}

#[test]
fn out_of_range_misaligned_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::create(dir.path(), "seg", 64).expect("create");
    let mut big = [0u8; 65];
    assert!(matches!(r.load_u32(62), Err(ShmError::OutOfRange { .. })));
    assert!(matches!(r.load_u32(2), Err(ShmError::Misaligned { .. })));
    assert!(matches!(
        r.store_u64(60, 1),
        Err(ShmError::OutOfRange { .. })
    ));
    assert!(matches!(
        r.read(0, &mut big),
        Err(ShmError::OutOfRange { .. })
    ));
    assert!(matches!(
        r.write(u64::MAX, b"x"),
        Err(ShmError::OutOfRange { .. })
    ));
    assert!(matches!(
        Region::create(dir.path(), "../escape", 8),
        Err(ShmError::BadName(_))
    ));
    assert!(matches!(
        Region::create(dir.path(), "zero", 0),
        Err(ShmError::Empty)
    ));
    assert!(matches!(
        Region::open(dir.path(), "missing"),
        Err(ShmError::Io { .. })
    ));
}

/// The child half of the cross-process test, started by the parent (ignored in ordinary runs: on its own
/// it has nothing to answer).
#[test]
#[ignore = "run by a_region_is_shared_with_another_process in a child process"]
fn child_writes_when_asked() {
    let dir = std::env::var("PCIPOOL_SHM_CHILD_DIR").expect("started by the parent test");
    let r = Region::open(std::path::Path::new(&dir), "shared").expect("child opens");
    // Wait for the parent's go, then answer through the same memory.
    while r.load_u32(0).expect("load") != 1 {
        std::thread::yield_now();
    }
    r.write(64, b"from the child process").expect("write");
    r.store_u32(4, 0xc0ffee).expect("store");
}

#[test]
fn a_region_is_shared_with_another_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Region::create(dir.path(), "shared", 4096).expect("create");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "region::child_writes_when_asked",
            "--ignored",
            "--nocapture",
        ])
        .env("PCIPOOL_SHM_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child starts");
    r.store_u32(0, 1).expect("go");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while r.load_u32(4).expect("load") != 0xc0ffee && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let status = child.wait().expect("child ends");
    let mut buf = [0u8; 22];
    r.read(64, &mut buf).expect("read");
    assert_eq!(
        (status.success(), r.load_u32(4).expect("load"), &buf),
        (true, 0xc0ffee, b"from the child process")
    );
}

/// Making a region again under the same name never shrinks the file another mapping uses: the old
/// mapping keeps its memory and its contents (a shrunk file would fault with SIGBUS on access).
#[test]
fn making_a_region_again_leaves_existing_mappings_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Region::create(dir.path(), "seg", 8192).expect("create");
    old.store_u32(4096, 0xabcd).expect("store");
    let new = Region::create(dir.path(), "seg", 64).expect("create again");
    let reopened = Region::open(dir.path(), "seg").expect("open");
    assert_eq!(
        (
            old.load_u32(4096).expect("old mapping still whole"),
            new.len(),
            reopened.len()
        ),
        (0xabcd, 64, 64)
    );
}
