//! The lab description (TOML): hosts, their NVMe drives and hot-plug slots, memory.

use std::collections::BTreeSet;

use pcipool_fabric::{Fdid, NodeId};
use pcipool_pcie::Bdf;
use serde::Deserialize;

use crate::LabError;

/// The shipped 3-host lab: two lenders with two NVMe drives each (one with SR-IOV), one borrower.
pub const VM_3: &str = include_str!("../../../labs/vm-3.toml");

/// A lab: the guests that are the pool's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The hosts, one guest each.
    pub host: Vec<HostSpec>,
}

/// One host: a guest with its own kernel and agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The pool's name for it (`n1`, ...).
    pub name: NodeId,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// PCIe root ports that take hot-plugged devices (`rp1`..): its drives sit in the first ones,
    /// its NIC in the last, and a borrowed drive goes into one of the others.
    #[serde(default = "default_slots")]
    pub slots: u8,
    /// Its NVMe drives.
    #[serde(default)]
    pub nvme: Vec<DriveSpec>,
}

/// One NVMe drive, backed by a raw image file on the machine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveSpec {
    /// Its NVMe serial; QEMU's ids for it and its image's file name are made from it.
    pub serial: String,
    /// Image size in MiB.
    #[serde(default = "default_size")]
    pub size_mib: u64,
    /// SR-IOV virtual functions (an NVMe subsystem with an SR-IOV controller): such a drive stays on
    /// its lender, because QEMU cannot hot-plug an NVMe subsystem.
    #[serde(default)]
    pub sriov_vfs: Option<u8>,
}

fn default_memory() -> u32 {
    512
}

fn default_slots() -> u8 {
    6
}

fn default_size() -> u64 {
    64
}

/// Root ports sit at 00:03.0 onwards on the guest's root bus, one device number each.
const MAX_SLOTS: u8 = 28;

impl DriveSpec {
    /// Whether the fabric can move it to another guest.
    pub fn lendable(&self) -> bool {
        self.sriov_vfs.is_none()
    }

    /// The first 12 bytes the lab writes into its image: a test or an operator reads them on
    /// whichever guest holds the drive.
    pub fn marker(&self) -> String {
        let mut marker: String = self.serial.chars().take(12).collect();
        while marker.len() < 12 {
            marker.push('.');
        }
        marker
    }
}

impl HostSpec {
    /// The root port (1-based) of the host's `index`th drive.
    pub fn drive_slot(index: usize) -> u8 {
        u8::try_from(index + 1).unwrap_or(u8::MAX)
    }

    /// The root port of its NIC: the last one.
    pub fn nic_slot(&self) -> u8 {
        self.slots
    }

    /// The root ports a borrowed drive may go into: those between its drives and its NIC.
    pub fn free_slots(&self) -> Vec<String> {
        (Self::drive_slot(self.nvme.len())..self.nic_slot())
            .map(|p| format!("rp{p}"))
            .collect()
    }

    /// The address the guest's kernel gives the drive in root port `slot`: each root port is a bridge
    /// whose secondary bus the firmware numbers in slot order, and the guest has no other bridges.
    /// (None never happens: device 0 function 0 is in range.)
    pub fn address_in_slot(slot: u8) -> Option<Bdf> {
        Bdf::new(0, slot, 0, 0).ok()
    }

    /// Its drives the pool lends, with their fabric device ids.
    pub fn lent_drives(&self) -> Vec<(Fdid, &DriveSpec)> {
        self.nvme
            .iter()
            .enumerate()
            .filter(|(_, d)| d.lendable())
            .filter_map(|(i, d)| {
                let bdf = Self::address_in_slot(Self::drive_slot(i))?;
                let fdid = Fdid {
                    node: self.name,
                    bdf,
                    vf: None,
                };
                Some((fdid, d))
            })
            .collect()
    }
}

