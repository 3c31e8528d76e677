//! Window, LUT-entry and aperture allocation on one adapter.
//!
//! Address layout of an adapter's mapping space on its host (all offsets from the adapter's base):
//!
//! ```text
//! 0                     direct windows            LUT entries              packed aperture
//! +---------+---------+----------------------+------------------------+-------------------------+
//! | window0 | window1 | ...  count * max_size | entries * entry_size  | aperture bytes          |
//! +---------+---------+----------------------+------------------------+-------------------------+
//! ```
//! Direct windows are size-aligned because every window slot is `max_size` (a power of two); aperture
//! blocks are naturally aligned (power-of-two sized, aligned to their size) as adapters require.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::profile::AdapterProfile;

/// Which resource ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Direct windows.
    DirectWindows,
    /// LUT entries.
    LutEntries,
    /// The packed aperture.
    Aperture,
    /// Requester-id slots.
    RequesterSlots,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DirectWindows => "direct windows",
            Self::LutEntries => "LUT entries",
            Self::Aperture => "aperture",
            Self::RequesterSlots => "requester slots",
        })
    }
}

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// A zero-size request.
    #[error("zero-size mapping")]
    ZeroSize,
    /// Nothing on this adapter could ever hold the request.
    #[error("{size} bytes exceed what any window of this adapter can map")]
    TooLarge {
        /// Requested bytes.
        size: u64,
    },
    /// The scarce resource is used up.
    #[error("{resource} exhausted: {needed} needed, {free} free")]
    Exhausted {
        /// Which one.
        resource: Resource,
        /// Units needed (bytes, entries or windows).
        needed: u64,
        /// Units free.
        free: u64,
    },
    /// Enough is free in total but not in one piece.
    #[error(
        "{resource} fragmented: {needed} needed, {total_free} free but at most {largest_free} contiguous"
    )]
    Fragmented {
        /// Which one.
        resource: Resource,
        /// Units needed.
        needed: u64,
        /// Largest contiguous free run.
        largest_free: u64,
        /// Total free.
        total_free: u64,
    },
}

/// Where an allocation lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Slot {
    /// Direct window `index`.
    Direct {
        /// Window index.
        index: u32,
    },
    /// LUT entries `first..first+count`.
    Lut {
        /// First entry.
        first: u32,
        /// Entries.
        count: u32,
    },
    /// Aperture block.
    Aperture {
        /// Offset in the aperture.
        offset: u64,
        /// Block size (power of two).
        size: u64,
    },
}

/// Allocation state of one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSpace {
    profile: AdapterProfile,
    direct_used: Vec<bool>,
    lut_used: Vec<bool>,
    /// offset -> size of used aperture blocks.
    aperture_used: BTreeMap<u64, u64>,
}

impl AdapterSpace {
    /// Empty space for a profile.
    pub fn new(profile: AdapterProfile) -> Self {
        let direct = profile.direct.map_or(0, |d| d.count);
        let lut = profile.lut.map_or(0, |l| l.entries);
        Self {
            direct_used: vec![false; usize::try_from(direct).unwrap_or(0)],
            lut_used: vec![false; usize::try_from(lut).unwrap_or(0)],
            aperture_used: BTreeMap::new(),
            profile,
        }
    }

    /// The profile.
    pub fn profile(&self) -> &AdapterProfile {
        &self.profile
    }

    /// Nothing allocated.
    pub fn is_empty(&self) -> bool {
        !self.direct_used.contains(&true)
            && !self.lut_used.contains(&true)
            && self.aperture_used.is_empty()
    }

    /// Offset of a slot from the adapter's base (see the module diagram).
    pub fn offset_of(&self, slot: Slot) -> u64 {
        let direct = self
            .profile
            .direct
            .map_or(0, |d| u64::from(d.count).saturating_mul(d.max_size));
        let lut = self
            .profile
            .lut
            .map_or(0, |l| u64::from(l.entries).saturating_mul(l.entry_size));
        match slot {
            Slot::Direct { index } => {
                u64::from(index).saturating_mul(self.profile.direct.map_or(0, |d| d.max_size))
            }
            Slot::Lut { first, .. } => direct.saturating_add(
                u64::from(first).saturating_mul(self.profile.lut.map_or(0, |l| l.entry_size)),
            ),
            Slot::Aperture { offset, .. } => direct.saturating_add(lut).saturating_add(offset),
        }
    }

