//! BAR 0 register offsets, fields, opcodes and status codes (NVMe base specification names).

/// Controller Capabilities (64-bit).
pub const CAP: u64 = 0x00;
/// Version.
pub const VS: u64 = 0x08;
/// Controller Configuration.
pub const CC: u64 = 0x14;
/// Controller Status.
pub const CSTS: u64 = 0x1c;
/// Admin Queue Attributes.
pub const AQA: u64 = 0x24;
/// Admin Submission Queue base (64-bit).
pub const ASQ: u64 = 0x28;
/// Admin Completion Queue base (64-bit).
pub const ACQ: u64 = 0x30;
/// First doorbell; with a stride of 4 bytes (CAP.DSTRD = 0), SQ y tail at 0x1000 + 8y, CQ y head at
/// 0x1000 + 8y + 4.
pub const DOORBELLS: u64 = 0x1000;

/// CAP: MQES 1023 (1,024-entry queues), CQR (contiguous queues required), TO 20 (10 s ready timeout),
/// DSTRD 0, CSS NVM command set, MPSMIN = MPSMAX = 0 (4 KiB pages).
pub const CAP_VALUE: u64 = 1023 | (1 << 16) | (20 << 24) | (1 << 37);
/// Version 1.4.
pub const VERSION: u32 = 0x0001_0400;
/// CC.EN.
pub const CC_EN: u32 = 1;
/// CC.SHN.
pub const CC_SHN_MASK: u32 = 0b11 << 14;
/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1;
/// CSTS.CFS: controller fatal status (set when a command cannot even be fetched; cleared by a reset).
pub const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST.
pub const CSTS_SHST_MASK: u32 = 0b11 << 2;
/// CSTS.SHST = shutdown complete.
pub const CSTS_SHST_COMPLETE: u32 = 0b10 << 2;

/// Memory page size (CC.MPS = 0).
pub const PAGE: usize = 4096;
/// Submission queue entry bytes.
pub const SQE: usize = 64;
/// Completion queue entry bytes.
pub const CQE: usize = 16;
/// PCI vendor id the model reports in Identify.
pub const VENDOR: u16 = 0x1b36;

/// Admin: Delete I/O Submission Queue.
pub const ADMIN_DELETE_SQ: u8 = 0x00;
/// Admin: Create I/O Submission Queue.
pub const ADMIN_CREATE_SQ: u8 = 0x01;
/// Admin: Delete I/O Completion Queue.
pub const ADMIN_DELETE_CQ: u8 = 0x04;
/// Admin: Create I/O Completion Queue.
pub const ADMIN_CREATE_CQ: u8 = 0x05;
/// Admin: Identify.
pub const ADMIN_IDENTIFY: u8 = 0x06;
/// Identify CNS: namespace.
pub const CNS_NAMESPACE: u32 = 0x00;
/// Identify CNS: controller.
pub const CNS_CONTROLLER: u32 = 0x01;
/// I/O: Flush.
pub const IO_FLUSH: u8 = 0x00;
/// I/O: Write.
pub const IO_WRITE: u8 = 0x01;
/// I/O: Read.
pub const IO_READ: u8 = 0x02;

/// Status: success.
pub const SC_SUCCESS: u16 = 0x00;
/// Status: invalid command opcode.
pub const SC_INVALID_OPCODE: u16 = 0x01;
/// Status: invalid field in command.
pub const SC_INVALID_FIELD: u16 = 0x02;
/// Status: data transfer error.
pub const SC_DATA_TRANSFER_ERROR: u16 = 0x04;
/// Status: internal error.
pub const SC_INTERNAL: u16 = 0x06;
/// Status: invalid namespace or format.
pub const SC_INVALID_NAMESPACE: u16 = 0x0b;
/// Status: LBA out of range.
pub const SC_LBA_OUT_OF_RANGE: u16 = 0x80;
/// Status (command specific): completion queue invalid.
pub const SC_INVALID_CQ: u16 = 0x100;
/// Status (command specific): invalid queue identifier.
pub const SC_INVALID_QUEUE_ID: u16 = 0x101;
