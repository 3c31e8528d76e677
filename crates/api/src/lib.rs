//! pcipool's HTTP/JSON API under `/v1`.
//!
//! The server is a library: [`serve`] takes a bound listener, the domain behind the [`PoolApi`] trait and a
//! shutdown future, so tests bind `127.0.0.1:0`. Handlers only parse, authorise and translate into calls on
//! [`PoolApi`]; the domain never sees HTTP types. Errors are JSON `{ "code", "message" }` with the stable
//! codes of `pcipool_wire::ErrorCode`, which also pick the HTTP status. The bodies live in `pcipool-wire`
//! and the blocking client in `pcipool-client`, so clients do not compile this server.
//!
//! # Layout
//! - [`server`]: the router, auth, errors.
//! - `routes`: the handlers, one module per resource, each with its entry in the contract.
//! - [`contract`]: the OpenAPI 3.1 document, generated from the handlers and the wire types.
//! - `service`: the controller's `Service` as the [`PoolApi`].
//! - [`follower`]: a controller that does not lead, as the [`PoolApi`] (reads only).
//! - `reads`: the reads both answer from the store.
//! - [`tokens`]: the token file (secrets and roles).
//! - `ui`: the dashboard's page at `/ui` (assets built into the binary).
//! - `redfish`: the pool as a Redfish service at `/redfish/v1` (read-only so far).
#![deny(missing_docs)]

pub mod contract;
pub mod follower;
mod reads;
mod redfish;
mod routes;
pub mod server;
mod service;
pub mod tokens;
mod ui;

pub use follower::Follower;
pub use server::{PoolApi, Principal, Role, serve};
pub use service::{Background, Beside, serve_service};
