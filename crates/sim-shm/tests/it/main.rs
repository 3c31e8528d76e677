//! Shared regions: two mappings see each other's stores; a region is shared with another process; every
//! access outside the region or misaligned is refused. Windows: revoked under a reader in another
//! process, further reads are all ones and the faults are counted.

#[cfg(test)]
mod region;
#[cfg(test)]
mod window;
