//! Decode parity with lspci: for every fixture, the facts `lspci -F FILE -vvv` prints (capability ids and
//! offsets, link speed/width, FLR, ACS bits, SR-IOV TotalVFs, BAR kinds, expansion ROM, resizable BAR
//! sizes) must equal what pcipool decodes from the same bytes. lspci runs for real.

use std::path::Path;

use pcipool_pcie::caps::capability_name;
use pcipool_pcie::dump::{parse_dump, write_dump};
use pcipool_pcie::ecaps::ext_capability_name;
use pcipool_pcie::{BarKind, Bdf, DeviceFacts, LinkSpeed, presets};

use crate::lspci_text::{self, LspciDevice};
use crate::support::run_lspci;

fn speed(s: LinkSpeed) -> String {
    match s {
        LinkSpeed::Unknown(_) => "unknown".to_owned(),
        known => known.to_string(),
    }
}

fn acs_flags(bits: pcipool_pcie::ecaps::AcsBits) -> Vec<bool> {
    vec![
        bits.source_validation,
        bits.translation_blocking,
        bits.request_redirect,
        bits.completion_redirect,
        bits.upstream_forwarding,
        bits.egress_control,
        bits.direct_translated,
    ]
}

fn regions(bars: &[pcipool_pcie::Bar]) -> Vec<(u8, String, bool)> {
    bars.iter()
        .map(|b| {
            let kind = match b.kind {
                BarKind::Io => "I/O",
                BarKind::Memory32 => "32-bit",
                BarKind::Memory64 => "64-bit",
                BarKind::MemoryBelow1M => "low-1M",
            };
            (b.index, kind.to_owned(), b.prefetchable)
        })
        .collect()
}

/// In dump mode (`-F`) lspci 3.9 also prints the upper dword of a 64-bit BAR as a region of its own
/// (decoded from whatever bits the high address has). That slot is not a BAR, so drop those lines.
fn skip_upper_halves(
    bars: &[pcipool_pcie::Bar],
    lspci: &[(u8, String, bool)],
) -> Vec<(u8, String, bool)> {
    let upper: Vec<u8> = bars
        .iter()
        .filter(|b| b.kind == BarKind::Memory64)
        .map(|b| b.index + 1)
        .collect();
    lspci
        .iter()
        .filter(|r| !upper.contains(&r.0))
        .cloned()
        .collect()
}

