//! NTB adapter profiles and the mapping-fit computation.
//!
//! Two translation styles exist on real adapters:
//! - *direct windows*: a few BAR-backed memory windows, each translating one power-of-two, size-aligned
//!   range (Intel and AMD on-CPU NTBs, IDT, Switchtec direct windows);
//! - *LUT windows*: one aperture split into fixed-size entries of a look-up table (Switchtec LUT windows),
//!   where a mapping takes `ceil(size / entry)` entries;
//! - a *packed aperture*: one large prefetchable window into which the adapter software places many
//!   mappings, each naturally aligned (Dolphin's NTB window; its LUT entry count is not published, so
//!   the window size is the limit modelled).
//!
//! A device's BARs are mapped into the borrower through the borrower's adapter; the borrower's DMA window
//! is mapped towards the device through the lender's adapter. Both must fit.

use serde::{Deserialize, Serialize};

/// Direct (BAR-backed) windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectWindows {
    /// Number of windows available for mappings.
    pub count: u32,
    /// Largest size one window can translate (a power of two).
    pub max_size: u64,
}

/// LUT windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LutWindows {
    /// Entries available for mappings.
    pub entries: u32,
    /// Bytes one entry translates.
    pub entry_size: u64,
}

/// What one NTB adapter can map. Operator profile files are TOML with these fields; the optional ones
/// may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterProfile {
    /// Short name used on the command line.
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Direct windows, if the adapter has them.
    #[serde(default)]
    pub direct: Option<DirectWindows>,
    /// LUT windows, if the adapter has them.
    #[serde(default)]
    pub lut: Option<LutWindows>,
    /// A packed aperture of this many bytes, if the adapter works that way.
    #[serde(default)]
    pub aperture: Option<u64>,
    /// Requester-id translation slots (each borrowed or lent device needs one on each adapter it crosses).
    #[serde(default)]
    pub requester_slots: Option<u32>,
    /// Where the figures come from.
    #[serde(default)]
    pub sources: Vec<String>,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl AdapterProfile {
    /// The profiles shipped with pcipool, with their sources.
    pub fn builtin() -> Vec<Self> {
        vec![
            Self {
                name: "dolphin-pxh830".into(),
                description: "Dolphin PXH830 (PEX8733 NT), factory 256 MiB prefetchable window".into(),
                // The segment LUT's entry count is not published, so the window size is the binding limit.
                // 32 requester entries, 2 reserved for CPUs.
                direct: None,
                lut: None,
                aperture: Some(256 * MIB),
                requester_slots: Some(30),
                sources: vec![
                    "docs.dolphinics.com guides/prefetch.html: default 256 MiB, power of two, dis_config -spms".into(),
                    "Markussen et al., ACM TOCS 2021, sec. 8.6: 32 requester mappings per PXH830, 2 for CPUs".into(),
                ],
            },
            Self {
                name: "dolphin-pxh830-32g".into(),
                description: "Dolphin PXH830 with the 32 GiB window SmartIO recommends".into(),
                direct: None,
                lut: None,
                aperture: Some(32 * GIB),
                requester_slots: Some(30),
                sources: vec!["docs.dolphinics.com smartio/requirements.html: recommend >= 32 GiB on all nodes".into()],
            },
            Self {
                name: "switchtec-direct".into(),
                description: "Microchip Switchtec PFX/PAX NTB, direct windows only (driver default)".into(),
                // ntb_hw_switchtec: max_mw_size module parameter defaults to 2 MiB; direct windows come from
                // the NT partition's BARs (2 usable after the config/scratchpad window).
                direct: Some(DirectWindows { count: 2, max_size: 2 * MIB }),
                lut: None,
                aperture: None,
                requester_slots: None,
                sources: vec!["linux drivers/ntb/hw/mscc/ntb_hw_switchtec.c: max_mw_size default 2 MiB".into()],
            },
            Self {
                name: "switchtec-lut".into(),
                description: "Microchip Switchtec NTB with LUT windows enabled (use_lut_mws=1)".into(),
                direct: Some(DirectWindows { count: 2, max_size: 2 * MIB }),
                lut: Some(LutWindows { entries: 128, entry_size: 64 * KIB }),
                aperture: None,
                requester_slots: None,
                sources: vec!["linux drivers/ntb/hw/mscc/ntb_hw_switchtec.c: MAX_MWS 128, LUT entry 64 KiB".into()],
            },
            Self {
                name: "intel-xeon".into(),
                description: "Intel Xeon on-CPU NTB: 2 memory windows (BAR 2/3 and 4/5, sized by BIOS)".into(),
                // Window size is a BIOS setting; 4 GiB per window is a common firmware choice, not a limit.
                direct: Some(DirectWindows { count: 2, max_size: 4 * GIB }),
                lut: None,
                aperture: None,
                requester_slots: None,
                sources: vec!["linux drivers/ntb/hw/intel/ntb_hw_gen4.h and Documentation/driver-api/ntb.rst: 2 MWs".into()],
            },
            Self {
                name: "amd-epyc".into(),
                description: "AMD on-CPU NTB: per-device window table (2 windows on common parts)".into(),
                direct: Some(DirectWindows { count: 2, max_size: 4 * GIB }),
                lut: None,
                aperture: None,
                requester_slots: None,
                sources: vec!["linux drivers/ntb/hw/amd/ntb_hw_amd.h: dev_data->mw_count".into()],
            },
            Self {
                name: "idt".into(),
                description: "IDT PCIe switch NTB: up to 29 memory windows".into(),
                direct: Some(DirectWindows { count: 29, max_size: 4 * GIB }),
                lut: None,
                aperture: None,
                requester_slots: None,
                sources: vec!["linux drivers/ntb/hw/idt/ntb_hw_idt.h: up to 29 MWs, 24 ports".into()],
            },
        ]
    }

    /// A built-in profile by name.
    pub fn named(name: &str) -> Option<Self> {
        Self::builtin().into_iter().find(|p| p.name == name)
    }
}

