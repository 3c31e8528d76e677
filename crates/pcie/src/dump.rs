//! The `lspci -x` / `-xxx` / `-xxxx` hex dump format: parse (several devices per file) and write.
//!
//! ```text
//! 0000:03:00.0 Non-Volatile memory controller: Samsung ...   <- device line: [domain:]bus:dev.fn
//!         Subsystem: ...                                        <- indented -v text: ignored
//! 00: 4d 14 08 a8 06 04 10 00 00 02 08 01 00 00 00 00         <- data: offset, up to 16 bytes
//! ```
//! Bytes a dump does not cover read as 0xff, as lspci's dump access method does.

use std::fmt::Write as _;

use crate::bdf::Bdf;
use crate::config::EXTENDED_SIZE;

/// One device read from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedDevice {
    /// Address from the device line.
    pub bdf: Bdf,
    /// 1-based line of the device line.
    pub line: usize,
    /// Config bytes, as long as the highest offset the dump covered.
    pub bytes: Vec<u8>,
}

/// What is wrong with a dump, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct DumpError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub kind: DumpErrorKind,
}

/// The kinds of dump error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpErrorKind {
    /// Hex data before any device line.
    #[error("hex data before any device line")]
    DataBeforeDevice,
    /// A byte that is not two hex digits.
    #[error("'{0}' is not a hex byte")]
    BadByte(String),
    /// More than 16 bytes on one line.
    #[error("{0} bytes on one line (at most 16)")]
    TooManyBytes(usize),
    /// Data beyond 4096 bytes.
    #[error("offset {0:#x} is beyond the 4096-byte config space")]
    OffsetOutOfRange(usize),
    /// A line that is neither a device line, hex data, indented text nor blank.
    #[error("unrecognised line '{0}'")]
    Unrecognised(String),
    /// A device line with no hex data after it.
    #[error("device {0} has no hex data")]
    NoData(Bdf),
    /// The file holds no device at all.
    #[error("no device found")]
    Empty,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[dddd:]bb:dd.f` followed by a space or the end of the line.
fn device_line(line: &str) -> Option<Bdf> {
    let token = line.split_whitespace().next()?;
    let (_, func) = token.rsplit_once('.')?;
    if func.len() != 1 {
        return None;
    }
    token.parse().ok()
}

/// `OFF: xx xx ...` -> (offset, bytes). `None` when the line does not look like data at all.
fn data_line(line: &str, number: usize) -> Option<Result<(usize, Vec<u8>), DumpError>> {
    let (offset, rest) = line.split_once(':')?;
    if !is_hex(offset) || offset.len() > 3 || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let err = |kind| Some(Err(DumpError { line: number, kind }));
    let offset = usize::from_str_radix(offset, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for token in rest.split_whitespace() {
        if token.len() != 2 || !is_hex(token) {
            return err(DumpErrorKind::BadByte(token.to_owned()));
        }
        match u8::from_str_radix(token, 16) {
            Ok(b) => bytes.push(b),
            Err(_) => return err(DumpErrorKind::BadByte(token.to_owned())),
        }
    }
    if bytes.len() > 16 {
        return err(DumpErrorKind::TooManyBytes(bytes.len()));
    }
    if offset + bytes.len() > EXTENDED_SIZE {
        return err(DumpErrorKind::OffsetOutOfRange(offset));
    }
    Some(Ok((offset, bytes)))
}

/// Parses every device in a dump.
///
/// # Errors
/// The first malformed line, or [`DumpErrorKind::Empty`] when there is no device.
pub fn parse_dump(text: &str) -> Result<Vec<DumpedDevice>, DumpError> {
    let mut devices: Vec<DumpedDevice> = Vec::new();
    let mut last_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        last_line = number;
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some(parsed) = data_line(line, number) {
            let (offset, bytes) = parsed?;
            let device = devices.last_mut().ok_or(DumpError {
                line: number,
                kind: DumpErrorKind::DataBeforeDevice,
            })?;
            let end = offset + bytes.len();
            if device.bytes.len() < end {
                device.bytes.resize(end, 0xff);
            }
            device.bytes[offset..end].copy_from_slice(&bytes);
            continue;
        }
        if let Some(bdf) = device_line(line) {
            if let Some(prev) = devices.last()
                && prev.bytes.is_empty()
            {
                return Err(DumpError {
                    line: prev.line,
                    kind: DumpErrorKind::NoData(prev.bdf),
                });
            }
            devices.push(DumpedDevice {
                bdf,
                line: number,
                bytes: Vec::new(),
            });
            continue;
        }
        let shown: String = line.chars().take(60).collect();
        return Err(DumpError {
            line: number,
            kind: DumpErrorKind::Unrecognised(shown),
        });
    }
    match devices.last() {
        None => Err(DumpError {
            line: last_line,
            kind: DumpErrorKind::Empty,
        }),
        Some(d) if d.bytes.is_empty() => Err(DumpError {
            line: d.line,
            kind: DumpErrorKind::NoData(d.bdf),
        }),
        Some(_) => Ok(devices),
    }
}

/// Appends one device in `lspci -xxxx` layout (`title` follows the address on the device line).
pub fn write_dump(out: &mut String, bdf: Bdf, title: &str, bytes: &[u8]) {
    let _ = writeln!(out, "{bdf} {title}");
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:02x}:", row * 16);
        for b in chunk {
            let _ = write!(out, " {b:02x}");
        }
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_two_devices_with_indented_text() {
        let text = "00:00.0 Host bridge: X\n\tSubsystem: Y\n00: 86 80 57 0d\n\n0000:01:00.1 Z\n00: 01 02\n";
        let devices = parse_dump(text).expect("valid dump");
        let summary: Vec<(String, usize)> = devices
            .iter()
            .map(|d| (d.bdf.to_string(), d.bytes.len()))
            .collect();
        assert_eq!(
            summary,
            vec![("0000:00:00.0".into(), 4), ("0000:01:00.1".into(), 2)]
        );
    }

    #[test]
    fn parse_hole_reads_as_all_ones() {
        let devices = parse_dump("00:00.0 X\n10: 00\n").expect("valid dump");
        assert_eq!(devices[0].bytes[0], 0xff);
    }

    #[test]
    fn parse_data_before_device_names_line() {
        assert_eq!(
            parse_dump("\n00: 00 11\n"),
            Err(DumpError {
                line: 2,
                kind: DumpErrorKind::DataBeforeDevice
            })
        );
    }

    #[test]
    fn parse_bad_byte_names_token() {
        assert_eq!(
            parse_dump("00:00.0 X\n00: 0g\n"),
            Err(DumpError {
                line: 2,
                kind: DumpErrorKind::BadByte("0g".into())
            })
        );
    }

    #[test]
    fn parse_offset_past_4096_is_rejected() {
        assert_eq!(
            parse_dump("00:00.0 X\nff0: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n")
                .map_err(|e| e.kind),
            Err(DumpErrorKind::TooManyBytes(17))
        );
    }

    #[test]
    fn parse_garbage_line_is_unrecognised() {
        assert_eq!(parse_dump("hello\n").map_err(|e| e.line), Err(1));
    }

    #[test]
    fn parse_device_without_data_is_error() {
        assert_eq!(
            parse_dump("00:00.0 X\n00:01.0 Y\n00: 00\n").map_err(|e| e.line),
            Err(1)
        );
    }

    #[test]
    fn parse_empty_text_is_error() {
        assert_eq!(
            parse_dump("").map_err(|e| e.kind),
            Err(DumpErrorKind::Empty)
        );
    }

    #[test]
    fn write_then_parse_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let bdf: Bdf = "0000:05:00.0".parse().expect("valid");
        let mut text = String::new();
        write_dump(&mut text, bdf, "Test", &bytes);
        let parsed = parse_dump(&text).expect("valid dump");
        assert_eq!(parsed[0].bytes, bytes);
    }
}
