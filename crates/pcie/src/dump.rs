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

/// `[dddd:]bb:dd.f` followed by a space or the end of the line.
fn device_line(line: &str) -> Option<Bdf> {
    let token = line.split_whitespace().next()?;
    let (_, func) = token.rsplit_once('.')?;
    if func.len() != 1 {
        return None;
    }
    token.parse().ok()
}

/// Hex digit values, 0xff for anything else: a table lookup keeps the hot loop branch-light.
const HEX: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i: u8 = 0;
    while i < 10 {
        table[(b'0' + i) as usize] = i;
        i += 1;
    }
    let mut i: u8 = 0;
    while i < 6 {
        table[(b'a' + i) as usize] = 10 + i;
        table[(b'A' + i) as usize] = 10 + i;
        i += 1;
    }
    table
};

fn hex_digit(b: u8) -> Option<u8> {
    let v = HEX[usize::from(b)];
    (v != 0xff).then_some(v)
}

/// The exact layout lspci writes (" xx" repeated, at most 16 times). `None` sends the line to the
/// general parser, which also produces the error messages.
fn fast_bytes(rest: &[u8], out: &mut [u8; 16]) -> Option<usize> {
    if !rest.len().is_multiple_of(3) || rest.len() > 48 {
        return None;
    }
    let mut digits = 0u8;
    let mut separators_ok = true;
    for (slot, chunk) in out.iter_mut().zip(rest.chunks_exact(3)) {
        let (hi, lo) = (HEX[usize::from(chunk[1])], HEX[usize::from(chunk[2])]);
        separators_ok &= chunk[0] == b' ';
        digits |= hi | lo;
        *slot = hi << 4 | lo;
    }
    // Valid digits are 0..=15; an invalid one is 0xff and shows in the high nibble.
    (separators_ok && digits & 0xf0 == 0).then_some(rest.len() / 3)
}

/// `OFF: xx xx ...` -> (offset, bytes). `None` when the line does not look like data at all.
/// Byte-level on purpose: dumps of thousands of devices are mostly these lines.
/// One hex line: `count` bytes starting at `offset`.
struct DataLine {
    offset: usize,
    bytes: [u8; 16],
    count: usize,
}

fn data_line(line: &str, number: usize) -> Option<Result<DataLine, DumpError>> {
    let raw = line.as_bytes();
    let colon = raw.iter().take(4).position(|&b| b == b':')?;
    if colon == 0 || raw.get(colon + 1).is_some_and(|&b| b != b' ') {
        return None;
    }
    let mut offset = 0usize;
    for &b in &raw[..colon] {
        offset = offset * 16 + usize::from(hex_digit(b)?);
    }
    let err = |kind| Some(Err(DumpError { line: number, kind }));
    let bad = |from: usize| {
        let token: String = line[from..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        DumpErrorKind::BadByte(token)
    };
    let mut bytes = [0u8; 16];
    if let Some(count) = fast_bytes(&raw[colon + 1..], &mut bytes) {
        if offset + count > EXTENDED_SIZE {
            return Some(Err(DumpError {
                line: number,
                kind: DumpErrorKind::OffsetOutOfRange(offset),
            }));
        }
        return Some(Ok(DataLine {
            offset,
            bytes,
            count,
        }));
    }
    let mut count = 0usize;
    let mut i = colon + 1;
    while i < raw.len() {
        if raw[i] == b' ' || raw[i] == b'\t' {
            i += 1;
            continue;
        }
        let pair = (
            raw.get(i).copied().and_then(hex_digit),
            raw.get(i + 1).copied().and_then(hex_digit),
        );
        let ends = raw.get(i + 2).is_none_or(|&b| b == b' ' || b == b'\t');
        match pair {
            (Some(hi), Some(lo)) if ends => {
                if let Some(slot) = bytes.get_mut(count) {
                    *slot = hi << 4 | lo;
                }
                count += 1;
            }
            _ => return err(bad(i)),
        }
        i += 2;
    }
    if count > 16 {
        return err(DumpErrorKind::TooManyBytes(count));
    }
    if offset + count > EXTENDED_SIZE {
        return err(DumpErrorKind::OffsetOutOfRange(offset));
    }
    Some(Ok(DataLine {
        offset,
        bytes,
        count,
    }))
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
        // Indented lines are lspci's -v text; skip them before any other work.
        if raw.starts_with(['\t', ' ']) {
            continue;
        }
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(parsed) = data_line(line, number) {
            let DataLine {
                offset,
                bytes,
                count,
            } = parsed?;
            let device = devices.last_mut().ok_or(DumpError {
                line: number,
                kind: DumpErrorKind::DataBeforeDevice,
            })?;
            let end = offset + count;
            if device.bytes.len() < end {
                device.bytes.resize(end, 0xff);
            }
            device.bytes[offset..end].copy_from_slice(&bytes[..count]);
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
                bytes: Vec::with_capacity(EXTENDED_SIZE),
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
    fn parse_bad_digit_in_lspci_layout_is_rejected() {
        assert_eq!(
            parse_dump("00:00.0 X\n00: 01 0x 11\n").map_err(|e| e.kind),
            Err(DumpErrorKind::BadByte("0x".into()))
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
