//! Simulator tests: every fault kind and what the backend reports for it, determinism, the shipped
//! example fabrics.

#[cfg(test)]
mod faults;
#[cfg(test)]
mod run;
