//! Names for PCI ids, from the PCI ID Repository file (`pci.ids`) that Debian ships in the `pci.ids`
//! package (`/usr/share/misc/pci.ids`, also `/usr/share/hwdata/pci.ids`).
//!
//! The file is parsed once per process ([`PciIds::system`]) and every lookup after that is a map read.
//! Without the file, lookups return `None` and callers show ids as hex: names are a convenience,
//! never a dependency.
//!
//! # Layout
//! - [`PciIds::parse`]: the pure parser (text in, maps out; malformed lines are counted and skipped).
//! - [`PciIds::load`], [`PciIds::system`]: reading the file.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where Debian and Fedora keep the database, in search order.
pub const DEFAULT_PATHS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// Environment variable naming a pci.ids file to use instead of the default paths.
pub const PATH_ENV: &str = "PCIPOOL_PCI_IDS";

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PciIdsError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Device {
    name: String,
    subsystems: HashMap<(u16, u16), String>,
}

#[derive(Debug, Default)]
struct Vendor {
    name: String,
    devices: HashMap<u16, Device>,
}

#[derive(Debug, Default)]
struct SubClass {
    name: String,
    prog_ifs: HashMap<u8, String>,
}

#[derive(Debug, Default)]
struct Class {
    name: String,
    subclasses: HashMap<u8, SubClass>,
}

/// The parsed database.
#[derive(Debug, Default)]
pub struct PciIds {
    vendors: HashMap<u16, Vendor>,
    classes: HashMap<u8, Class>,
    skipped_lines: usize,
    source: Option<PathBuf>,
}

fn hex16(s: &str) -> Option<u16> {
    (s.len() == 4)
        .then(|| u16::from_str_radix(s, 16).ok())
        .flatten()
}

fn hex8(s: &str) -> Option<u8> {
    (s.len() == 2)
        .then(|| u8::from_str_radix(s, 16).ok())
        .flatten()
}

/// `"1234  Name"` -> ("1234", "Name").
fn split_id(line: &str) -> Option<(&str, &str)> {
    let (id, name) = line.split_once(' ')?;
    Some((id, name.trim()))
}

enum Section {
    None,
    Vendor(u16),
    Class(u8),
}

