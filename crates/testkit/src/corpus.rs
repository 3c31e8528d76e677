//! The corpus of real config-space dumps (pciutils' test files). It is GPL-licensed, so this repository
//! never holds it: tests read it where an operator put it and print a SKIPPED line when it is absent.

use std::path::{Path, PathBuf};

/// Environment variable naming the `pciutils-tests` directory (the opt-in corpus lookup).
pub const CORPUS_ENV: &str = "PCIPOOL_CORPUS";

/// The `pciutils-tests` directory: `$PCIPOOL_CORPUS` when set, else an optional checkout of the
/// corpus beside the repository (`shared/corpus/pciutils-tests`, optional, found walking up from here).
///
/// # Errors
/// `Ok(None)` when neither is there (the caller skips, saying so); an error when `$PCIPOOL_CORPUS` is set
/// but names no directory (the operator asked for the corpus, so its absence is a failure, not a skip).
pub fn pciutils_dir() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os(CORPUS_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(Some(dir))
        } else {
            Err(format!("{CORPUS_ENV}={} is not a directory", dir.display()))
        };
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(start
        .ancestors()
        .map(|a| a.join("shared/corpus/pciutils-tests")) // optional corpus lookup
        .find(|p| p.is_dir()))
}

/// Every file of the corpus, sorted by name; `Ok(None)` when the corpus is not on this machine.
///
/// # Errors
/// As [`pciutils_dir`], or an unreadable directory.
pub fn pciutils_files() -> Result<Option<Vec<PathBuf>>, String> {
    let Some(dir) = pciutils_dir()? else {
        return Ok(None);
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(Some(files))
}
