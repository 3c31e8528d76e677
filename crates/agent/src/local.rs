//! Every step in this process: the simulator's hosts and fabric (`pcipool dev`, the validation lab,
//! tests), or a test's own backend. Host steps go to the host the step names, fabric steps to the
//! fabric; the step runner gives them their meaning.

use pcipool_backend::{
    Absent, Executor, SharedExecutor, Side, Site, Step, StepContext, StepError, StepOutput,
};

use crate::runner::StepRunner;

/// An [`Executor`] over every host and the fabric of a [`Site`] in this process. No fencing here:
/// there is one controller in the process, so no stale one can send a step.
#[derive(Debug)]
pub struct Local<'a, S>(pub &'a mut S);

impl<S: Site> Executor for Local<'_, S> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        match step.side() {
            Side::Lender => StepRunner::new(self.0.host_control(ctx.lender), Absent).run(step, ctx),
            Side::Borrower => {
                StepRunner::new(self.0.host_control(ctx.borrower), Absent).run(step, ctx)
            }
            Side::Fabric => StepRunner::new(Absent, self.0.fabric_control()).run(step, ctx),
        }
    }
}

/// A [`Site`] that concurrent requests share: each step locks it for as long as the step runs.
#[derive(Debug)]
pub struct LocalShared<S>(std::sync::Mutex<S>);

impl<S> LocalShared<S> {
    /// Shares `site`.
    pub fn new(site: S) -> Self {
        Self(std::sync::Mutex::new(site))
    }

    /// Locks the site (for a look at the hardware between steps).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: Site + Send + std::fmt::Debug> SharedExecutor for LocalShared<S> {
    fn run_step(&self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        Local(&mut *self.lock()).run(step, ctx)
    }
}
