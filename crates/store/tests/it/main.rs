//! The stores: SQLite on real files in a temp directory, etcd on real members on loopback, and the
//! in-memory store with the same semantics.

#[cfg(test)]
mod etcd;
#[cfg(test)]
mod mem;
#[cfg(test)]
mod sqlite;
