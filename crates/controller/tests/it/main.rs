//! The controller over a real SQLite file and the simulated lab.

#[cfg(test)]
mod lifecycle;
