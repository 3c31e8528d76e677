//! The PCIe/NTB fabric as a pure model.
//!
//! Hosts carry NTB adapters (each described by an [`AdapterProfile`]); adapters connect through links and
//! switches ([`Topology`]). Lending a device maps its BARs into the borrower's address space through the
//! borrower's adapter and maps the borrower's DMA window through the lender's adapter ([`Fabric`]). Every
//! mapping belongs to a lease; windows, LUT entries, aperture space and requester slots are finite and their
//! exhaustion is a typed error naming the scarce resource. Translation works both ways, and an access that
//! hits no live mapping is a fault, never a silent success. [`Fabric::check_isolation`] states the
//! invariant the control plane must keep.
//!
//! No I/O, no clock, no randomness: the simulator and the control plane drive it.
//!
//! # Layout
//! - [`ids`]: node ids, fabric device ids, lease and mapping ids.
//! - [`profile`]: adapter profiles (with sources) and the stateless fit estimate.
//! - [`topology`]: hosts, switches, links, routes.
//! - [`alloc`]: allocation on one adapter.
//! - [`fabric`]: live mappings, translation, isolation.
#![deny(missing_docs)]

pub mod alloc;
pub mod fabric;
pub mod ids;
pub mod profile;
pub mod topology;

pub use alloc::{AllocError, Resource, Slot};
pub use fabric::{
    AccessFault, BarTarget, DmaTarget, Fabric, Grant, IsolationViolation, MapError, Mapping,
    MappingKind,
};
pub use ids::{AdapterId, DeviceOrHost, Epoch, Fdid, IdError, LeaseId, MappingId, NodeId};
pub use profile::AdapterProfile;
pub use topology::{Host, Link, Port, Route, Topology, TopologyError};
