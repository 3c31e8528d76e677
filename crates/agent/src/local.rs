//! Every step in this process: the simulator's hosts and fabric (`pcipool dev`, the validation lab,
//! tests), or a test's own backend. Host steps go to the host the step names, fabric steps to the
//! fabric; the step runner gives them their meaning.

use pcipool_backend::{Absent, Executor, Side, Site, Step, StepContext, StepError, StepOutput};

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