    /// Total bytes of the mapping space.
    pub fn span(&self) -> u64 {
        self.offset_of(Slot::Aperture { offset: 0, size: 0 })
            .saturating_add(self.profile.aperture.unwrap_or(0))
    }

    /// Allocates room for `size` bytes: a direct window, else the aperture, else LUT entries.
    ///
    /// # Errors
    /// [`AllocError`] naming the scarce resource.
    pub fn allocate(&mut self, size: u64) -> Result<Slot, AllocError> {
        if size == 0 {
            return Err(AllocError::ZeroSize);
        }
        let block = size
            .checked_next_power_of_two()
            .ok_or(AllocError::TooLarge { size })?;
        let mut failures = Vec::new();
        if let Some(d) = self.profile.direct
            && block <= d.max_size
        {
            match self.direct_used.iter().position(|u| !u) {
                Some(i) => {
                    self.direct_used[i] = true;
                    return Ok(Slot::Direct {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                    });
                }
                None => failures.push(AllocError::Exhausted {
                    resource: Resource::DirectWindows,
                    needed: 1,
                    free: 0,
                }),
            }
        }
        if let Some(aperture) = self.profile.aperture
            && block <= aperture
        {
            match self.find_aperture_block(aperture, block) {
                Ok(offset) => {
                    self.aperture_used.insert(offset, block);
                    return Ok(Slot::Aperture {
                        offset,
                        size: block,
                    });
                }
                Err(e) => failures.push(e),
            }
        }
        if let Some(l) = self.profile.lut {
            let needed = size.div_ceil(l.entry_size.max(1));
            if needed <= u64::from(l.entries) {
                match self.find_lut_run(needed) {
                    Ok(first) => {
                        let count = u32::try_from(needed).unwrap_or(u32::MAX);
                        for used in
                            &mut self.lut_used[first..first + usize::try_from(needed).unwrap_or(0)]
                        {
                            *used = true;
                        }
                        return Ok(Slot::Lut {
                            first: u32::try_from(first).unwrap_or(u32::MAX),
                            count,
                        });
                    }
                    Err(e) => failures.push(e),
                }
            }
        }
        // Report the most informative failure: fragmentation beats plain exhaustion.
        failures
            .iter()
            .find(|e| matches!(e, AllocError::Fragmented { .. }))
            .or_else(|| failures.first())
            .cloned()
            .map_or(Err(AllocError::TooLarge { size }), Err)
    }

    /// Frees a slot. Freeing twice is a no-op, so a rerun of a cleanup step is harmless.
    pub fn free(&mut self, slot: Slot) {
        match slot {
            Slot::Direct { index } => {
                if let Some(u) = self
                    .direct_used
                    .get_mut(usize::try_from(index).unwrap_or(usize::MAX))
                {
                    *u = false;
                }
            }
            Slot::Lut { first, count } => {
                let first = usize::try_from(first).unwrap_or(usize::MAX);
                let end = first
                    .saturating_add(usize::try_from(count).unwrap_or(0))
                    .min(self.lut_used.len());
                for u in self.lut_used.iter_mut().take(end).skip(first) {
                    *u = false;
                }
            }
            Slot::Aperture { offset, .. } => {
                self.aperture_used.remove(&offset);
            }
        }
    }

    /// Free units per resource: (direct windows, LUT entries, aperture bytes).
    pub fn free_counts(&self) -> (u64, u64, u64) {
        let count = |v: &[bool]| v.iter().filter(|u| !**u).count() as u64;
        let used: u64 = self.aperture_used.values().sum();
        (
            count(&self.direct_used),
            count(&self.lut_used),
            self.profile.aperture.unwrap_or(0).saturating_sub(used),
        )
    }

    fn find_aperture_block(&self, aperture: u64, block: u64) -> Result<u64, AllocError> {
        let mut cursor = 0u64;
        let mut largest = 0u64;
        let mut total = 0u64;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        for (&off, &size) in &self.aperture_used {
            gaps.push((cursor, off));
            cursor = off.saturating_add(size);
        }
        gaps.push((cursor, aperture));
        for (start, end) in gaps {
            if end <= start {
                continue;
            }
            total += end - start;
            // Largest naturally aligned power-of-two block inside this gap is what matters to callers.
            let aligned = start.next_multiple_of(block);
            if aligned.checked_add(block).is_some_and(|e| e <= end) {
                return Ok(aligned);
            }
            largest = largest.max(end - start);
        }
        if total >= block {
            Err(AllocError::Fragmented {
                resource: Resource::Aperture,
                needed: block,
                largest_free: largest,
                total_free: total,
            })
        } else {
            Err(AllocError::Exhausted {
                resource: Resource::Aperture,
                needed: block,
                free: total,
            })
        }
    }

