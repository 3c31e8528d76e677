//! The sans-IO core of pcipool: the decisions, with no clock, socket, file or randomness of its own.
//!
//! The runtime (controller) feeds events and the current time in and carries out the commands that come
//! back; stores persist the states. Because nothing here does I/O, the state machine is tested
//! exhaustively and reused unchanged under the simulator.
//!
//! # Layout
//! - [`state`]: device ownership states, leases, epochs, and the transition table.
//! - [`audit`]: the tamper-evident audit chain.
//! - [`workflow`]: lend and return plans and their journal.
//! - [`policy`]: the policy file: tenants, quotas, lease limits, maintenance windows, overrides.
//! - [`schedule`]: placement of requests onto devices.
//! - [`offer`]: what a host offers: its devices qualified per model and described for placement.
#![deny(missing_docs)]

pub mod audit;
pub mod capacity;
pub mod offer;
pub mod policy;
pub mod schedule;
pub mod state;
pub mod transition;
pub mod workflow;

pub use audit::{AuditChain, AuditEntry, AuditError, AuditRecord};
pub use state::{
    Command, DeviceState, Epoch, Event, Lease, Millis, ReturnReason, TransitionError, WorkflowId,
    apply,
};
