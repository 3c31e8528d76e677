//! What a borrow hands out: a BAR mapped through a window, memory mapped for the device's DMA,
//! device memory, an interrupt. Each gives its grant back when dropped.

use super::*;

/// BAR 0 of a borrowed device, through a fabric window.
pub struct BarMap {
    pub(super) window: Window,
    pub(super) slot: u32,
    pub(super) size: u64,
    pub(super) borrow: Arc<BorrowInner>,
}

impl std::fmt::Debug for BarMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarMap")
            .field("lease", &self.borrow.lease)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl BarMap {
    /// BAR size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the window still reaches the device.
    pub fn is_open(&self) -> bool {
        self.window.is_open()
    }

    /// Reads a 32-bit register (all ones once the mapping is gone).
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn read32(&self, offset: u64) -> Result<u32, ShmError> {
        self.window.read_u32(offset)
    }

    /// Writes a 32-bit register (dropped once the mapping is gone).
    ///
    /// # Errors
    /// Out of range or misaligned.
    pub fn write32(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        self.window.write_u32(offset, value)
    }
}

impl pcipool_sim_datapath::driver::Bar for BarMap {
    fn read32(&self, offset: u64) -> Result<u32, ShmError> {
        self.window.read_u32(offset)
    }
    fn write32(&self, offset: u64, value: u32) -> Result<(), ShmError> {
        self.window.write_u32(offset, value)
    }
}

impl Drop for BarMap {
    fn drop(&mut self) {
        self.borrow.release(Grant::Window(self.slot));
    }
}

/// Memory the device reaches by DMA at [`DmaMapping::device_addr`].
pub struct DmaMapping {
    pub(super) device_addr: u64,
    pub(super) borrow: Arc<BorrowInner>,
}

impl std::fmt::Debug for DmaMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaMapping")
            .field("device_addr", &self.device_addr)
            .finish_non_exhaustive()
    }
}

impl DmaMapping {
    /// The address the device must use for the memory's first byte.
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }
}

impl Drop for DmaMapping {
    fn drop(&mut self) {
        self.borrow.release(Grant::Dma(self.device_addr));
    }
}

pub(super) enum Reach {
    Direct(Region),
    Window(Window),
}

/// Device memory: reached by the device at [`DeviceMemory::device_addr`], and by the application
/// directly (near the host) or through a window (near the device).
pub struct DeviceMemory {
    pub(super) grant: DeviceMemoryGrant,
    pub(super) reach: Reach,
    pub(super) borrow: Arc<BorrowInner>,
}

impl std::fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceMemory")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl DeviceMemory {
    /// Where the device reaches it.
    pub fn device_addr(&self) -> u64 {
        self.grant.device_addr
    }

    /// Where it lives.
    pub fn placement(&self) -> Placement {
        self.grant.placement
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.grant.size
    }

    /// Copies bytes out.
    ///
    /// # Errors
    /// Out of range.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ShmError> {
        match &self.reach {
            Reach::Direct(r) => r.read(offset, buf),
            Reach::Window(w) => w.read(offset, buf),
        }
    }

    /// Copies bytes in.
    ///
    /// # Errors
    /// Out of range.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), ShmError> {
        match &self.reach {
            Reach::Direct(r) => r.write(offset, data),
            Reach::Window(w) => w.write(offset, data),
        }
    }
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        if let Some(w) = &self.grant.window {
            self.borrow.release(Grant::Window(w.slot));
        }
        self.borrow.release(Grant::Dma(self.grant.device_addr));
    }
}

/// The device's interrupt vector, delivered to this application (an MSI-X message incrementing a
/// counter in this host's memory).
pub struct Interrupt {
    pub(super) cell: Segment,
    pub(super) vector: u16,
    pub(super) seen: u32,
    pub(super) borrow: Arc<BorrowInner>,
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupt")
            .field("vector", &self.vector)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Interrupt {
    /// The vector.
    pub fn vector(&self) -> u16 {
        self.vector
    }

    /// Messages delivered so far.
    ///
    /// # Errors
    /// Shared memory.
    pub fn count(&self) -> Result<u32, ShmError> {
        self.cell.memory().load_u32(0)
    }

    /// Waits until a message arrives that this handle has not seen; returns how many arrived since the
    /// last wait.
    ///
    /// # Errors
    /// None within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<u32, AccessError> {
        let until = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            let now = self.cell.memory().load_u32(0)?;
            if now != self.seen {
                let new = now.wrapping_sub(self.seen);
                self.seen = now;
                return Ok(new);
            }
            if Instant::now() > until {
                return Err(AccessError::Timeout(timeout));
            }
            spins += 1;
            if spins < 1_000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        // The route first; the cell (a segment) goes with its own drop.
        self.borrow.release(Grant::Vector(self.vector));
    }
}
