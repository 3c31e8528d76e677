//! The suites against the simulated lab: they pass on a sound backend and each catches a backend broken
//! on purpose.

#[cfg(test)]
mod suites;
