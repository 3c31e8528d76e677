//! The controller over a real SQLite file and the simulated lab.

#[cfg(test)]
mod admission;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod support;
