//! pcipool's HTTP/JSON API under `/v1`.
//!
//! The server is a library: [`serve`] takes a bound listener, the domain behind the [`PoolApi`] trait and a
//! shutdown future, so tests bind `127.0.0.1:0`. Handlers only parse, authorise and translate into calls on
//! [`PoolApi`]; the domain never sees HTTP types. Errors are JSON `{ "code", "message" }` with stable codes.
//! [`client`] is the typed client the CLI uses (`PCIPOOL_URL`, `PCIPOOL_TOKEN`).
//!
//! # Layout
//! - [`types`]: request and response bodies.
//! - [`server`]: routes, auth, errors.
//! - [`client`]: the blocking client.
//! - [`tokens`]: the token file (secrets and roles).
#![deny(missing_docs)]

pub mod client;
pub mod server;
pub mod tokens;
pub mod types;

pub use server::{PoolApi, Principal, Role, serve};
