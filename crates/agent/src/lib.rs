//! The host side of pcipool's workflows: what each lend and return step means, written once over the
//! backend primitives (`pcipool-backend`), and how steps are carried out in one process.
//!
//! A backend implements primitives only (unbind, reset, hot-add, map a window, ...). The
//! [`StepRunner`] gives them the workflow's meaning: idempotence checks ("already mapped?"), the
//! reset fallback (function-level reset, else a bus reset refused while a sibling is busy), and the
//! verify rules. A new backend plugs in by implementing `DeviceControl` for its hosts and/or
//! `FabricControl` for its fabric; nothing here changes.
//!
//! The agent runtime is a library too: [`Agent`] carries out one host's steps (refusing stale fencing
//! epochs), registers and heartbeats with the controller, and tears down leases it no longer holds;
//! [`server::serve`] puts it on a listener the caller binds, until a shutdown the caller owns.
//!
//! # Layout
//! - [`runner`]: [`StepRunner`], the step semantics.
//! - [`local`]: [`Local`], an executor over every host and the fabric in one process.
//! - [`runtime`]: [`Agent`], one host's agent, and the [`Reporter`] of its devices.
//! - [`server`]: the agent's HTTP routes.
//! - [`fabric_manager`]: a fabric manager's HTTP routes over any `FabricControl`.
//! - [`simulated`]: [`SimulatedHost`], a host whose hardware is the simulated fabric's process.
//! - [`linux`]: [`linux::LinuxPool`], a Linux host's pool of functions: its offer and its device control.
//! - [`process`]: `pcipool agent` as a process (listener, heartbeats, shutdown).
//! - [`stats`]: [`stats::StepClock`], the steps an agent or fabric manager ran and their time.
#![deny(missing_docs)]

pub mod fabric_manager;
pub mod linux;
pub mod local;
pub mod process;
pub mod runner;
pub mod runtime;
pub mod server;
pub mod simulated;
pub mod stats;

pub use local::{Local, LocalShared};
pub use runner::StepRunner;
pub use runtime::{Agent, Reporter};
pub use simulated::SimulatedHost;
