//! The device driven the way an NVMe driver drives it: enable, Identify, create an I/O queue pair, write
//! and read back through PRP lists; and the errors a driver must be able to see.

#[cfg(test)]
mod driver;