impl PciIds {
    /// Parses pci.ids text. Lines that do not fit the format are skipped and counted
    /// ([`PciIds::skipped_lines`]), so one bad line never hides the rest.
    pub fn parse(text: &str) -> Self {
        let mut ids = Self::default();
        let mut section = Section::None;
        let mut device: Option<u16> = None;
        let mut subclass: Option<u8> = None;
        for line in text.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let ok = if let Some(rest) = line.strip_prefix("\t\t") {
                ids.parse_level2(&section, device, subclass, rest)
            } else if let Some(rest) = line.strip_prefix('\t') {
                match &section {
                    Section::Vendor(v) => split_id(rest).and_then(|(id, name)| {
                        let d = hex16(id)?;
                        device = Some(d);
                        ids.vendors.get_mut(v)?.devices.entry(d).or_default().name =
                            name.to_owned();
                        Some(())
                    }),
                    Section::Class(c) => split_id(rest).and_then(|(id, name)| {
                        let s = hex8(id)?;
                        subclass = Some(s);
                        ids.classes
                            .get_mut(c)?
                            .subclasses
                            .entry(s)
                            .or_default()
                            .name = name.to_owned();
                        Some(())
                    }),
                    Section::None => None,
                }
            } else if let Some(rest) = line.strip_prefix("C ") {
                split_id(rest).and_then(|(id, name)| {
                    let c = hex8(id)?;
                    section = Section::Class(c);
                    subclass = None;
                    ids.classes.entry(c).or_default().name = name.to_owned();
                    Some(())
                })
            } else {
                // Vendor lines; other top-level sections (e.g. "X" for other buses) end the vendor list.
                match split_id(line).and_then(|(id, name)| Some((hex16(id)?, name))) {
                    Some((v, name)) => {
                        section = Section::Vendor(v);
                        device = None;
                        ids.vendors.entry(v).or_default().name = name.to_owned();
                        Some(())
                    }
                    None => {
                        section = Section::None;
                        None
                    }
                }
            };
            if ok.is_none() {
                ids.skipped_lines += 1;
            }
        }
        ids
    }

    fn parse_level2(
        &mut self,
        section: &Section,
        device: Option<u16>,
        subclass: Option<u8>,
        rest: &str,
    ) -> Option<()> {
        match section {
            Section::Vendor(v) => {
                let (ids, name) = rest.split_once("  ")?;
                let (sv, sd) = ids.split_once(' ')?;
                let key = (hex16(sv)?, hex16(sd)?);
                let dev = self.vendors.get_mut(v)?.devices.get_mut(&device?)?;
                dev.subsystems.insert(key, name.trim().to_owned());
                Some(())
            }
            Section::Class(c) => {
                let (id, name) = split_id(rest)?;
                let p = hex8(id)?;
                let sub = self.classes.get_mut(c)?.subclasses.get_mut(&subclass?)?;
                sub.prog_ifs.insert(p, name.to_owned());
                Some(())
            }
            Section::None => None,
        }
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`PciIdsError::Read`] when the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, PciIdsError> {
        let bytes = std::fs::read(path).map_err(|source| PciIdsError::Read {
            path: path.to_owned(),
            source,
        })?;
        // The file is UTF-8 today but was Latin-1 once; never fail on a stray byte.
        let mut ids = Self::parse(&String::from_utf8_lossy(&bytes));
        ids.source = Some(path.to_owned());
        Ok(ids)
    }

    /// The system database, loaded on first use from `$PCIPOOL_PCI_IDS` or the default paths.
    /// An empty database when none can be read.
    pub fn system() -> &'static Self {
        static SYSTEM: OnceLock<PciIds> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let from_env = std::env::var_os(PATH_ENV).map(PathBuf::from);
            from_env
                .into_iter()
                .chain(DEFAULT_PATHS.iter().map(PathBuf::from))
                .find_map(|p| Self::load(&p).ok())
                .unwrap_or_default()
        })
    }

    /// The file this database came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Lines that could not be parsed.
    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }

    /// Number of vendors known.
    pub fn vendor_count(&self) -> usize {
        self.vendors.len()
    }

    /// Vendor name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(|v| v.name.as_str())
    }

    /// Device name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.vendors
            .get(&vendor)?
            .devices
            .get(&device)
            .map(|d| d.name.as_str())
    }

    /// Subsystem name.
    pub fn subsystem(
        &self,
        vendor: u16,
        device: u16,
        sub_vendor: u16,
        sub_device: u16,
    ) -> Option<&str> {
        self.vendors
            .get(&vendor)?
            .devices
            .get(&device)?
            .subsystems
            .get(&(sub_vendor, sub_device))
            .map(String::as_str)
    }

    /// Class name: the sub-class name when known, else the base class name.
    pub fn class(&self, base: u8, sub: u8) -> Option<&str> {
        let class = self.classes.get(&base)?;
        Some(
            class
                .subclasses
                .get(&sub)
                .map_or(class.name.as_str(), |s| s.name.as_str()),
        )
    }

    /// Programming interface name.
    pub fn prog_if(&self, base: u8, sub: u8, prog_if: u8) -> Option<&str> {
        self.classes
            .get(&base)?
            .subclasses
            .get(&sub)?
            .prog_ifs
            .get(&prog_if)
            .map(String::as_str)
    }

    /// "Vendor Device" as lspci prints it, falling back to "Device dddd" or hex ids.
    pub fn describe(&self, vendor: u16, device: u16) -> String {
        match (self.vendor(vendor), self.device(vendor, device)) {
            (Some(v), Some(d)) => format!("{v} {d}"),
            (Some(v), None) => format!("{v} Device {device:04x}"),
            (None, _) => format!("Device {vendor:04x}:{device:04x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
1af4  Red Hat, Inc.
\t1042  Virtio 1.0 block device
\t\t1af4 1100  QEMU Virtual Machine
10de  NVIDIA Corporation
C 01  Mass storage controller
\t08  Non-Volatile memory controller
\t\t02  NVM Express
";

    #[test]
    fn device_name_is_found() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.device(0x1af4, 0x1042), Some("Virtio 1.0 block device"));
    }

    #[test]
    fn subsystem_name_is_found() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(
            ids.subsystem(0x1af4, 0x1042, 0x1af4, 0x1100),
            Some("QEMU Virtual Machine")
        );
    }

    #[test]
    fn prog_if_name_is_found() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.prog_if(0x01, 0x08, 0x02), Some("NVM Express"));
    }

    #[test]
    fn class_unknown_sub_falls_back_to_base() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(ids.class(0x01, 0x42), Some("Mass storage controller"));
    }

    #[test]
    fn describe_unknown_device_keeps_vendor() {
        let ids = PciIds::parse(SAMPLE);
        assert_eq!(
            ids.describe(0x10de, 0x1234),
            "NVIDIA Corporation Device 1234"
        );
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let ids = PciIds::parse("zzzz  Bad\n\tqq  bad\n1af4  Red Hat, Inc.\n\tnothex\n");
        assert_eq!(
            (ids.skipped_lines(), ids.vendor(0x1af4)),
            (3, Some("Red Hat, Inc."))
        );
    }

    #[test]
    fn load_missing_file_is_read_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("pci.ids");
        assert!(matches!(
            PciIds::load(&missing),
            Err(PciIdsError::Read { .. })
        ));
    }
}
