//! A VM lab for one test: `pcipool_lab::Lab` (guests, controller process, QEMU fabric manager, an
//! agent in each guest) with the machine's room for its guests, and the checks every scenario ends with.

use std::time::{Duration, Instant};

use pcipool_fabric::{Fdid, NodeId};
use pcipool_lab::{Lab, LabError, Options};
use pcipool_vm::vm::Ran;

use crate::guest::{Room, room};

/// A lab and what it needs while it runs; dropping it stops the lab, then frees its room.
pub struct TestLab {
    pub lab: Lab,
    pub client: pcipool_client::Client,
    _dir: tempfile::TempDir,
    /// Dropped last: the guests are gone before another test may start its own.
    _room: Room,
}

/// `n` as a node.
pub fn n(node: u32) -> NodeId {
    NodeId(node)
}

impl TestLab {
    /// The lab `description` describes, with agents lost after `agent_timeout` of silence; `None`
    /// (after a SKIPPED line) when QEMU cannot be had on this machine.
    pub fn up(test: &str, description: &str, agent_timeout: Duration) -> Option<Self> {
        let guests = pcipool_lab::description::Description::parse(description)
            .expect("the test's lab description")
            .host
            .len();
        let room = room(u32::try_from(guests).expect("a few guests"));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = Options::new(dir.path(), env!("CARGO_BIN_EXE_pcipool").as_ref());
        opts.agent_timeout = agent_timeout;
        let started = Instant::now();
        match Lab::up(description, &opts) {
            Ok(lab) => {
                eprintln!(
                    "{test}: lab of {guests} guests up in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                Some(Self {
                    client: lab.client(),
                    lab,
                    _dir: dir,
                    _room: room,
                })
            }
            Err(LabError::Unavailable(why)) => {
                pcipool_testkit::skip::skipped(test, &why);
                None
            }
            Err(e) => panic!("{test}: lab: {e}"),
        }
    }

    /// Runs a command in a guest; a guest that does not answer within three minutes fails the test.
    pub fn sh(&self, node: NodeId, command: &str) -> Ran {
        match self.lab.exec(node, command, Duration::from_secs(180)) {
            Ok(ran) => ran,
            Err(e) => panic!("{node}: {command:?}: {e}"),
        }
    }

    /// The trimmed output of a guest command that must succeed.
    pub fn ok(&self, node: NodeId, command: &str) -> String {
        let ran = self.sh(node, command);
        assert_eq!(ran.status, 0, "{node}: {command}: {}", ran.output);
        ran.output.trim().to_owned()
    }

    /// The marker the lab wrote at the start of `serial`'s image.
    pub fn marker_of(&self, serial: &str) -> String {
        self.lab
            .description()
            .host
            .iter()
            .flat_map(|h| &h.nvme)
            .find(|d| d.serial == serial)
            .map(pcipool_lab::description::DriveSpec::marker)
            .expect("a drive of the lab")
    }

    /// Borrows `count` NVMe drives for `borrower`, waiting for the lend.
    pub fn borrow(
        &self,
        borrower: NodeId,
        count: u32,
        duration_secs: Option<u64>,
    ) -> Result<Vec<pcipool_wire::Granted>, pcipool_client::ClientError> {
        self.client.borrow(&pcipool_wire::BorrowRequest {
            duration_secs,
            ..pcipool_wire::BorrowRequest::lend(
                pcipool_pool::schedule::DeviceClass::Nvme,
                count,
                borrower,
            )
        })
    }

    /// What the controller says of `fdid` ("" when it does not know it).
    pub fn state_of(&self, fdid: Fdid) -> String {
        self.client
            .devices()
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.fdid == fdid)
            .map(|d| d.state)
            .unwrap_or_default()
    }

    /// The states of `fdids` once each is one of `settled` (or what they were at the deadline).
    pub fn settle(&self, fdids: &[Fdid], settled: &[&str], within: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let states: Vec<String> = fdids.iter().map(|f| self.state_of(*f)).collect();
            if states.iter().all(|s| settled.contains(&s.as_str())) || started.elapsed() > within {
                return states;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Fails the test with what the controller and the agents say.
    pub fn diagnose(&self, what: &str) -> ! {
        let audit: Vec<String> = self
            .client
            .audit(0, 1000)
            .unwrap_or_default()
            .into_iter()
            .map(|r| format!("{} {} {}", r.action, r.target, r.result))
            .collect();
        let logs: Vec<String> = self
            .lab
            .nodes()
            .into_iter()
            .map(|node| {
                let log = self
                    .lab
                    .exec(node, "tail -n 30 /tmp/agent.log", Duration::from_secs(20))
                    .map_or_else(|e| e.to_string(), |r| r.output);
                format!("{node}'s agent:\n{log}")
            })
            .collect();
        panic!("{what}\naudit:\n{}\n{}", audit.join("\n"), logs.join("\n"));
    }

    /// After a scenario: every drive's image is held by at most one QEMU (the fabric's `holder`
    /// fails on two), and by the guest the store says: the borrower of a lent drive, the lender of
    /// an available one; and the drive is in that guest's PCI tree (`query-pci`) and in no other.
    /// Returns each drive's (state, holder) for the test's own assertion.
    pub fn fabric_agrees_with_store(&self) -> Vec<(Fdid, String, Result<Option<NodeId>, String>)> {
        let leases = self.client.leases().unwrap_or_default();
        let drives: Vec<Fdid> = self
            .lab
            .description()
            .lent_drives()
            .iter()
            .map(|(f, _)| *f)
            .collect();
        drives
            .into_iter()
            .map(|fdid| {
                let state = self.state_of(fdid);
                let holder = self.lab.fabric().holder(fdid).map_err(|e| e.to_string());
                // A lost lender's drive is in no kernel: the fabric pulled it from the borrower.
                let expected = match state.as_str() {
                    "available" => Some(fdid.node),
                    "lent" => leases.iter().find(|l| l.fdid == fdid).map(|l| l.borrower),
                    _ => None,
                };
                let in_trees = self.lab.fabric().in_pci_tree(fdid).map_err(|e| e.to_string());
                let agrees = holder.as_ref().ok() == Some(&expected)
                    && in_trees.as_ref().ok() == Some(&expected.into_iter().collect());
                if !agrees {
                    self.diagnose(&format!(
                        "{fdid} is {state} in the store but its image is held by {holder:?} and the PCI trees of {in_trees:?} have it"
                    ));
                }
                (fdid, state, holder)
            })
            .collect()
    }
}

/// The NVMe namespace of the controller at `at` on `node` once its kernel has it, and its first 12
/// bytes: "nvme0n1 n1a.........".
pub fn wait_for_drive(lab: &TestLab, node: NodeId, at: &str) -> String {
    lab.ok(
        node,
        &format!(
            "for i in $(seq 600); do b=$(ls /sys/bus/pci/devices/{at}/nvme/*/ 2>/dev/null | grep -m1 '^nvme[0-9]*n1$'); [ -n \"$b\" ] && [ -e /dev/$b ] && break; sleep 0.1; done; echo $b $(dd if=/dev/$b bs=12 count=1 2>/dev/null)"
        ),
    )
}

/// Writes `text` (12 bytes) at the start of the namespace of the controller at `at` on `node`.
pub fn write_drive(lab: &TestLab, node: NodeId, at: &str, text: &str) {
    lab.ok(node, &format!("b=$(ls /sys/bus/pci/devices/{at}/nvme/*/ | grep -m1 '^nvme[0-9]*n1$'); printf '{text}' | dd of=/dev/$b bs=12 count=1 conv=notrunc 2>/dev/null; sync"));
}

/// The second word of [`wait_for_drive`]'s answer: what the drive starts with.
pub fn marker(answer: &str) -> Option<String> {
    answer.split_whitespace().nth(1).map(str::to_owned)
}

/// One journal as the audit chain recorded it: each step's name, status and output.
pub type AuditedSteps = Vec<(String, String, String)>;

/// Every journal of a `kind` ("Lend", "Return") workflow the audit chain holds (of workflow `id`, or
/// any), oldest first: the controller records a workflow's journal when a step fails and when it ends.
pub fn audited_journals(
    audit: &[pcipool_wire::AuditView],
    kind: &str,
    id: Option<u64>,
) -> Vec<AuditedSteps> {
    audit
        .iter()
        .filter(|r| {
            let mut words = r.action.split_whitespace();
            words.next() == Some("workflow")
                && words
                    .next()
                    .is_some_and(|w| id.is_none_or(|id| w == id.to_string()))
                && words.next() == Some(kind)
        })
        .map(|r| {
            let journal: serde_json::Value = serde_json::from_str(&r.after).unwrap_or_default();
            journal["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let text = |v: &serde_json::Value| {
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    };
                    // A status is `{"status": "done"}` or `{"status": "failed", "error": "..."}`.
                    let status = match s["status"]["error"].as_str() {
                        Some(error) => format!("{}: {error}", text(&s["status"]["status"])),
                        None => text(&s["status"]["status"]),
                    };
                    (text(&s["step"]), status, text(&s["output"]))
                })
                .collect()
        })
        .collect()
}

/// The last journal of [`audited_journals`].
pub fn audited_steps(
    audit: &[pcipool_wire::AuditView],
    kind: &str,
    id: Option<u64>,
) -> AuditedSteps {
    audited_journals(audit, kind, id).pop().unwrap_or_default()
}
