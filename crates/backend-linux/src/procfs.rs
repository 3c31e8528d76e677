//! The two procfs tables pcipool reads for its safety checks: what is mounted where, and which
//! interface carries the default route. Parsers are pure; [`read_mounts`] and [`read_default_routes`]
//! add the file reads.

use std::path::Path;

use crate::sysfs::{SysfsError, read_opt};

/// One mount from `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the backing device (`0:N` for virtual filesystems).
    pub dev: String,
    /// Where it is mounted.
    pub mount_point: String,
}

impl Mount {
    /// Whether a block device backs it (major 0 is reserved for virtual filesystems).
    pub fn is_block_backed(&self) -> bool {
        !self.dev.starts_with("0:")
    }
}

/// Parses `/proc/self/mountinfo` (fields: id, parent, major:minor, root, mount point, ...).
/// Malformed lines are skipped: the table is advisory input to a safety check that also looks at sysfs.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let dev = f.nth(2)?;
            let mount_point = f.nth(1)?;
            dev.contains(':').then(|| Mount {
                dev: dev.to_owned(),
                mount_point: unescape_octal(mount_point),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = (bytes[i] == b'\\')
            .then(|| s.get(i + 1..i + 4))
            .flatten()
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Interfaces with an IPv4 default route, from `/proc/net/route` (destination and mask zero).
pub fn parse_ipv4_default_routes(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
        })
        .collect()
}

/// Interfaces with an IPv6 default route, from `/proc/net/ipv6_route` (::/0, not the loopback).
pub fn parse_ipv6_default_routes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let default = f.len() >= 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00";
            (default && f[9] != "lo").then(|| f[9].to_owned())
        })
        .collect()
}

/// Reads the mount table.
///
/// # Errors
/// Read errors other than a missing file.
pub fn read_mounts(proc: &Path) -> Result<Vec<Mount>, SysfsError> {
    Ok(read_opt(&proc.join("self/mountinfo"))?
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default())
}

/// Reads the interfaces that carry a default route (IPv4 and IPv6), deduplicated.
///
/// # Errors
/// Read errors other than a missing file.
pub fn read_default_routes(proc: &Path) -> Result<Vec<String>, SysfsError> {
    let mut ifaces = read_opt(&proc.join("net/route"))?
        .map(|t| parse_ipv4_default_routes(&t))
        .unwrap_or_default();
    ifaces.extend(
        read_opt(&proc.join("net/ipv6_route"))?
            .map(|t| parse_ipv6_default_routes(&t))
            .unwrap_or_default(),
    );
    ifaces.sort();
    ifaces.dedup();
    Ok(ifaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_root_on_block_device() {
        let text =
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n22 27 0:21 / /proc rw - proc proc rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts[0],
            Mount {
                dev: "254:0".into(),
                mount_point: "/".into()
            }
        );
    }

    #[test]
    fn mountinfo_escaped_space_is_decoded() {
        let mounts = parse_mountinfo("30 1 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw\n");
        assert_eq!(mounts[0].mount_point, "/mnt/my disk");
    }

    #[test]
    fn mountinfo_garbage_line_is_skipped() {
        assert_eq!(parse_mountinfo("garbage\n"), Vec::new());
    }

    #[test]
    fn ipv4_default_route_found() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
                    eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_ipv4_default_routes(text), vec!["eth0".to_owned()]);
    }

    #[test]
    fn ipv6_default_route_skips_loopback() {
        let zero = "00000000000000000000000000000000";
        let text = format!(
            "{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
             {zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200 lo\n"
        );
        assert_eq!(parse_ipv6_default_routes(&text), vec!["eth0".to_owned()]);
    }
}