/// lspci's words start with our name, followed by the end or a separator (so "MSI" does not match "MSI-X").
fn names_match(text: &str, name: &str) -> bool {
    text.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', ':', '(', ',']))
}

fn compare(label: &str, ours: &DeviceFacts, theirs: &LspciDevice, out: &mut Vec<String>) {
    let mut mismatch = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{label}: {what}: pcipool {a} != lspci {b}"));
        }
    };
    // Capabilities: lspci lines that are not capabilities ("<chain looped>", "<access denied>") are
    // reported by pcipool as warnings instead.
    let lspci_caps: Vec<_> = theirs
        .caps
        .iter()
        .filter(|c| !c.text.starts_with('<'))
        .collect();
    let std_caps: Vec<String> = lspci_caps
        .iter()
        .filter(|c| c.version.is_none())
        .map(|c| {
            format!(
                "[{:02x}] {}",
                c.offset,
                c.text.chars().take(40).collect::<String>()
            )
        })
        .collect();
    let our_std: Vec<String> = ours
        .capabilities
        .iter()
        .zip(
            lspci_caps
                .iter()
                .filter(|c| c.version.is_none())
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .map(|(c, l)| {
            let name = capability_name(c.id);
            let text = l.map_or("", |l| l.text.as_str());
            let same = names_match(text, name)
                || (name == "Unknown" && text.contains(&format!("{:02x}", c.id)));
            let shown = if same {
                text.chars().take(40).collect()
            } else {
                format!("<id {:#04x} {name}>", c.id)
            };
            format!("[{:02x}] {shown}", c.offset)
        })
        .collect();
    mismatch(
        "capabilities",
        format!("{our_std:?}"),
        format!("{std_caps:?}"),
    );

    let ext: Vec<_> = lspci_caps.iter().filter(|c| c.version.is_some()).collect();
    let ext_caps: Vec<String> = ext
        .iter()
        .map(|c| {
            format!(
                "[{:03x} v{}] {}",
                c.offset,
                c.version.unwrap_or(0),
                c.text.chars().take(30).collect::<String>()
            )
        })
        .collect();
    let our_ext: Vec<String> = ours
        .extended_capabilities
        .iter()
        .zip(ext.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(c, l)| {
            let name = ext_capability_name(c.id);
            let text = l.map_or("", |l| l.text.as_str());
            // lspci 3.9 has no name for some newer ids (0x2a, 0x2f, 0x30) and prints the id instead.
            let same = names_match(text, name)
                || names_match(text, &format!("Extended Capability ID {:#x}", c.id));
            let shown = if same {
                text.chars().take(30).collect()
            } else {
                format!("<id {:#06x} {name}>", c.id)
            };
            format!("[{:03x} v{}] {shown}", c.offset, c.version)
        })
        .collect();
    mismatch(
        "extended capabilities",
        format!("{our_ext:?}"),
        format!("{ext_caps:?}"),
    );

    mismatch(
        "BARs",
        format!("{:?}", regions(&ours.bars)),
        format!("{:?}", skip_upper_halves(&ours.bars, &theirs.regions)),
    );
    if let Some(sriov) = ours.sriov() {
        let lspci_vf = skip_upper_halves(&sriov.vf_bars, &theirs.vf_regions);
        mismatch(
            "VF BARs",
            format!("{:?}", regions(&sriov.vf_bars)),
            format!("{lspci_vf:?}"),
        );
    }

    let our_rom = ours.expansion_rom.as_ref().map(|r| !r.enabled);
    mismatch(
        "ROM disabled",
        format!("{our_rom:?}"),
        format!("{:?}", theirs.rom.as_ref().map(|r| r.1)),
    );

    if let Some(e) = ours.pci_express() {
        if !theirs.link_caps.is_empty() {
            let ours = vec![(speed(e.link.max_speed), e.link.max_width)];
            mismatch(
                "LnkCap",
                format!("{ours:?}"),
                format!("{:?}", theirs.link_caps),
            );
        }
        if !theirs.link_stas.is_empty() {
            let ours = vec![(speed(e.link.speed), e.link.width)];
            mismatch(
                "LnkSta",
                format!("{ours:?}"),
                format!("{:?}", theirs.link_stas),
            );
        }
        if !theirs.flr.is_empty() {
            mismatch(
                "FLReset",
                format!("{:?}", vec![e.flr_capable]),
                format!("{:?}", theirs.flr),
            );
        }
    }
    let our_acs: Vec<Vec<bool>> = ours
        .acs()
        .map(|a| acs_flags(a.capability))
        .into_iter()
        .collect();
    mismatch(
        "ACSCap",
        format!("{our_acs:?}"),
        format!("{:?}", theirs.acs_caps),
    );
    let our_acs_ctl: Vec<Vec<bool>> = ours
        .acs()
        .map(|a| acs_flags(a.control))
        .into_iter()
        .collect();
    mismatch(
        "ACSCtl",
        format!("{our_acs_ctl:?}"),
        format!("{:?}", theirs.acs_ctls),
    );
    let our_vfs: Vec<u16> = ours.sriov().map(|s| s.total_vfs).into_iter().collect();
    mismatch(
        "Total VFs",
        format!("{our_vfs:?}"),
        format!("{:?}", theirs.total_vfs),
    );
    let our_rebar: Vec<(u8, u64, Vec<u64>)> = ours
        .resizable_bar()
        .map(|r| {
            r.entries
                .iter()
                .map(|e| (e.bar, e.current_size, e.supported_sizes.clone()))
                .collect()
        })
        .unwrap_or_default();
    mismatch(
        "resizable BAR",
        format!("{our_rebar:?}"),
        format!("{:?}", theirs.rebar),
    );
}

