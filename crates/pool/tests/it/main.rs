//! The state machine: the illegal-pair table and property tests of the invariants.

#[cfg(test)]
mod machine;
#[cfg(test)]
mod schedule;