    fn find_lut_run(&self, needed: u64) -> Result<usize, AllocError> {
        let needed_len = usize::try_from(needed).unwrap_or(usize::MAX);
        let mut run = 0usize;
        let mut largest = 0usize;
        let mut free = 0usize;
        for (i, used) in self.lut_used.iter().enumerate() {
            if *used {
                run = 0;
                continue;
            }
            free += 1;
            run += 1;
            largest = largest.max(run);
            if run == needed_len {
                return Ok(i + 1 - run);
            }
        }
        if free >= needed_len {
            Err(AllocError::Fragmented {
                resource: Resource::LutEntries,
                needed,
                largest_free: largest as u64,
                total_free: free as u64,
            })
        } else {
            Err(AllocError::Exhausted {
                resource: Resource::LutEntries,
                needed,
                free: free as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{DirectWindows, LutWindows};

    const MIB: u64 = 1 << 20;

    fn space(
        direct: Option<(u32, u64)>,
        lut: Option<(u32, u64)>,
        aperture: Option<u64>,
    ) -> AdapterSpace {
        AdapterSpace::new(AdapterProfile {
            name: "t".into(),
            description: String::new(),
            direct: direct.map(|(count, max_size)| DirectWindows { count, max_size }),
            lut: lut.map(|(entries, entry_size)| LutWindows {
                entries,
                entry_size,
            }),
            aperture,
            requester_slots: None,
            sources: vec![],
        })
    }

    #[test]
    fn aperture_blocks_are_naturally_aligned() {
        let mut s = space(None, None, Some(256 * MIB));
        let a = s.allocate(MIB).expect("fits");
        let b = s.allocate(64 * MIB).expect("fits");
        assert_eq!(
            (a, b),
            (
                Slot::Aperture {
                    offset: 0,
                    size: MIB
                },
                Slot::Aperture {
                    offset: 64 * MIB,
                    size: 64 * MIB
                }
            )
        );
    }

    #[test]
    fn aperture_fragmentation_is_reported() {
        let mut s = space(None, None, Some(4 * MIB));
        let slots: Vec<Slot> = (0..4).map(|_| s.allocate(MIB).expect("fits")).collect();
        s.free(slots[0]);
        s.free(slots[2]);
        assert_eq!(
            s.allocate(2 * MIB),
            Err(AllocError::Fragmented {
                resource: Resource::Aperture,
                needed: 2 * MIB,
                largest_free: MIB,
                total_free: 2 * MIB
            })
        );
    }

    #[test]
    fn lut_exhaustion_names_entries() {
        let mut s = space(None, Some((4, 64 * 1024)), None);
        s.allocate(256 * 1024).expect("fits exactly");
        assert_eq!(
            s.allocate(1),
            Err(AllocError::Exhausted {
                resource: Resource::LutEntries,
                needed: 1,
                free: 0
            })
        );
    }

    #[test]
    fn direct_windows_run_out() {
        let mut s = space(Some((1, 2 * MIB)), None, None);
        s.allocate(MIB).expect("first fits");
        assert_eq!(
            s.allocate(MIB),
            Err(AllocError::Exhausted {
                resource: Resource::DirectWindows,
                needed: 1,
                free: 0
            })
        );
    }

    #[test]
    fn too_large_for_any_window() {
        let mut s = space(Some((2, 2 * MIB)), None, None);
        assert_eq!(
            s.allocate(4 * MIB),
            Err(AllocError::TooLarge { size: 4 * MIB })
        );
    }

    #[test]
    fn free_twice_is_harmless_and_space_empties() {
        let mut s = space(Some((1, 2 * MIB)), Some((8, 64 * 1024)), Some(8 * MIB));
        let slots = [
            s.allocate(MIB).expect("a"),
            s.allocate(MIB).expect("b"),
            s.allocate(MIB).expect("c"),
        ];
        for slot in slots {
            s.free(slot);
            s.free(slot);
        }
        assert!(s.is_empty());
    }
}
