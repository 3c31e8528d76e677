//! Windows: a host's view of another host's region through the fabric, revocable at any time.
//!
//! On a real NTB a borrower's loads and stores go through an adapter window the lender side programs;
//! when the lender tears the mapping down, further reads return all ones and writes are dropped. Here the
//! fabric keeps a [`WindowTable`] (a small shared region of slots); a [`Window`] is one slot plus the
//! target region, and every access checks the slot first. The data itself never moves: an access that
//! passes the check goes straight to the target's shared memory (zero copy).
//!
//! A slot is two u32 cells: `generation` (a random odd key while open, 0 when closed; a new key on every
//! opening, so a window opened for one mapping never works for the next mapping that reuses the slot)
//! and `faults` (accesses refused since the table was made, for the fabric's event log).
//!
//! The key keeps honest programs apart; it is not a security boundary against a process of the same
//! user that reads the table file itself (on real hardware the MMU and the NTB's translation are).

use std::path::Path;

use crate::{Region, ShmError};

/// Bytes per slot: generation, faults.
const SLOT: u64 = 8;

/// The fabric's table of window slots.
#[derive(Debug)]
pub struct WindowTable {
    region: Region,
}

impl WindowTable {
    /// Creates a table of `slots` closed slots.
    ///
    /// # Errors
    /// [`ShmError`].
    pub fn create(dir: &Path, name: &str, slots: u32) -> Result<Self, ShmError> {
        Ok(Self {
            region: Region::create(dir, name, u64::from(slots.max(1)) * SLOT)?,
        })
    }

    /// Opens an existing table.
    ///
    /// # Errors
    /// [`ShmError`].
    pub fn open(dir: &Path, name: &str) -> Result<Self, ShmError> {
        Ok(Self {
            region: Region::open(dir, name)?,
        })
    }

    fn generation(&self, slot: u32) -> Result<u32, ShmError> {
        self.region.load_u32(u64::from(slot) * SLOT)
    }

    /// Opens `slot` for a new mapping; returns the key (generation) a window must present. Keys are
    /// random odd values, never the slot's previous one, so a window can be neither reused for a later
    /// mapping of the same slot nor forged by counting.
    ///
    /// # Errors
    /// No such slot.
    pub fn open_slot(&self, slot: u32) -> Result<u32, ShmError> {
        let g = self.generation(slot)?;
        let mut next = random_u32() | 1;
        if next == g {
            next = next.wrapping_add(2);
        }
        self.region.store_u32(u64::from(slot) * SLOT, next)?;
        Ok(next)
    }

    /// Closes `slot`: every window on it stops working from its next access.
    ///
    /// # Errors
    /// No such slot.
    pub fn close_slot(&self, slot: u32) -> Result<(), ShmError> {
        self.generation(slot)?;
        self.region.store_u32(u64::from(slot) * SLOT, 0)
    }

    /// Accesses refused on `slot` so far.
    ///
    /// # Errors
    /// No such slot.
    pub fn faults(&self, slot: u32) -> Result<u32, ShmError> {
        self.region.load_u32(u64::from(slot) * SLOT + 4)
    }

    fn refuse(&self, slot: u32) {
        let _ = self.region.fetch_add_u32(u64::from(slot) * SLOT + 4, 1);
    }
}

/// One host's window onto a target region.
#[derive(Debug)]
pub struct Window {
    table: WindowTable,
    slot: u32,
    generation: u32,
    target: Region,
}

impl Window {
    /// Attaches to `slot` of the table `table` under `dir`, opened at `generation`, onto the region
    /// `target`.
    ///
    /// # Errors
    /// [`ShmError`].
    pub fn attach(
        dir: &Path,
        table: &str,
        slot: u32,
        generation: u32,
        target: &str,
    ) -> Result<Self, ShmError> {
        Ok(Self {
            table: WindowTable::open(dir, table)?,
            slot,
            generation,
            target: Region::open(dir, target)?,
        })
    }

    fn live(&self) -> bool {
        self.table
            .generation(self.slot)
            .is_ok_and(|g| g == self.generation)
    }

    /// Whether the window still reaches its target.
    pub fn is_open(&self) -> bool {
        self.live()
    }

    /// Reads a 32-bit register: all ones (and a recorded fault) once the window is closed.
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn read_u32(&self, offset: u64) -> Result<u32, ShmError> {
        if self.live() {
            self.target.load_u32(offset)
        } else {
            self.table.refuse(self.slot);
            Ok(u32::MAX)
        }
    }

    /// Writes a 32-bit register: dropped (and a recorded fault) once the window is closed.
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn write_u32(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        if self.live() {
            self.target.store_u32(offset, value)
        } else {
            self.table.refuse(self.slot);
            Ok(())
        }
    }

    /// Copies bytes out: all ones once the window is closed.
    ///
    /// # Errors
    /// Out of range.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ShmError> {
        if self.live() {
            self.target.read(offset, buf)
        } else {
            self.table.refuse(self.slot);
            buf.fill(0xff);
            Ok(())
        }
    }

    /// Copies bytes in: dropped once the window is closed.
    ///
    /// # Errors
    /// Out of range.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), ShmError> {
        if self.live() {
            self.target.write(offset, data)
        } else {
            self.table.refuse(self.slot);
            Ok(())
        }
    }
}

/// 32 random bits from the standard library's per-process random hash keys (no extra dependency; keys
/// need to be unpredictable to other programs, not cryptographically strong).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let v = h.finish();
    u32::try_from(v & 0xffff_ffff).unwrap_or(0) ^ u32::try_from(v >> 32).unwrap_or(0)
}
