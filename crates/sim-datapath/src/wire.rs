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
//! - `POST /v1/datapath/leases/{lease}/release` [`crate::service::Grant`] -> [`Released`]
//! - `DELETE /v1/datapath/leases/{lease}` -> 204 (everything; idempotent)
//! - `POST /v1/datapath/segments` [`SegmentCreate`] -> [`SegmentMade`]
//! - `DELETE /v1/datapath/segments/{host}/{name}` -> 204
//! - `POST /v1/datapath/exports` [`ExportRequest`] -> `{}`
//! - `GET /v1/datapath/events` -> [`Events`]

use serde::{Deserialize, Serialize};

use crate::service::Placement;

/// Who asks for a mapping: the lease's device and borrower host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host (`n2`).
    pub host: String,
}

/// Map a segment for the device's DMA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host.
    pub host: String,
    /// The host whose memory the segment is (the borrower, or a peer that exported it).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub owner: String,
    /// The segment's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
}

/// Create device memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceMemoryRequest {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host.
    pub host: String,
    /// Bytes (1 byte to 1 GiB).
    #[schema(minimum = 1, maximum = 1073741824)]
    pub size: u64,
    /// Where it should live.
    pub placement: Placement,
}

/// Route an interrupt vector to a counter cell of the borrower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InterruptRequest {
    /// The borrowed device.
    pub fdid: String,
    /// The borrower host.
    pub host: String,
    /// The device's vector.
    pub vector: u16,
    /// The caller's segment whose first 4 bytes count the messages.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub cell: String,
}

/// Make a segment of the caller's host memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentCreate {
    /// The host whose memory it is.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub host: String,
    /// Its name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// Bytes (1 byte to 1 GiB).
    #[schema(minimum = 1, maximum = 1073741824)]
    pub size: u64,
}

/// A segment made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentMade {
    /// The file to map, in the service's directory.
    pub file: String,
}

/// Export a segment for peers' devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The owner host.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub host: String,
    /// The segment.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
}

/// A grant given back: whether the lease still held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Released {
    /// It was held, and is released now.
    pub released: bool,
}

/// A DMA mapping made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mapped {
    /// The address the device must use for the segment's first byte.
    pub device_addr: u64,
}

/// The service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Info {
    /// Directory of the shared regions (every simulated host's process opens files here).
    pub dir: String,
    /// Devices served on the data path.
    pub devices: Vec<String>,
}

/// What the data path recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Events {
    /// Accesses refused through closed or forged windows.
    pub window_faults: u64,
    /// DMA and interrupt messages refused (memory no longer mapped).
    pub dma_faults: u64,
    /// Leases torn down, oldest first, with why.
    pub torn_down: Vec<TornDown>,
    /// Leases holding mappings now.
    pub mapped: Vec<u64>,
}

/// A lease whose mappings the data path tore down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TornDown {
    /// The lease.
    pub lease: u64,
    /// Why (`lease ended`, ...).
    pub why: String,
}
