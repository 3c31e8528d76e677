//! A reader for the parts of `lspci -vvv` text the parity test compares. It is deliberately
//! independent of pcipool's decoder: it reads lspci's words, not config bytes.

use pcipool_pcie::Bdf;

/// One capability line: `Capabilities: [40] Name...` or `[100 v1] Name...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapLine {
    pub offset: u16,
    /// `Some` for extended capabilities.
    pub version: Option<u8>,
    /// The text after `] `.
    pub text: String,
}

/// What lspci printed about one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LspciDevice {
    pub bdf: Option<Bdf>,
    pub caps: Vec<CapLine>,
    /// (index, "I/O" | "32-bit" | "64-bit" | "low-1M", prefetchable).
    pub regions: Vec<(u8, String, bool)>,
    /// SR-IOV VF BARs, same shape.
    pub vf_regions: Vec<(u8, String, bool)>,
    /// (address text, disabled).
    pub rom: Option<(String, bool)>,
    /// LnkCap (speed, width) per Express capability, in order.
    pub link_caps: Vec<(String, u8)>,
    /// LnkSta (speed, width).
    pub link_stas: Vec<(String, u8)>,
    /// FLReset+/- from DevCap, when printed.
    pub flr: Vec<bool>,
    /// ACSCap and ACSCtl flags (7 each, in lspci's order).
    pub acs_caps: Vec<Vec<bool>>,
    /// ACSCtl.
    pub acs_ctls: Vec<Vec<bool>>,
    /// SR-IOV Total VFs.
    pub total_vfs: Vec<u16>,
    /// Resizable BAR entries: (bar, current bytes, supported bytes) — from the Physical Resizable BAR cap.
    pub rebar: Vec<(u8, u64, Vec<u64>)>,
}

fn size_bytes(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches(',');
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let shift = match unit {
        "B" => 0,
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        "PB" => 50,
        "EB" => 60,
        _ => return None,
    };
    Some(n << shift)
}

fn flags(text: &str, names: &[&str]) -> Vec<bool> {
    names
        .iter()
        .map(|n| text.contains(&format!("{n}+")))
        .collect()
}

pub const ACS_NAMES: [&str; 7] = [
    "SrcValid",
    "TransBlk",
    "ReqRedir",
    "CmpltRedir",
    "UpstreamFwd",
    "EgressCtrl",
    "DirectTrans",
];

fn speed_width(text: &str) -> Option<(String, u8)> {
    let speed = text.split("Speed ").nth(1)?;
    let speed: String = speed
        .chars()
        .take_while(|c| !matches!(c, ',' | ' '))
        .collect();
    let width = text.split("Width x").nth(1)?;
    let width: String = width.chars().take_while(char::is_ascii_digit).collect();
    Some((speed, width.parse().ok()?))
}

/// Splits `lspci -vvv` output into devices.
pub fn parse(text: &str) -> Vec<LspciDevice> {
    let mut devices: Vec<LspciDevice> = Vec::new();
    let mut in_devcap = false;
    let mut current_cap = String::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with(['\t', ' ']) {
            let token = line.split_whitespace().next().unwrap_or("");
            devices.push(LspciDevice {
                bdf: token.parse().ok(),
                ..LspciDevice::default()
            });
            continue;
        }
        let Some(dev) = devices.last_mut() else {
            continue;
        };
        let body = line.trim();
        if let Some(rest) = body.strip_prefix("Capabilities: [") {
            let Some((head, text)) = rest.split_once("] ") else {
                continue;
            };
            let (off, version) = match head.split_once(" v") {
                Some((o, v)) => (o, v.parse().ok()),
                None => (head, None),
            };
            let Ok(offset) = u16::from_str_radix(off, 16) else {
                continue;
            };
            current_cap = text.to_owned();
            in_devcap = false;
            dev.caps.push(CapLine {
                offset,
                version,
                text: text.to_owned(),
            });
            continue;
        }
        if let Some(rest) = body.strip_prefix("Region ") {
            let Some((idx, desc)) = rest.split_once(": ") else {
                continue;
            };
            let Ok(index) = idx.parse::<u8>() else {
                continue;
            };
            let kind = if desc.starts_with("I/O") {
                "I/O"
            } else if desc.contains("64-bit") {
                "64-bit"
            } else if desc.contains("low-1M") {
                "low-1M"
            } else {
                "32-bit"
            };
            let pref = desc.contains(", prefetchable");
            let region = (index, kind.to_owned(), pref);
            if current_cap.starts_with("Single Root I/O Virtualization") {
                dev.vf_regions.push(region);
            } else {
                dev.regions.push(region);
            }
            continue;
        }
        if let Some(rest) = body.strip_prefix("Expansion ROM at ") {
            let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
            dev.rom = Some((addr, rest.contains("[disabled]")));
            continue;
        }
        if current_cap.starts_with("Express") {
            if let Some(rest) = body.strip_prefix("DevCap:") {
                in_devcap = true;
                if rest.contains("FLReset") {
                    dev.flr.push(rest.contains("FLReset+"));
                }
                continue;
            }
            if body.starts_with("DevCtl:") {
                in_devcap = false;
            }
            if in_devcap && body.contains("FLReset") {
                dev.flr.push(body.contains("FLReset+"));
            }
            if let Some(sw) = body.strip_prefix("LnkCap:").and_then(speed_width) {
                dev.link_caps.push(sw);
            }
            if let Some(sw) = body.strip_prefix("LnkSta:").and_then(speed_width) {
                dev.link_stas.push(sw);
            }
        }
        if let Some(rest) = body.strip_prefix("ACSCap:") {
            dev.acs_caps.push(flags(rest, &ACS_NAMES));
        }
        if let Some(rest) = body.strip_prefix("ACSCtl:") {
            dev.acs_ctls.push(flags(rest, &ACS_NAMES));
        }
        if body.contains("Total VFs:") {
            let total = body
                .split("Total VFs: ")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .and_then(|t| t.trim().parse().ok());
            if let Some(total) = total {
                dev.total_vfs.push(total);
            }
        }
        if current_cap.starts_with("Physical Resizable BAR")
            && let Some(rest) = body.strip_prefix("BAR ")
        {
            let Some((bar, rest)) = rest.split_once(": current size: ") else {
                continue;
            };
            let Some((current, supported)) = rest.split_once(", supported: ") else {
                continue;
            };
            let (Ok(bar), Some(current)) = (bar.parse::<u8>(), size_bytes(current)) else {
                continue;
            };
            let supported: Vec<u64> = supported
                .split_whitespace()
                .filter_map(size_bytes)
                .collect();
            dev.rebar.push((bar, current, supported));
        }
    }
    devices
}
