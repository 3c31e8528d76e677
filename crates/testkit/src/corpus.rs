//! The shared corpus of real config-space dumps (pciutils' test files).

use std::path::{Path, PathBuf};

/// Environment variable that overrides where the corpus lives.
pub const CORPUS_ENV: &str = "PCIPOOL_CORPUS";

/// The `pciutils-tests` directory: `$PCIPOOL_CORPUS`, else `shared/corpus/pciutils-tests` found by
/// walking up from this crate (the repository sits beside `shared/`).
pub fn pciutils_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CORPUS_ENV) {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|a| a.join("shared/corpus/pciutils-tests"))
        .find(|p| p.is_dir())
}

/// Every file of the corpus, sorted by name.
pub fn pciutils_files() -> Vec<PathBuf> {
    let Some(dir) = pciutils_dir() else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}
