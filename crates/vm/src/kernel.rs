//! The Debian kernel, fetched once into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{VmError, run};

/// An unpacked kernel: its image and its module tree (with modules.dep).
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `boot/vmlinuz-VERSION`.
    pub image: PathBuf,
    /// `lib/modules/VERSION`.
    pub modules: PathBuf,
    /// `6.1.0-NN-amd64`.
    pub version: String,
}

impl Kernel {
    /// The kernel `linux-image-amd64` depends on, from `cache` (downloaded and unpacked there the
    /// first time).
    ///
    /// # Errors
    /// apt, dpkg or depmod failures.
    pub fn fetch(cache: &Path) -> Result<Self, VmError> {
        std::fs::create_dir_all(cache)
            .map_err(VmError::io(format!("creating {}", cache.display())))?;
        let depends = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
        // One exact package: a glob would download every kernel version there is.
        let package = depends
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-image-"))
            .ok_or_else(|| VmError::Command {
                what: "apt-cache depends linux-image-amd64".into(),
                detail: format!("no linux-image dependency in: {depends}"),
            })?
            .to_owned();
        let version = package.trim_start_matches("linux-image-").to_owned();
        let root = cache.join(&package);
        let kernel = Self {
            image: root.join(format!("boot/vmlinuz-{version}")),
            modules: root.join(format!("lib/modules/{version}")),
            version: version.clone(),
        };
        if kernel.image.exists() && kernel.modules.join("modules.dep").exists() {
            return Ok(kernel);
        }
        // Guests of one test run boot at once, and test processes run side by side: each fetch works
        // in a directory of its own and moves the unpacked kernel into place in one rename, so no
        // fetch sees another's half-written files or removes the .deb another is reading.
        let work = cache
            .join(format!(
                ".fetch-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ))
            .to_string_lossy()
            .replace(['(', ')'], "");
        let work = std::path::PathBuf::from(work);
        // A directory of this name is a crashed run's leftover: start afresh (it may not exist).
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)
            .map_err(VmError::io(format!("creating {}", work.display())))?;
        let fetched = Self::unpack(&package, &version, &work);
        // A half-unpacked root from an older, interrupted fetch is in the way of the rename.
        if root.exists() && !kernel.modules.join("modules.dep").exists() {
            std::fs::remove_dir_all(&root).map_err(VmError::io(format!(
                "removing the incomplete {}",
                root.display()
            )))?;
        }
        let moved = fetched.and_then(|unpacked| match std::fs::rename(&unpacked, &root) {
            Ok(()) => Ok(()),
            // Another fetch moved its copy into place first: use that one.
            Err(_) if kernel.image.exists() && kernel.modules.join("modules.dep").exists() => {
                Ok(())
            }
            Err(e) => Err(VmError::io(format!(
                "moving the kernel to {}",
                root.display()
            ))(e)),
        });
        // The .deb and any leftovers go: keeping them would double the cache. Best effort: what
        // stays costs disk only, and the next fetch of this name removes it.
        let _ = std::fs::remove_dir_all(&work);
        moved?;
        Ok(kernel)
    }

    /// Downloads `package` into `work` and unpacks it there (modules indexed); returns the root.
    fn unpack(package: &str, version: &str, work: &Path) -> Result<std::path::PathBuf, VmError> {
        run(Command::new("apt-get")
            .args(["download", package])
            .current_dir(work))?;
        let deb = std::fs::read_dir(work)
            .map_err(VmError::io("listing the download directory"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .ok_or_else(|| VmError::Command {
                what: format!("apt-get download {package}"),
                detail: "no .deb appeared".into(),
            })?;
        let root = work.join("root");
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        run(Command::new(crate::tools::path_of("depmod"))
            .arg("-b")
            .arg(&root)
            .arg(version))?;
        Ok(root)
    }
}
