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
        run(Command::new("apt-get")
            .args(["download", &package])
            .current_dir(cache))?;
        let deb = std::fs::read_dir(cache)
            .map_err(VmError::io("listing the cache"))?
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
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        run(Command::new(crate::tools::path_of("depmod"))
            .arg("-b")
            .arg(&root)
            .arg(&version))?;
        // The .deb is unpacked; keeping it would double the cache.
        std::fs::remove_file(&deb).map_err(VmError::io("removing the .deb"))?;
        Ok(kernel)
    }
}
