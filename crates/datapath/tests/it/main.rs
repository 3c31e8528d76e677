//! A driver in one process uses an NVMe-like device served by another process: registers through a
//! revocable window onto the shared BAR, queues and data in the driver's own shared segment, which the
//! device reaches by DMA. Data written is on the device's medium and reads back intact; once the lender
//! revokes the window, the driver's register reads are all ones.

#[cfg(test)]
mod two_processes;
