//! The mapping and its raw accesses: the only unsafe code in pcipool.
//!
//! JUSTIFICATION: sharing memory between processes needs `mmap(MAP_SHARED)` (unsafe in memmap2 because
//! the file can change under the mapping) and accesses through raw pointers (a Rust reference to memory
//! another process writes concurrently would be undefined behaviour). Every access here is bounds-checked
//! by the caller (`Region::check`) before it reaches this module; registers use atomics, which are sound
//! on shared memory because another process writing through its own mapping is, to this process, just
//! another thread writing atomically to the same cells.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A shared, writable mapping of a whole file.
#[derive(Debug)]
pub struct Mapping {
    map: memmap2::MmapRaw,
}

impl Mapping {
    /// Maps `file` shared, read-write.
    ///
    /// # Errors
    /// The mapping failed.
    pub fn new(file: &std::fs::File) -> std::io::Result<Self> {
        // MmapRaw maps without handing out a slice: we only ever go through the raw pointer.
        let map = memmap2::MmapOptions::new().map_raw(file)?;
        Ok(Self { map })
    }

    /// Mapped bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn ptr(&self, at: usize) -> *mut u8 {
        // `wrapping_add` stays within the mapping because every caller passed `Region::check`.
        self.map.as_mut_ptr().wrapping_add(at)
    }

    /// Atomic 32-bit load at a checked, 4-aligned offset.
    pub fn load_u32(&self, at: usize) -> u32 {
        // SAFETY: `at..at + 4` lies inside the live mapping and is 4-aligned (checked by the caller; the
        // mapping itself is page-aligned), so it is a valid `AtomicU32` location for as long as `self`.
        unsafe { AtomicU32::from_ptr(self.ptr(at).cast::<u32>()) }.load(Ordering::SeqCst)
    }

    /// Atomic 32-bit store at a checked, 4-aligned offset.
    pub fn store_u32(&self, at: usize, value: u32) {
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(self.ptr(at).cast::<u32>()) }.store(value, Ordering::SeqCst);
    }

    /// Atomic 32-bit add at a checked, 4-aligned offset; returns the previous value.
    pub fn fetch_add_u32(&self, at: usize, value: u32) -> u32 {
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(self.ptr(at).cast::<u32>()) }
            .fetch_add(value, Ordering::SeqCst)
    }

    /// Atomic 64-bit load at a checked, 8-aligned offset.
    pub fn load_u64(&self, at: usize) -> u64 {
        // SAFETY: `at..at + 8` lies inside the mapping and is 8-aligned (checked by the caller).
        unsafe { AtomicU64::from_ptr(self.ptr(at).cast::<u64>()) }.load(Ordering::SeqCst)
    }

    /// Atomic 64-bit store at a checked, 8-aligned offset.
    pub fn store_u64(&self, at: usize, value: u64) {
        // SAFETY: as in `load_u64`.
        unsafe { AtomicU64::from_ptr(self.ptr(at).cast::<u64>()) }.store(value, Ordering::SeqCst);
    }

    /// Copies `buf.len()` bytes out of a checked range.
    pub fn read(&self, at: usize, buf: &mut [u8]) {
        // SAFETY: the source range lies inside the mapping (checked by the caller) and cannot overlap
        // `buf`, which is ordinary process memory. Concurrent writers can make the bytes torn, which is
        // what a DMA buffer read during a write is; the copy itself reads valid memory.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(at), buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` into a checked range.
    pub fn write(&self, at: usize, data: &[u8]) {
        // SAFETY: the destination range lies inside the mapping (checked by the caller) and cannot
        // overlap `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(at), data.len()) }
    }
}