/// Where one mapping went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum Placement {
    /// A direct window of this size.
    Direct {
        /// Window size used.
        window: u64,
    },
    /// This many LUT entries.
    Lut {
        /// Entries used.
        entries: u32,
    },
    /// Packed into the aperture at this offset.
    Aperture {
        /// Offset in the aperture.
        offset: u64,
    },
}

/// The result of fitting mappings onto a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fit {
    /// (label, size, placement) of each mapping that fit.
    pub placed: Vec<(String, u64, Placement)>,
    /// (label, size) of each mapping that did not.
    pub unplaced: Vec<(String, u64)>,
    /// The single window size that would hold every mapping (each rounded to a power of two and
    /// naturally aligned): what to enlarge a window or aperture to.
    pub needed_window: u64,
}

impl Fit {
    /// Everything fit.
    pub fn ok(&self) -> bool {
        self.unplaced.is_empty()
    }
}

/// Places mappings largest first: a direct window when one is free and large enough, else the packed
/// aperture, else LUT entries.
pub fn fit(profile: &AdapterProfile, mappings: &[(String, u64)]) -> Fit {
    let mut order: Vec<&(String, u64)> = mappings.iter().filter(|(_, s)| *s > 0).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut windows_left = profile.direct.map_or(0, |d| d.count);
    let mut entries_left = profile.lut.map_or(0, |l| l.entries);
    // Largest first, each a power of two: the next free offset is always aligned for the next mapping.
    let mut aperture_used = 0u64;
    let needed: u64 = order
        .iter()
        .map(|(_, s)| s.checked_next_power_of_two().unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add);
    let mut result = Fit {
        placed: Vec::new(),
        unplaced: Vec::new(),
        needed_window: needed.checked_next_power_of_two().unwrap_or(u64::MAX),
    };
    for (label, size) in order {
        let window = size.checked_next_power_of_two().unwrap_or(u64::MAX);
        let direct_ok = profile
            .direct
            .is_some_and(|d| windows_left > 0 && window <= d.max_size);
        let lut_need = profile
            .lut
            .and_then(|l| u32::try_from(size.div_ceil(l.entry_size.max(1))).ok());
        let aperture_ok = profile.aperture.is_some_and(|a| {
            aperture_used
                .checked_add(window)
                .is_some_and(|end| end <= a)
        });
        if direct_ok {
            windows_left -= 1;
            result
                .placed
                .push((label.clone(), *size, Placement::Direct { window }));
        } else if aperture_ok {
            let offset = aperture_used;
            aperture_used += window;
            result
                .placed
                .push((label.clone(), *size, Placement::Aperture { offset }));
        } else if let Some(need) = lut_need.filter(|n| *n <= entries_left) {
            entries_left -= need;
            result
                .placed
                .push((label.clone(), *size, Placement::Lut { entries: need }));
        } else {
            result.unplaced.push((label.clone(), *size));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(direct: Option<(u32, u64)>, lut: Option<(u32, u64)>) -> AdapterProfile {
        AdapterProfile {
            name: "t".into(),
            description: String::new(),
            direct: direct.map(|(count, max_size)| DirectWindows { count, max_size }),
            lut: lut.map(|(entries, entry_size)| LutWindows {
                entries,
                entry_size,
            }),
            aperture: None,
            requester_slots: None,
            sources: vec![],
        }
    }

    #[test]
    fn fit_bar_larger_than_window_is_unplaced() {
        let f = fit(
            &profile(Some((2, 256 * MIB)), None),
            &[("BAR1".into(), 32 * GIB)],
        );
        assert_eq!(f.unplaced, vec![("BAR1".to_owned(), 32 * GIB)]);
    }

    #[test]
    fn fit_runs_out_of_windows() {
        let maps = [
            ("a".to_owned(), MIB),
            ("b".to_owned(), MIB),
            ("c".to_owned(), MIB),
        ];
        let f = fit(&profile(Some((2, GIB)), None), &maps);
        assert_eq!(f.unplaced.len(), 1);
    }

    #[test]
    fn fit_spills_to_lut_entries() {
        let maps = [("a".to_owned(), 4 * MIB), ("b".to_owned(), 128 * KIB)];
        let f = fit(&profile(Some((1, 2 * MIB)), Some((128, 64 * KIB))), &maps);
        assert_eq!(
            (f.ok(), f.placed[0].2.clone()),
            (true, Placement::Lut { entries: 64 })
        );
    }

    #[test]
    fn fit_packs_aperture_until_full() {
        let p = AdapterProfile {
            aperture: Some(256 * MIB),
            ..profile(None, None)
        };
        let maps = [
            ("a".to_owned(), 128 * MIB),
            ("b".to_owned(), 64 * MIB),
            ("c".to_owned(), 128 * MIB),
        ];
        let f = fit(&p, &maps);
        assert_eq!(
            (f.unplaced, f.needed_window),
            (vec![("b".to_owned(), 64 * MIB)], 512 * MIB)
        );
    }

    #[test]
    fn builtin_profiles_have_sources() {
        assert!(
            AdapterProfile::builtin()
                .iter()
                .all(|p| !p.sources.is_empty())
        );
    }
}
