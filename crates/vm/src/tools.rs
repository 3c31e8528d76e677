//! The machine's tools a guest needs, installed with apt when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::VmError;

/// Debian packages and a program each provides.
const NEEDED: [(&str, &str); 4] = [
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("cpio", "cpio"),
    ("busybox-static", "busybox"),
    ("kmod", "depmod"),
];

const DIRS: [&str; 5] = ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"];

fn on_path(program: &str) -> bool {
    DIRS.iter().any(|d| Path::new(d).join(program).exists())
}

/// Where `program` is (sbin is not on every user's PATH); the bare name when not found.
pub fn path_of(program: &str) -> PathBuf {
    DIRS.iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Makes sure the tools are there, installing the missing packages with apt-get.
///
/// # Errors
/// [`VmError::Unavailable`] naming what is missing and why it could not be installed.
pub fn ensure() -> Result<(), VmError> {
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(_, program)| !on_path(program))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    match installed {
        Ok(out) if out.status.success() && NEEDED.iter().all(|(_, p)| on_path(p)) => Ok(()),
        Ok(out) => Err(VmError::Unavailable(format!(
            "{} missing and apt-get could not install them: {}",
            missing.join(", "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(VmError::Unavailable(format!(
            "{} missing and apt-get could not run: {e}",
            missing.join(", ")
        ))),
    }
}
