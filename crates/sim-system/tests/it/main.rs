//! The whole system under the seeded workload: invariants hold, a run is reproducible from its seed,
//! and each planted bug is caught.

#[cfg(test)]
mod runs;