impl Description {
    /// Parses and checks a description.
    ///
    /// # Errors
    /// [`LabError::Description`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, LabError> {
        let desc: Self = toml::from_str(text).map_err(|e| LabError::Description(e.to_string()))?;
        desc.check()?;
        Ok(desc)
    }

    fn check(&self) -> Result<(), LabError> {
        let bad = |m: String| Err(LabError::Description(m));
        if self.host.is_empty() {
            return bad("a lab needs at least one [[host]]".into());
        }
        let mut names = BTreeSet::new();
        let mut serials = BTreeSet::new();
        for h in &self.host {
            if !names.insert(h.name) {
                return bad(format!("host {} appears twice", h.name));
            }
            if !(128..=16384).contains(&h.memory_mib) {
                return bad(format!(
                    "host {}: memory_mib {} is outside 128..=16384",
                    h.name, h.memory_mib
                ));
            }
            let needed = h.nvme.len() + 1;
            if usize::from(h.slots) < needed || h.slots > MAX_SLOTS {
                return bad(format!(
                    "host {}: slots {} must hold its {} drive(s) and its NIC (at least {needed}, at most {MAX_SLOTS})",
                    h.name,
                    h.slots,
                    h.nvme.len()
                ));
            }
            for d in &h.nvme {
                let ok = !d.serial.is_empty()
                    && d.serial.len() <= 20
                    && d.serial
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok {
                    return bad(format!(
                        "host {}: drive serial {:?} must be 1 to 20 letters, digits or '-'",
                        h.name, d.serial
                    ));
                }
                if !serials.insert(d.serial.clone()) {
                    return bad(format!("drive serial {} appears twice", d.serial));
                }
                if !(1..=65536).contains(&d.size_mib) {
                    return bad(format!(
                        "drive {}: size_mib {} is outside 1..=65536",
                        d.serial, d.size_mib
                    ));
                }
                if d.sriov_vfs.is_some_and(|v| !(1..=8).contains(&v)) {
                    return bad(format!("drive {}: sriov_vfs must be 1..=8", d.serial));
                }
            }
        }
        Ok(())
    }

    /// The host named `node`.
    pub fn host(&self, node: NodeId) -> Option<&HostSpec> {
        self.host.iter().find(|h| h.name == node)
    }

    /// Every drive the pool lends, with its fabric device id and its lender.
    pub fn lent_drives(&self) -> Vec<(Fdid, &DriveSpec)> {
        self.host.iter().flat_map(HostSpec::lent_drives).collect()
    }

    /// The fabric description the controller places on: every host on one switch, the hypervisor.
    pub fn fabric_toml(&self) -> String {
        let mut text = String::from("[[switch]]\nname = \"hypervisor\"\n");
        for h in &self.host {
            text.push_str(&format!(
                "\n[[host]]\nname = \"{}\"\nnode = {}\nadapters = [\"dolphin-pxh830-32g\"]\nlinks = [\"switch:hypervisor\"]\n",
                h.name, h.name.0
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_lab_has_two_lenders_of_two_drives_one_with_sriov_and_a_borrower() {
        let lab = Description::parse(VM_3).expect("the shipped lab parses");
        let drives: Vec<(String, usize, usize)> = lab
            .host
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    h.nvme.len(),
                    h.nvme.iter().filter(|d| d.sriov_vfs.is_some()).count(),
                )
            })
            .collect();
        let lent: Vec<String> = lab
            .lent_drives()
            .iter()
            .map(|(f, d)| format!("{f} {}", d.serial))
            .collect();
        assert_eq!(
            (drives, lent),
            (
                vec![
                    ("n1".into(), 2, 1),
                    ("n2".into(), 2, 0),
                    ("n3".into(), 0, 0)
                ],
                vec![
                    "n1:0000:01:00.0 n1a".to_owned(),
                    "n2:0000:01:00.0 n2a".to_owned(),
                    "n2:0000:02:00.0 n2b".to_owned()
                ]
            )
        );
    }

    #[test]
    fn free_slots_lie_between_the_drives_and_the_nic() {
        let lab = Description::parse(VM_3).expect("parses");
        let free: Vec<Vec<String>> = lab.host.iter().map(HostSpec::free_slots).collect();
        assert_eq!(
            free,
            vec![
                vec!["rp3", "rp4", "rp5"],
                vec!["rp3", "rp4", "rp5"],
                vec!["rp1", "rp2", "rp3", "rp4", "rp5"]
            ]
        );
    }

    #[test]
    fn bad_descriptions_say_what_is_wrong() {
        let cases = [
            ("", "missing field `host`"),
            ("[[host]]\nname = \"x1\"\n", "node"),
            (
                "[[host]]\nname = \"n1\"\n[[host]]\nname = \"n1\"\n",
                "host n1 appears twice",
            ),
            (
                "[[host]]\nname = \"n1\"\nslots = 1\n[[host.nvme]]\nserial = \"a\"\n",
                "slots 1 must hold",
            ),
            (
                "[[host]]\nname = \"n1\"\n[[host.nvme]]\nserial = \"a,b\"\n",
                "must be 1 to 20 letters",
            ),
            (
                "[[host]]\nname = \"n1\"\n[[host.nvme]]\nserial = \"a\"\n[[host]]\nname = \"n2\"\n[[host.nvme]]\nserial = \"a\"\n",
                "drive serial a appears twice",
            ),
            ("[[host]]\nname = \"n1\"\ncolour = 3\n", "unknown field"),
            (
                "[[host]]\nname = \"n1\"\n[[host.nvme]]\nserial = \"a\"\nsriov_vfs = 0\n",
                "sriov_vfs must be 1..=8",
            ),
        ];
        for (text, says) in cases {
            let err = Description::parse(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_marker_is_twelve_bytes_made_from_the_serial() {
        let d = |s: &str| DriveSpec {
            serial: s.into(),
            size_mib: 1,
            sriov_vfs: None,
        };
        assert_eq!(
            (d("n1a").marker(), d("a-very-long-serial").marker()),
            ("n1a.........".to_owned(), "a-very-long-".to_owned())
        );
    }
}
