//! What `pcipool decode` prints for a file of `lspci -x` dumps: every device decoded, as lspci-style
//! text or as JSON rows, with the devices that could not be decoded counted.

use pcipool_pcie::dump::DumpedDevice;
use pcipool_pcie::{Bdf, ConfigSpaceError, DeviceFacts, ResetMethod};
use serde::Serialize;

use crate::PciIds;
use crate::text::{facts_body, title};

/// One device of a dump, decoded.
#[derive(Debug)]
pub struct Decoded {
    /// Its address in the dump.
    pub bdf: Bdf,
    /// Its line in the dump.
    pub line: usize,
    /// Its facts, or why they could not be decoded.
    pub facts: Result<DeviceFacts, ConfigSpaceError>,
}

/// One device as a JSON row.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    /// Address.
    pub bdf: Bdf,
    /// Line in the dump.
    pub line: usize,
    /// The decoded facts.
    #[serde(flatten)]
    pub facts: Option<&'a DeviceFacts>,
    /// Reset methods the facts support (no bus reset: a dump does not say where the device sits).
    pub reset_methods: Vec<ResetMethod>,
    /// Why the device could not be decoded.
    pub error: Option<String>,
}

/// Reads a dump file (`-` for stdin). Dumps are ASCII; a stray non-UTF-8 byte (a vendor name in
/// Latin-1) must not fail the read.
///
/// # Errors
/// The file or stdin cannot be read.
pub fn read_source(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = if path == std::path::Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(path)?
    };
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Decodes every device of a parsed dump.
#[must_use]
pub fn decode_all(devices: &[DumpedDevice]) -> Vec<Decoded> {
    devices
        .iter()
        .map(|d| Decoded {
            bdf: d.bdf,
            line: d.line,
            facts: pcipool_pcie::decode(&d.bytes),
        })
        .collect()
}

/// The devices that could not be decoded.
#[must_use]
pub fn failures(decoded: &[Decoded]) -> usize {
    decoded.iter().filter(|d| d.facts.is_err()).count()
}

/// The JSON rows.
#[must_use]
pub fn rows(decoded: &[Decoded]) -> Vec<Row<'_>> {
    decoded
        .iter()
        .map(|d| Row {
            bdf: d.bdf,
            line: d.line,
            facts: d.facts.as_ref().ok(),
            reset_methods: d
                .facts
                .as_ref()
                .map(|f| pcipool_pcie::derive_reset_methods(f, None))
                .unwrap_or_default(),
            error: d.facts.as_ref().err().map(ToString::to_string),
        })
        .collect()
}

/// lspci-style text; a device that could not be decoded shows where (`name:line`) and why.
#[must_use]
pub fn text(ids: &PciIds, name: &str, decoded: &[Decoded]) -> String {
    let mut out = String::with_capacity(decoded.len() * 1024);
    for d in decoded {
        match &d.facts {
            Ok(facts) => {
                out.push_str(&title(ids, d.bdf, facts));
                out.push('\n');
                facts_body(
                    &mut out,
                    ids,
                    facts,
                    &pcipool_pcie::derive_reset_methods(facts, None),
                );
            }
            Err(e) => out.push_str(&format!("{} <{name}:{}: {e}>\n", d.bdf, d.line)),
        }
        out.push('\n');
    }
    out
}
