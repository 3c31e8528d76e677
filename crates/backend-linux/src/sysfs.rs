//! Typed reads of sysfs attributes. Every value comes from outside, so every read is a `Result`.

use std::path::{Path, PathBuf};

use pcipool_pcie::Bdf;

/// The roots a host is read through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// sysfs mount (`/sys`).
    pub sys: PathBuf,
    /// procfs mount (`/proc`).
    pub proc: PathBuf,
}

impl HostPaths {
    /// The real host: `/sys` and `/proc`.
    pub fn real() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
            proc: PathBuf::from("/proc"),
        }
    }

    /// A root holding `sys/` and `proc/` (a fake tree, or a chroot).
    pub fn under(root: &Path) -> Self {
        Self {
            sys: root.join("sys"),
            proc: root.join("proc"),
        }
    }

    /// The roots an operator gave: procfs defaults to `proc` beside a sysfs root other than `/sys`
    /// (a fake tree holds both), else `/proc`.
    pub fn given(sys: &Path, proc: Option<&Path>) -> Self {
        let proc = match proc {
            Some(p) => p.to_path_buf(),
            None if sys == Path::new("/sys") => PathBuf::from("/proc"),
            None => sys
                .parent()
                .map_or_else(|| PathBuf::from("/proc"), |p| p.join("proc")),
        };
        Self {
            sys: sys.to_path_buf(),
            proc,
        }
    }

    /// `<sys>/bus/pci/devices`.
    pub fn pci_devices(&self) -> PathBuf {
        self.sys.join("bus/pci/devices")
    }
}

/// A sysfs or procfs read that failed.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The file or link could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content is not what the kernel writes there.
    #[error("unexpected content in {path}: '{content}'")]
    Parse {
        /// The path.
        path: PathBuf,
        /// What was read (trimmed, at most 80 characters).
        content: String,
    },
    /// The PCI device directory does not exist: not a PCI host, or the wrong root.
    #[error("{path} does not exist: no PCI bus here (wrong --sysfs-root?)")]
    NoPciBus {
        /// The directory looked for.
        path: PathBuf,
    },
}

pub(crate) fn read_err(path: &Path, source: std::io::Error) -> SysfsError {
    SysfsError::Read {
        path: path.to_owned(),
        source,
    }
}

fn parse_err(path: &Path, content: &str) -> SysfsError {
    SysfsError::Parse {
        path: path.to_owned(),
        content: content.trim().chars().take(80).collect(),
    }
}

/// Reads a small attribute file as trimmed text. `Ok(None)` when it does not exist.
///
/// # Errors
/// Any read error other than not-found.
pub fn read_opt(path: &Path) -> Result<Option<String>, SysfsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(path, e)),
    }
}

/// Reads a binary file (the `config` attribute).
///
/// # Errors
/// Any read error.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, SysfsError> {
    std::fs::read(path).map_err(|e| read_err(path, e))
}

/// Parses an optional attribute with `parse`; content that does not parse is an error naming the file.
///
/// # Errors
/// Read errors and unparseable content.
pub fn read_parsed<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, SysfsError> {
    match read_opt(path)? {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).ok_or_else(|| parse_err(path, &text)),
    }
}

/// `0x1af4` -> 0x1af4.
pub fn parse_hex_u32(text: &str) -> Option<u32> {
    u32::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// The final component of a symlink's target (`driver` -> `nvme`). `Ok(None)` when there is no link.
///
/// # Errors
/// Read errors other than not-found.
pub fn link_name(path: &Path) -> Result<Option<String>, SysfsError> {
    match std::fs::read_link(path) {
        Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(path, e)),
    }
}

/// Resolves a path with every symlink followed.
///
/// # Errors
/// When a component is missing or unreadable.
pub fn resolve(path: &Path) -> Result<PathBuf, SysfsError> {
    std::fs::canonicalize(path).map_err(|e| read_err(path, e))
}

/// Lists a directory's entry names, sorted. `Ok(empty)` when it does not exist.
///
/// # Errors
/// Read errors other than not-found.
pub fn list_dir(path: &Path) -> Result<Vec<String>, SysfsError> {
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(path, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_err(path, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// BAR sizes from the `resource` file: lines `start end flags`, 0..=5 BARs, 6 the ROM.
/// Unused entries read all zeros.
///
/// # Errors
/// A line that is not three hex numbers, or `end < start`.
pub fn parse_resource(
    path: &Path,
    text: &str,
) -> Result<([Option<u64>; 6], Option<u64>), SysfsError> {
    let mut bars = [None; 6];
    let mut rom = None;
    for (i, line) in text.lines().enumerate().take(7) {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|f| {
                f.strip_prefix("0x")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| parse_err(path, line))?;
        let [start, end, _flags] = fields[..] else {
            return Err(parse_err(path, line));
        };
        if start == 0 && end == 0 {
            continue;
        }
        let size = end
            .checked_sub(start)
            .and_then(|d| d.checked_add(1))
            .ok_or_else(|| parse_err(path, line))?;
        match bars.get_mut(i) {
            Some(slot) => *slot = Some(size),
            None => rom = Some(size),
        }
    }
    Ok((bars, rom))
}

/// The PCI addresses in a resolved device path, root port first:
/// `/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0` -> [00:01.0, 01:00.0].
pub fn bdfs_in_path(path: &Path) -> Vec<Bdf> {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|s| s.len() >= 12 && s.contains('.'))
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_defaults_beside_a_fake_sysfs_and_to_proc_for_the_real_one() {
        let fake = HostPaths::given(Path::new("/tmp/x/sys"), None);
        assert_eq!(fake.proc, PathBuf::from("/tmp/x/proc"));
        assert_eq!(HostPaths::given(Path::new("/sys"), None), HostPaths::real());
        let given = HostPaths::given(Path::new("/tmp/x/sys"), Some(Path::new("/p")));
        assert_eq!(given.proc, PathBuf::from("/p"));
    }

    #[test]
    fn parse_resource_reads_sizes_and_rom() {
        let text = "0x00000000fb000000 0x00000000fb003fff 0x0000000000140204\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x00000000fc000000 0x00000000fc00ffff 0x0000000000004600\n";
        let (bars, rom) = parse_resource(Path::new("resource"), text).expect("valid");
        assert_eq!((bars[0], bars[1], rom), (Some(0x4000), None, Some(0x10000)));
    }

    #[test]
    fn parse_resource_garbage_names_file() {
        let err = parse_resource(Path::new("/x/resource"), "zz 0x1 0x2\n");
        assert!(matches!(err, Err(SysfsError::Parse { .. })));
    }

    #[test]
    fn parse_resource_end_before_start_is_error() {
        let err = parse_resource(Path::new("r"), "0x10 0x0f 0x0\n");
        assert!(matches!(err, Err(SysfsError::Parse { .. })));
    }

    #[test]
    fn bdfs_in_path_lists_bridges_then_device() {
        let path = Path::new("/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
        let got: Vec<String> = bdfs_in_path(path).iter().map(ToString::to_string).collect();
        assert_eq!(got, vec!["0000:00:01.0", "0000:01:00.0"]);
    }

    #[test]
    fn parse_hex_requires_prefix() {
        assert_eq!(
            (parse_hex_u32("0x1af4"), parse_hex_u32("1af4")),
            (Some(0x1af4), None)
        );
    }
}
