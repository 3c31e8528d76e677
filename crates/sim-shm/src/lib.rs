//! Memory that several processes map at once: in the simulated fabric, each simulated host is a process,
//! and a device's BARs and a host's memory segments are real shared memory, so a store by one process is a
//! load by another with no copy in between (as on a real NTB, where the adapter forwards the transaction).
//!
//! A [`Region`] is a file of a fixed size under a directory (normally on `/dev/shm`), mapped shared by
//! every process that opens it. Accesses are bounds-checked and go through atomics (registers, doorbells,
//! queue entries) or plain copies (data buffers); nothing hands out a Rust reference into memory another
//! process may change.
//!
//! # Layout
//! - `map` (private): the one module with unsafe code: the mapping and the raw accesses, reached only
//!   through the bounds-checked `Region` and window calls, so no safe function relies on its caller.
//! - [`Region`], [`ShmError`]: the safe interface.
//! - [`window`]: revocable windows onto a region (the fabric's view of a mapping).
#![deny(missing_docs)]

mod map;
pub mod window;

use std::path::{Path, PathBuf};

/// Why a region could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// Creating, opening or sizing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An access outside the region.
    #[error("{len} bytes at offset {offset:#x} are outside the {size:#x}-byte region")]
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Region size.
        size: u64,
    },
    /// A register access at an offset not aligned to its width.
    #[error("offset {offset:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// Offset.
        offset: u64,
        /// Required alignment.
        align: u64,
    },
    /// A name that is not a plain file name (it would escape the directory).
    #[error("region name {0:?} must be a plain file name")]
    BadName(String),
    /// A zero-sized region.
    #[error("a region needs at least one byte")]
    Empty,
}

/// A shared region.
#[derive(Debug)]
pub struct Region {
    path: PathBuf,
    map: map::Mapping,
}

fn file_path(dir: &Path, name: &str) -> Result<PathBuf, ShmError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if plain {
        Ok(dir.join(name))
    } else {
        Err(ShmError::BadName(name.to_owned()))
    }
}

impl Region {
    /// Creates the region `name` under `dir` (`size` bytes of zeros) and maps it. A region of that
    /// name made before is replaced by a new file, never shrunk in place: a process still mapping the
    /// old one keeps its memory (a mapping whose file shrinks faults with SIGBUS on its next access).
    ///
    /// # Errors
    /// [`ShmError`].
    pub fn create(dir: &Path, name: &str, size: u64) -> Result<Self, ShmError> {
        if size == 0 {
            return Err(ShmError::Empty);
        }
        let path = file_path(dir, name)?;
        let io = |source| ShmError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        file.set_len(size).map_err(io)?;
        let map = map::Mapping::new(&file).map_err(io)?;
        Ok(Self { path, map })
    }

    /// Maps an existing region `name` under `dir`.
    ///
    /// # Errors
    /// [`ShmError`].
    pub fn open(dir: &Path, name: &str) -> Result<Self, ShmError> {
        let path = file_path(dir, name)?;
        let io = |source| ShmError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            return Err(ShmError::Empty);
        }
        let map = map::Mapping::new(&file).map_err(io)?;
        Ok(Self { path, map })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len()
    }

    /// Always false: a region has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u64, len: u64, align: u64) -> Result<usize, ShmError> {
        let size = self.len();
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > size) {
            return Err(ShmError::OutOfRange { offset, len, size });
        }
        if align > 1 && !offset.is_multiple_of(align) {
            return Err(ShmError::Misaligned { offset, align });
        }
        usize::try_from(offset).map_err(|_| ShmError::OutOfRange { offset, len, size })
    }

    /// Loads a 32-bit register (atomic, sequentially consistent).
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn load_u32(&self, offset: u64) -> Result<u32, ShmError> {
        let at = self.check(offset, 4, 4)?;
        Ok(self.map.load_u32(at))
    }

    /// Stores a 32-bit register (atomic, sequentially consistent).
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn store_u32(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        let at = self.check(offset, 4, 4)?;
        self.map.store_u32(at, value);
        Ok(())
    }

    /// Adds to a 32-bit counter atomically (wrapping); returns the previous value. Counters several
    /// processes bump (doorbells, fault counts) need this rather than a load and a store.
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn fetch_add_u32(&self, offset: u64, value: u32) -> Result<u32, ShmError> {
        let at = self.check(offset, 4, 4)?;
        Ok(self.map.fetch_add_u32(at, value))
    }

    /// Loads a 64-bit register (atomic, sequentially consistent).
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn load_u64(&self, offset: u64) -> Result<u64, ShmError> {
        let at = self.check(offset, 8, 8)?;
        Ok(self.map.load_u64(at))
    }

    /// Stores a 64-bit register (atomic, sequentially consistent).
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn store_u64(&self, offset: u64, value: u64) -> Result<(), ShmError> {
        let at = self.check(offset, 8, 8)?;
        self.map.store_u64(at, value);
        Ok(())
    }

    /// Copies bytes out of the region (data buffers; not atomic as a whole).
    ///
    /// # Errors
    /// Out of range.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ShmError> {
        let at = self.check(offset, buf.len() as u64, 1)?;
        self.map.read(at, buf);
        Ok(())
    }

    /// Copies bytes into the region.
    ///
    /// # Errors
    /// Out of range.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), ShmError> {
        let at = self.check(offset, data.len() as u64, 1)?;
        self.map.write(at, data);
        Ok(())
    }
}
