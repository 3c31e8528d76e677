//! One guest for a test: tools, kernel, initramfs with this build's `pcipool`, disk images.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use pcipool_vm::initramfs::{self, Contents};
use pcipool_vm::kernel::Kernel;
use pcipool_vm::vm::{Ran, Spec, Vm};
use pcipool_vm::{VmError, cache_dir, tools};

/// A booted guest and the directory holding its files.
pub struct Guest {
    pub vm: Vm,
    /// Holds the images and the VM's files for as long as the guest runs.
    pub _files: tempfile::TempDir,
    /// The machine's room this guest took for itself, if the test did not take it for all its guests.
    _room: Option<Room>,
}

/// Guests that may run at once on this machine: each emulated CPU is a busy host thread, and with more
/// guests than this on two cores a guest's kernel is slowed past the tests' deadlines.
const MACHINE_GUESTS: u32 = 3;

static RUNNING: (Mutex<u32>, Condvar) = (Mutex::new(0), Condvar::new());

/// Room for `guests` guests, held until dropped; a test takes all it needs at its start, so two
/// tests never wait on each other's half.
pub struct Room(u32);

/// Waits until `guests` guests may run.
pub fn room(guests: u32) -> Room {
    let (count, freed) = &RUNNING;
    let mut running = count
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while *running + guests > MACHINE_GUESTS.max(guests) {
        running = freed
            .wait(running)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    *running += guests;
    Room(guests)
}

impl Drop for Room {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        let mut running = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running -= self.0;
        freed.notify_all();
    }
}

impl Guest {
    /// Runs a command; a guest that does not answer within three minutes fails the test.
    pub fn sh(&mut self, command: &str) -> Ran {
        match self.vm.run_within(command, Duration::from_secs(180)) {
            Ok(ran) => ran,
            Err(e) => panic!("guest command {command:?}: {e}"),
        }
    }

    /// The trimmed output of a command that must succeed.
    pub fn ok(&mut self, command: &str) -> String {
        let ran = self.sh(command);
        assert_eq!(ran.status, 0, "{command}: {}", ran.output);
        ran.output.trim().to_owned()
    }
}

/// A raw image of `mib` MiB starting with `marker`.
pub fn image(dir: &Path, name: &str, mib: u64, marker: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).expect("image");
    file.write_all(marker.as_bytes()).expect("marker");
    file.set_len(mib << 20).expect("size");
    path
}

/// Boots a guest whose machine `spec` builds from the guest's directory; `None` (after a SKIPPED
/// line) when QEMU cannot be had on this machine.
pub fn boot(test: &str, spec: impl FnOnce(&Path) -> Spec) -> Option<Guest> {
    boot_in(None, test, spec)
}

/// [`boot`], for a test that already holds its [`Room`] (`Some`) or takes one for this guest (`None`).
pub fn boot_in(
    room_held: Option<&Room>,
    test: &str,
    spec: impl FnOnce(&Path) -> Spec,
) -> Option<Guest> {
    let own = room_held.is_none().then(|| room(1));
    match tools::ensure() {
        Ok(()) => {}
        Err(VmError::Unavailable(why)) => {
            pcipool_testkit::skip::skipped(test, &why);
            return None;
        }
        Err(e) => panic!("{test}: {e}"),
    }
    let kernel = Kernel::fetch(&cache_dir()).unwrap_or_else(|e| panic!("{test}: kernel: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = dir.path().join("initramfs.cpio");
    let pcipool = PathBuf::from(env!("CARGO_BIN_EXE_pcipool"));
    let programs = [pcipool.as_path()];
    initramfs::build(
        &Contents {
            kernel: &kernel,
            modules: &pcipool_lab::GUEST_MODULES,
            programs: &programs,
            files: &[],
        },
        dir.path(),
        &initrd,
    )
    .unwrap_or_else(|e| panic!("{test}: initramfs: {e}"));
    let spec = spec(dir.path());
    let vm = Vm::boot(
        &kernel.image,
        &initrd,
        &spec,
        &dir.path().join("vm"),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{test}: boot: {e}"));
    eprintln!(
        "{test}: guest booted in {:.1} s (kernel {})",
        vm.boot_time.as_secs_f64(),
        kernel.version
    );
    Some(Guest {
        vm,
        _files: dir,
        _room: own,
    })
}
