//! Following a waiting borrow: while the controller carries out the lends, which step each is on.
//! `pcipool borrow` shows it on a terminal.

use std::time::Duration;

use pcipool_wire::{BorrowRequest, Granted, NodeId};

use crate::{Client, ClientError};

/// How often the lends are looked at while the borrow waits.
const LOOK_EVERY: Duration = Duration::from_millis(50);

impl Client {
    /// Borrows as [`Client::borrow`] does; while the answer waits for the lends, calls `progress`
    /// with a line each time a lend to the request's borrower moves to another step
    /// (`lend n1:0000:03:00.0 to n3: step 4/8 map_bars`). A request that does not wait is just sent.
    ///
    /// # Errors
    /// The borrow's own [`ClientError`] (a look at the lends that fails says nothing: the borrow's
    /// answer is what counts).
    pub fn borrow_following(
        &self,
        request: &BorrowRequest,
        mut progress: impl FnMut(&str),
    ) -> Result<Vec<Granted>, ClientError> {
        if !request.wait {
            return self.borrow(request);
        }
        std::thread::scope(|s| {
            let borrow = s.spawn(|| self.borrow(request));
            let mut shown = String::new();
            while !borrow.is_finished() {
                std::thread::sleep(LOOK_EVERY);
                if let Some(line) = self.lend_step(request.borrower)
                    && line != shown
                {
                    progress(&line);
                    shown = line;
                }
            }
            borrow.join().unwrap_or_else(|_| {
                Err(ClientError::Body {
                    url: format!("{}/v1/leases", self.base()),
                })
            })
        })
    }

    /// The step a lend to `borrower` is on now, if one is running.
    fn lend_step(&self, borrower: NodeId) -> Option<String> {
        let leases = self.leases().ok()?;
        let lending = leases
            .iter()
            .find(|l| l.borrower == borrower && l.state == "lending")?;
        let device = self.device(&lending.fdid.to_string()).ok()?;
        let journal = self.workflow(device.detail["workflow"].as_u64()?).ok()?;
        step_line(&journal, borrower)
    }
}

/// `lend FDID to NODE: step I/N NAME` for the first step of `journal` still pending.
pub fn step_line(journal: &serde_json::Value, borrower: NodeId) -> Option<String> {
    let steps = journal["steps"].as_array()?;
    let (i, step) = steps
        .iter()
        .enumerate()
        .find(|(_, s)| s["status"]["status"].as_str() == Some("pending"))?;
    Some(format!(
        "{} {} to {borrower}: step {}/{} {}",
        journal["kind"]
            .as_str()
            .unwrap_or("workflow")
            .to_lowercase(),
        journal["fdid"].as_str().unwrap_or("?"),
        i + 1,
        steps.len(),
        step["step"].as_str().unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcipool_pool::workflow::{Journal, StepStatus, WorkflowKind};

    #[test]
    fn a_journal_names_its_first_pending_step() {
        let ctx = pcipool_backend::StepContext {
            lender: NodeId(1),
            bdf: "0000:03:00.0".parse().expect("bdf"),
            borrower: NodeId(3),
            attached: None,
            lease: pcipool_wire::LeaseId(7),
            epoch: pcipool_wire::Epoch(1),
            bars: vec![(0, 16384)],
            dma_window: 1 << 28,
            driver: Some("nvme".into()),
            lender_driver: None,
            lender_vfs: 0,
            deadline_ms: 30_000,
        };
        let mut journal = Journal::new(
            7,
            WorkflowKind::Lend,
            "n1:0000:03:00.0".into(),
            ctx,
            pcipool_backend::Attachment::Windows,
        );
        let total = journal.steps.len();
        for s in journal.steps.iter_mut().take(3) {
            s.status = StepStatus::Done;
        }
        let json = serde_json::to_value(&journal).expect("json");
        let line = step_line(&json, NodeId(3)).expect("a pending step");
        let fourth = serde_json::to_value(journal.steps[3].step).expect("json");
        assert_eq!(
            line,
            format!(
                "lend n1:0000:03:00.0 to n3: step 4/{total} {}",
                fourth.as_str().unwrap_or_default()
            )
        );
        for s in &mut journal.steps {
            s.status = StepStatus::Done;
        }
        let finished = serde_json::to_value(&journal).expect("json");
        assert_eq!(step_line(&finished, NodeId(3)), None);
    }
}
