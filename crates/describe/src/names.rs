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

/// Byte range of a name or block inside the database text.
type Span = std::ops::Range<usize>;

#[derive(Debug)]
struct DeviceEntry {
    name: Span,
    /// Lines after the device line (its subsystems).
    block: Span,
}

#[derive(Debug)]
struct VendorEntry {
    name: Span,
    /// Lines after the vendor line (its devices and their subsystems).
    block: Span,
    /// Built on the first lookup of this vendor: most vendors are never asked about.
    devices: OnceLock<HashMap<u16, DeviceEntry>>,
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

/// The database: the file's text plus an index of vendor blocks (classes are parsed fully; they are
/// few). Indexing only vendor lines keeps start-up to one pass over the text, which matters for
/// short-lived commands such as `pcipool decode`.
#[derive(Debug, Default)]
pub struct PciIds {
    text: String,
    vendors: HashMap<u16, VendorEntry>,
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

/// Range of `part` (a sub-slice of `whole`) inside `whole`.
fn span_of(whole: &str, part: &str) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

/// Lines of `text[range]` with their absolute start offsets.
fn lines_at(text: &str, range: Span) -> impl Iterator<Item = (usize, &str)> {
    let base = range.start;
    let block = text.get(range).unwrap_or("");
    block.split_inclusive('\n').scan(base, |pos, line| {
        let start = *pos;
        *pos += line.len();
        Some((start, line.trim_end_matches(['\n', '\r'])))
    })
}

enum Section {
    None,
    Vendor,
    Class(u8),
}

impl PciIds {
    /// Parses pci.ids text. Top-level and class lines that do not fit the format are skipped and counted
    /// ([`PciIds::skipped_lines`]); device and subsystem lines are read when their vendor is first
    /// looked up, and a malformed one is skipped then. One bad line never hides the rest.
    pub fn parse(text: &str) -> Self {
        Self::from_text(text.to_owned())
    }

    fn from_text(text: String) -> Self {
        let mut ids = Self {
            text,
            ..Self::default()
        };
        let mut section = Section::None;
        let mut subclass: Option<u8> = None;
        let mut vendor_lines: Vec<(u16, Span, usize)> = Vec::new();
        let text = ids.text.as_str();
        for (start, line) in lines_at(text, 0..text.len()) {
            let end = start + line.len();
            // Most of the file is device and subsystem lines inside vendor blocks: only extend the block.
            if matches!(section, Section::Vendor) && line.starts_with('\t') {
                if let Some(last) = vendor_lines.last_mut() {
                    last.2 = end;
                }
                continue;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let ok = if let Some(rest) = line.strip_prefix('\t') {
                match &section {
                    Section::Vendor => {
                        if let Some(last) = vendor_lines.last_mut() {
                            last.2 = end;
                        }
                        Some(())
                    }
                    Section::Class(c) => {
                        if let Some(rest) = rest.strip_prefix('\t') {
                            split_id(rest).and_then(|(id, name)| {
                                let p = hex8(id)?;
                                let sub = ids.classes.get_mut(c)?.subclasses.get_mut(&subclass?)?;
                                sub.prog_ifs.insert(p, name.to_owned());
                                Some(())
                            })
                        } else {
                            split_id(rest).and_then(|(id, name)| {
                                let s = hex8(id)?;
                                subclass = Some(s);
                                ids.classes
                                    .get_mut(c)?
                                    .subclasses
                                    .entry(s)
                                    .or_default()
                                    .name = name.to_owned();
                                Some(())
                            })
                        }
                    }
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
                        section = Section::Vendor;
                        vendor_lines.push((v, span_of(text, name), end));
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
        for (vendor, name, block_end) in vendor_lines {
            // The block starts after the vendor line's newline; an empty block is start == end.
            let block_start = text[name.end..]
                .find('\n')
                .map_or(text.len(), |n| name.end + n + 1);
            ids.vendors.entry(vendor).or_insert(VendorEntry {
                name,
                block: block_start..block_end.max(block_start),
                devices: OnceLock::new(),
            });
        }
        ids
    }

    fn devices(&self, vendor: u16) -> Option<&HashMap<u16, DeviceEntry>> {
        let entry = self.vendors.get(&vendor)?;
        Some(entry.devices.get_or_init(|| {
            let mut devices: HashMap<u16, DeviceEntry> = HashMap::new();
            let mut current: Option<u16> = None;
            for (start, line) in lines_at(&self.text, entry.block.clone()) {
                let end = start + line.len();
                if line.starts_with("\t\t") {
                    if let Some(d) = current.and_then(|d| devices.get_mut(&d)) {
                        d.block.end = end;
                    }
                    continue;
                }
                current = line
                    .strip_prefix('\t')
                    .and_then(split_id)
                    .and_then(|(id, name)| Some((hex16(id)?, name)))
                    .map(|(d, name)| {
                        let name = span_of(&self.text, name);
                        devices.entry(d).or_insert(DeviceEntry {
                            block: end + 1..end + 1,
                            name,
                        });
                        d
                    });
            }
            devices
        }))
    }

    fn slice(&self, span: &Span) -> Option<&str> {
        self.text.get(span.clone())
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
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let mut ids = Self::from_text(text);
        ids.source = Some(path.to_owned());
        Ok(ids)
    }

    /// The system database, loaded on first use: from `$PCIPOOL_PCI_IDS` when set (and only from there,
    /// so tests and scripts get a predictable answer), else the first default path that reads. An empty
    /// database when none can be read.
    pub fn system() -> &'static Self {
        static SYSTEM: OnceLock<PciIds> = OnceLock::new();
        SYSTEM.get_or_init(|| match std::env::var_os(PATH_ENV) {
            Some(path) => Self::load(Path::new(&path)).unwrap_or_default(),
            None => DEFAULT_PATHS
                .iter()
                .find_map(|p| Self::load(Path::new(p)).ok())
                .unwrap_or_default(),
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
        self.slice(&self.vendors.get(&vendor)?.name)
    }

    /// Device name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.slice(&self.devices(vendor)?.get(&device)?.name)
    }

    /// Subsystem name.
    pub fn subsystem(
        &self,
        vendor: u16,
        device: u16,
        sub_vendor: u16,
        sub_device: u16,
    ) -> Option<&str> {
        let entry = self.devices(vendor)?.get(&device)?;
        lines_at(
            &self.text,
            entry.block.start..entry.block.end.min(self.text.len()),
        )
        .filter_map(|(_, line)| line.strip_prefix("\t\t"))
        .find_map(|rest| {
            let (ids, name) = rest.split_once("  ")?;
            let (sv, sd) = ids.split_once(' ')?;
            (hex16(sv)? == sub_vendor && hex16(sd)? == sub_device).then(|| name.trim())
        })
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
            (
                ids.skipped_lines(),
                ids.vendor(0x1af4),
                ids.device(0x1af4, 0x1042)
            ),
            (2, Some("Red Hat, Inc."), None)
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
