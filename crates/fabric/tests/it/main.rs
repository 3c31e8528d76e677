//! Property tests of the fabric model: random topologies and random sequences of lease / map / unmap /
//! fault keep the isolation invariant and never leak an allocation.

#[cfg(test)]
mod props;
