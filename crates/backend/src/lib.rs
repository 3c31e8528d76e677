//! What a host and the fabric look like to pcipool, whichever backend drives them.
//!
//! The controller and the agents build against these types and traits alone; the simulator
//! (`pcipool-sim`), the Linux backend (`pcipool-backend-linux`, over a sysfs root) and later the
//! hypervisor and vendor fabrics fill them in. A backend implements primitives only: what one host's
//! kernel can do to its functions ([`DeviceControl`]) and what the fabric can do between hosts
//! ([`FabricControl`]). What a workflow step means (idempotence, the reset fallback, verify rules) is
//! written once, in the step runner of `pcipool-agent`, over these traits.
//!
//! # Layout
//! - [`inventory`]: [`DeviceRecord`], [`HostInventory`] and the [`Inventory`] trait.
//! - [`control`]: [`DeviceControl`], [`FabricControl`], their errors, fabric [`Capabilities`],
//!   [`Absent`] (the side a process does not control) and [`Site`] (every host in one process).
//! - [`remote`]: [`DeviceControl`] as messages ([`remote::HostOp`]) for a host in another process.
//! - [`step`]: [`Step`], [`Side`], [`StepContext`], [`StepOutput`], [`StepError`] and the
//!   [`Executor`] the controller drives workflows through.
#![deny(missing_docs)]

pub mod control;
pub mod inventory;
pub mod remote;
pub mod step;

pub use control::{
    Absent, Attachment, Capabilities, DeviceControl, DeviceError, DeviceHealth, FabricControl,
    FabricError, FabricMapping, Mapped, Site,
};
pub use inventory::{
    BlockDevice, DeviceRecord, HostInventory, Inventory, KernelLink, ResetMethodSource, SriovState,
};
pub use step::{
    DEFAULT_STEP_DEADLINE_MS, Executor, SharedExecutor, Side, Step, StepContext, StepError,
    StepErrorKind, StepOutput,
};
