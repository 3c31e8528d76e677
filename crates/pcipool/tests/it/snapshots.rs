//! CLI output compared with checked-in snapshots. Names come from an empty pci.ids so the snapshots do
//! not depend on the database version installed. `PCIPOOL_UPDATE_SNAPSHOTS=1` rewrites them.

use std::path::{Path, PathBuf};
use std::process::Command;

use pcipool_pcie::dump::write_dump;
use pcipool_pcie::{Bdf, presets};

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name)
}

fn check(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("PCIPOOL_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from its snapshot; rerun with PCIPOOL_UPDATE_SNAPSHOTS=1 and review the diff.\n--- actual ---\n{actual}"
    );
}

fn presets_dump(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for (i, (_, builder)) in presets::all().into_iter().enumerate() {
        let bus = u8::try_from(i + 1).expect("few presets");
        write_dump(
            &mut text,
            Bdf::new(0, bus, 0, 0).expect("valid"),
            "Device",
            &builder.build().bytes,
        );
    }
    let path = dir.join("presets.dump");
    std::fs::write(&path, text).expect("write dump");
    path
}

fn decode(file: &Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pcipool"))
        .args(["decode", &file.to_string_lossy(), "--output", format])
        .env("PCIPOOL_PCI_IDS", "/nonexistent/pci.ids")
        .output()
        .expect("pcipool runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn decode_presets_text_matches_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    check(
        "decode-presets.txt",
        &decode(&presets_dump(dir.path()), "table"),
    );
}

#[test]
fn decode_presets_json_matches_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    check(
        "decode-presets.json",
        &decode(&presets_dump(dir.path()), "json"),
    );
}
