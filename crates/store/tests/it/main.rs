//! The SQLite store on real files in a temp directory.

#[cfg(test)]
mod sqlite;
