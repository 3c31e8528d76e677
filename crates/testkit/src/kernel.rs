//! Writable attribute files for a fake tree: [`FakeKernel`] takes a write the way the kernel's sysfs
//! handlers do (an unbind removes the `driver` link, `drivers_probe` binds what `driver_override`
//! names or the native driver, `remove` takes the function off the bus, a change between two non-zero
//! VF counts is EBUSY) and can refuse chosen writes with an errno, for the error paths a real kernel
//! in a VM does not easily produce. A FIFO put in place of an attribute ([`stall`]) makes a write
//! block in `open`, as an unbind stuck behind a driver in D state does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pcipool_pcie::Bdf;

/// The kernel side of a fake tree's attribute files.
#[derive(Debug)]
pub struct FakeKernel {
    sys: PathBuf,
    native: BTreeMap<Bdf, String>,
    refusals: Mutex<Vec<(String, i32)>>,
    writes: Mutex<Vec<(PathBuf, String)>>,
}

fn symlink(link: &Path, target: &Path) -> io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("/"));
    std::os::unix::fs::symlink(crate::sysfs::relative_path(dir, target), link)
}

impl FakeKernel {
    /// The kernel of the fake tree whose `/sys` is `sys`.
    pub fn new(sys: &Path) -> Self {
        Self {
            sys: sys.to_path_buf(),
            native: BTreeMap::new(),
            refusals: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
        }
    }

    /// The driver that binds `bdf` when no override names another (its modalias match).
    #[must_use]
    pub fn native(mut self, bdf: Bdf, driver: &str) -> Self {
        self.native.insert(bdf, driver.to_owned());
        self
    }

    /// Makes writes to paths ending in `suffix` fail with `errno` (e.g. `libc::EBUSY` = 16).
    pub fn refuse(&self, suffix: &str, errno: i32) {
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((suffix.to_owned(), errno));
    }

    /// Every write that reached the kernel, in order: (path, value as text).
    pub fn writes(&self) -> Vec<(PathBuf, String)> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn device_dir(&self, bdf: Bdf) -> io::Result<PathBuf> {
        std::fs::canonicalize(self.sys.join("bus/pci/devices").join(bdf.to_string()))
    }

    fn bind(&self, bdf: Bdf, driver: &str) -> io::Result<()> {
        let drv = self.sys.join("bus/pci/drivers").join(driver);
        if !drv.is_dir() {
            return Ok(());
        }
        let dir = self.device_dir(bdf)?;
        symlink(&dir.join("driver"), &drv)?;
        symlink(&drv.join(bdf.to_string()), &dir)
    }

    fn unbind(&self, bdf: Bdf) -> io::Result<()> {
        let dir = self.device_dir(bdf)?;
        if let Ok(drv) = std::fs::canonicalize(dir.join("driver")) {
            // The driver's link to the device; gone already is fine.
            let _gone = std::fs::remove_file(drv.join(bdf.to_string()));
        }
        std::fs::remove_file(dir.join("driver"))
    }

    /// Takes one write as the kernel would.
    ///
    /// # Errors
    /// A refusal set with [`Self::refuse`], an errno the kernel gives here, or the file's own error.
    pub fn write(&self, path: &Path, offset: Option<u64>, bytes: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let shown = path.to_string_lossy().into_owned();
        let refused = self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(suffix, _)| shown.ends_with(suffix.as_str()))
            .map(|(_, errno)| *errno);
        if let Some(errno) = refused {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let rel = path
            .strip_prefix(&self.sys)
            .map_err(|_| io::Error::other("outside the fake sysfs"))?;
        let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
        let value = text.trim();
        let as_bdf = |s: &str| {
            s.parse::<Bdf>()
                .map_err(|_| io::Error::from_raw_os_error(19))
        };
        match parts.as_slice() {
            ["bus", "pci", "devices", bdf, "config"] => {
                use std::os::unix::fs::FileExt;
                let _ = as_bdf(bdf)?;
                let file = std::fs::OpenOptions::new().write(true).open(path)?;
                file.write_at(bytes, offset.unwrap_or(0))?;
            }
            ["bus", "pci", "devices", bdf, "sriov_numvfs"] => {
                let _ = as_bdf(bdf)?;
                let now: u16 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(0);
                let want: u16 = value
                    .parse()
                    .map_err(|_| io::Error::from_raw_os_error(22))?;
                if now != 0 && want != 0 && now != want {
                    return Err(io::Error::from_raw_os_error(16));
                }
                std::fs::write(path, format!("{want}\n"))?;
            }
            ["bus", "pci", "devices", bdf, "driver_override"] => {
                let _ = as_bdf(bdf)?;
                let stored = if value.is_empty() { "(null)" } else { value };
                std::fs::write(path, format!("{stored}\n"))?;
            }
            ["bus", "pci", "devices", bdf, "driver", "unbind"] => {
                std::fs::write(path, bytes)?;
                self.unbind(as_bdf(bdf)?)?;
            }
            ["bus", "pci", "devices", bdf, "remove"] => {
                std::fs::write(path, bytes)?;
                std::fs::remove_file(self.sys.join("bus/pci/devices").join(bdf))?;
            }
            ["bus", "pci", "drivers_probe"] => {
                std::fs::write(path, bytes)?;
                let bdf = as_bdf(value)?;
                let dir = self.device_dir(bdf)?;
                if !dir.join("driver").exists() {
                    let over = std::fs::read_to_string(dir.join("driver_override"))?;
                    match over.trim() {
                        "(null)" | "" => {
                            if let Some(native) = self.native.get(&bdf) {
                                self.bind(bdf, native)?;
                            }
                        }
                        named => self.bind(bdf, named)?,
                    }
                }
            }
            _ => std::fs::write(path, bytes)?,
        }
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((path.to_path_buf(), text));
        Ok(())
    }
}

/// Replaces the attribute at `path` with a FIFO nobody reads: a write to it blocks in `open`.
///
/// # Errors
/// The file cannot be removed or `mkfifo` fails.
pub fn stall(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    let status = std::process::Command::new("mkfifo").arg(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "mkfifo {} failed",
            path.display()
        )))
    }
}
