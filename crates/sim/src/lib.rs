//! The simulated fabric: pcipool's embedded default and its test bed.
//!
//! Hosts carry devices built by `pcipool_pcie`'s presets, each a register file with writable masks and a
//! reset that really changes config space; drivers bind by modalias and take virtual time; the fabric
//! model maps BARs and DMA windows and faults stale accesses; faults are explicit verbs (crash, reboot,
//! link down/up, hang, failed reset, surprise removal, hanging unbind, slow steps). Time is virtual and
//! randomness comes from one seed, so a run is reproduced exactly from its seed; [`Sim::event_hash`]
//! proves it.
//!
//! # Layout
//! - [`desc`]: the fabric description file.
//! - [`device`]: the register-file device model.
//! - [`presets`]: device presets and the drivers that match them.
//! - [`rng`]: the seeded generator.
//! - [`sim`]: the simulator and its fault verbs.
//! - [`backend`]: the backend primitives over the simulator (hosts' device control, the fabric
//!   manager); the step runner of `pcipool-agent` gives them their workflow meaning.
//! - [`run`]: the seeded workload runner with invariant checks.
#![deny(missing_docs)]

pub mod backend;
pub mod desc;
pub mod device;
pub mod inventory;
pub mod presets;
pub mod rng;
pub mod run;
pub mod sim;

pub use backend::{DMA_BASE, FabricManager, HostControl, HostView};
pub use desc::{DescError, FabricDesc, LAB_4, LoadError, Loaded, RACK_64};
pub use sim::{Event, EventKind, Sim};
