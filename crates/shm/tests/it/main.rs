//! Shared regions: two mappings see each other's stores; a region is shared with another process; every
//! access outside the region or misaligned is refused.

#[cfg(test)]
mod region;
