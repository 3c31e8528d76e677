//! A driver in one process uses an NVMe-like device served by another process: registers through a
//! revocable window onto the shared BAR, queues and data in the driver's own shared segment, which the
//! device reaches by DMA. Data written is on the device's medium and reads back intact; once the lender
//! revokes the window, the driver's register reads are all ones. Four client processes share one device,
//! each through its own window and its own I/O queue pair, and each reads back what it wrote.

#[cfg(test)]
mod service;
#[cfg(test)]
mod two_processes;