/// Decodes `file` with pcipool's decoder and with lspci; returns (devices compared, mismatches).
fn compare_file(file: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(file).expect("fixture readable");
    let mut ours: Vec<(Bdf, DeviceFacts)> = parse_dump(&text)
        .expect("fixture parses")
        .into_iter()
        .filter_map(|d| pcipool_pcie::decode(&d.bytes).ok().map(|f| (d.bdf, f)))
        .collect();
    ours.sort_by_key(|(b, _)| *b);
    let theirs: Vec<LspciDevice> =
        lspci_text::parse(&run_lspci(&["-F", &file.to_string_lossy(), "-vvv"]))
            .into_iter()
            .filter(|d| d.bdf.is_some_and(|b| ours.iter().any(|(o, _)| *o == b)))
            .collect();
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut mismatches = Vec::new();
    if ours.len() != theirs.len() {
        mismatches.push(format!(
            "{name}: pcipool decoded {} devices, lspci {}",
            ours.len(),
            theirs.len()
        ));
    }
    for ((bdf, facts), lspci_dev) in ours.iter().zip(&theirs) {
        if Some(*bdf) != lspci_dev.bdf {
            mismatches.push(format!("{name}: device order {bdf} vs {:?}", lspci_dev.bdf));
            continue;
        }
        compare(&format!("{name} {bdf}"), facts, lspci_dev, &mut mismatches);
    }
    (ours.len(), mismatches)
}

fn write_fixture(dir: &Path, name: &str, devices: &[(Bdf, Vec<u8>)]) -> std::path::PathBuf {
    let mut text = String::new();
    for (bdf, bytes) in devices {
        write_dump(&mut text, *bdf, "Device", bytes);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

#[test]
fn builder_presets_match_lspci() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devices = Vec::new();
    for (i, (_, builder)) in presets::all().into_iter().enumerate() {
        let bytes = builder.build().bytes;
        let bus = u8::try_from(i + 1).expect("few presets");
        devices.push((Bdf::new(0, bus, 0, 0).expect("valid"), bytes.clone()));
        // The same device captured as `lspci -x` (64 bytes) and `-xxx` (256 bytes) would.
        devices.push((Bdf::new(0, bus, 1, 0).expect("valid"), bytes[..64].to_vec()));
        devices.push((
            Bdf::new(0, bus, 2, 0).expect("valid"),
            bytes[..256].to_vec(),
        ));
    }
    let file = write_fixture(dir.path(), "presets.dump", &devices);
    let (count, mismatches) = compare_file(&file);
    assert_eq!((count, mismatches), (devices.len(), Vec::<String>::new()));
}

#[test]
fn corpus_dumps_match_lspci() {
    let files = match pcipool_testkit::corpus::pciutils_files() {
        Ok(Some(files)) => files,
        Ok(None) => {
            let why = "no pciutils corpus (set PCIPOOL_CORPUS to its pciutils-tests directory)";
            pcipool_testkit::skip::skipped("corpus_dumps_match_lspci", why);
            return;
        }
        Err(why) => panic!("{why}"),
    };
    assert!(!files.is_empty(), "the corpus directory is empty");
    let mut total = 0;
    let mut mismatches = Vec::new();
    for file in &files {
        let (count, m) = compare_file(file);
        total += count;
        mismatches.extend(m);
    }
    // The README of the corpus counts 172 functions.
    assert_eq!((total >= 170, mismatches), (true, Vec::<String>::new()));
}

#[test]
fn this_machines_config_files_match_lspci() {
    let root = Path::new("/sys/bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(root) else {
        let why = "no /sys/bus/pci on this machine";
        pcipool_testkit::skip::skipped("this_machines_config_files_match_lspci", why);
        return;
    };
    let mut devices = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (Ok(bdf), Ok(bytes)) = (
            name.parse::<Bdf>(),
            std::fs::read(entry.path().join("config")),
        ) else {
            continue;
        };
        devices.push((bdf, bytes));
    }
    devices.sort();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_fixture(dir.path(), "this-machine.dump", &devices);
    let (count, mismatches) = compare_file(&file);
    assert_eq!((count, mismatches), (devices.len(), Vec::<String>::new()));
}
