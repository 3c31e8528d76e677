//! The data-path service's HTTP messages (served by `pcipool sim serve`, used by `pcipool-access`).
//!
//! Routes, all JSON, every request with the caller's controller bearer token. The fabric checks leases
//! with the controller under that token (only the lease's tenant maps for it), and remembers a digest of
//! it as the caller's identity: only the application that made a segment maps it as its own, exports
//! or deletes it, and only the one that mapped for a lease gives its grants back.
//! - `GET /v1/datapath` -> [`Info`]
//! - `POST /v1/datapath/leases/{lease}/bar` [`Holder`] -> [`crate::service::WindowGrant`]
//! - `POST /v1/datapath/leases/{lease}/segments` [`SegmentRequest`] -> [`Mapped`]
//! - `POST /v1/datapath/leases/{lease}/device-memory` [`DeviceMemoryRequest`] ->
//!   [`crate::service::DeviceMemoryGrant`]
//! - `POST /v1/datapath/leases/{lease}/interrupts` [`InterruptRequest`] -> `{}`
//! - `POST /v1/datapath/leases/{lease}/release` [`crate::service::Grant`] -> `{"released": bool}`
//! - `DELETE /v1/datapath/leases/{lease}` -> 204 (everything; idempotent)
//! - `POST /v1/datapath/segments` [`SegmentCreate`] -> [`SegmentMade`]
//! - `DELETE /v1/datapath/segments/{host}/{name}` -> 204
//! - `POST /v1/datapath/exports` [`ExportRequest`] -> `{}`
//! - `GET /v1/datapath/events` -> [`Events`]

use serde::{Deserialize, Serialize};

use crate::service::Placement;

/// Who asks for a mapping: the lease's device and borrower host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host (`n2`).
    pub host: String,
}

/// Map a segment for the device's DMA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host.
    pub host: String,
    /// The host whose memory the segment is (the borrower, or a peer that exported it).
    pub owner: String,
    /// The segment's name.
    pub name: String,
}

/// Create device memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMemoryRequest {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host.
    pub host: String,
    /// Bytes.
    pub size: u64,
    /// Where it should live.
    pub placement: Placement,
}

/// Route an interrupt vector to a counter cell of the borrower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterruptRequest {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host.
    pub host: String,
    /// The device's vector.
    pub vector: u16,
    /// The caller's segment whose first 4 bytes count the messages.
    pub cell: String,
}

/// Make a segment of the caller's host memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentCreate {
    /// The host whose memory it is.
    pub host: String,
    /// Its name.
    pub name: String,
    /// Bytes.
    pub size: u64,
}

/// A segment made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMade {
    /// The file to map, in the service's directory.
    pub file: String,
}

/// Export a segment for peers' devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The owner host.
    pub host: String,
    /// The segment.
    pub name: String,
}

/// A DMA mapping made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapped {
    /// The address the device must use for the segment's first byte.
    pub device_addr: u64,
}

/// The service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Directory of the shared regions (every simulated host's process opens files here).
    pub dir: String,
    /// Devices served on the data path.
    pub devices: Vec<String>,
}

/// What the data path recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// Accesses refused through closed or forged windows.
    pub window_faults: u64,
    /// DMA and interrupt messages refused (memory no longer mapped).
    pub dma_faults: u64,
    /// Leases torn down, oldest first, with why.
    pub torn_down: Vec<(u64, String)>,
    /// Leases holding mappings now.
    pub mapped: Vec<u64>,
}
