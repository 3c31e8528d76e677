//! The stores: SQLite on real files in a temp directory, and the in-memory store with the same
//! semantics.

#[cfg(test)]
mod mem;
#[cfg(test)]
mod sqlite;
