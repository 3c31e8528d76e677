//! Where workflow steps run: the simulated lab inside this process (`pcipool dev`), or the hosts' agents
//! over HTTP (`pcipool server`). One enum, so the controller's generic executor stays a plain value.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pcipool_api::types::{ApiErrorBody, StepRequest};
use pcipool_backend::{Executor, Side, Step, StepContext};
use pcipool_fabric::NodeId;
use pcipool_sim::Sim;
use serde::{Deserialize, Serialize};

/// How the controller reaches one agent; stored so a restarted controller can reach it at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Base URL of the agent's step endpoint.
    pub url: String,
    /// Secret the agent generated at start and expects on every step call (the controller proves it is
    /// the controller the agent registered with).
    pub secret: String,
}

#[derive(Debug)]
struct AgentLink {
    record: AgentRecord,
    last_seen: Instant,
    lost: bool,
}

/// The hosts' agents, reached over HTTP. Shared by concurrent requests: the map is locked only to read
/// or update a link, never across a call to an agent.
#[derive(Debug)]
pub struct AgentFleet {
    agents: Mutex<BTreeMap<NodeId, AgentLink>>,
    http: ureq::Agent,
    /// An agent silent for this long is lost (its devices go `Lost`).
    pub timeout: Duration,
}

/// What changed in the fleet's view of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from it as before.
    Alive,
    /// It was lost and is back.
    Back,
    /// Not known (the controller restarted without its record): it must register.
    Unknown,
}

impl AgentFleet {
    /// A fleet from stored records; each is given a full timeout to be heard from.
    pub fn new(records: Vec<(NodeId, AgentRecord)>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        let now = Instant::now();
        Self {
            agents: Mutex::new(
                records
                    .into_iter()
                    .map(|(node, record)| {
                        (
                            node,
                            AgentLink {
                                record,
                                last_seen: now,
                                lost: false,
                            },
                        )
                    })
                    .collect(),
            ),
            http: config.into(),
            timeout,
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, AgentLink>> {
        self.agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a (re-)registration; returns whether the agent had been lost.
    pub fn register(&self, node: NodeId, record: AgentRecord) -> bool {
        let mut agents = self.links();
        let was_lost = agents.get(&node).is_some_and(|l| l.lost);
        agents.insert(
            node,
            AgentLink {
                record,
                last_seen: Instant::now(),
                lost: false,
            },
        );
        was_lost
    }

    /// Records a heartbeat.
    pub fn heard(&self, node: NodeId) -> Liveness {
        match self.links().get_mut(&node) {
            None => Liveness::Unknown,
            Some(link) => {
                link.last_seen = Instant::now();
                if link.lost {
                    link.lost = false;
                    Liveness::Back
                } else {
                    Liveness::Alive
                }
            }
        }
    }

    /// `up`, `lost` or `none`.
    pub fn status(&self, node: NodeId) -> &'static str {
        match self.links().get(&node) {
            None => "none",
            Some(l) if l.lost => "lost",
            Some(_) => "up",
        }
    }

    /// Agents silent past the timeout that were not yet reported lost; marks them lost.
    pub fn newly_lost(&self) -> Vec<NodeId> {
        let timeout = self.timeout;
        self.links()
            .iter_mut()
            .filter(|(_, l)| !l.lost && l.last_seen.elapsed() > timeout)
            .map(|(node, l)| {
                l.lost = true;
                *node
            })
            .collect()
    }

    fn call(&self, node: NodeId, request: &StepRequest) -> Result<(), CallError> {
        let record = {
            let agents = self.links();
            let link = agents
                .get(&node)
                .ok_or_else(|| CallError::Unreachable(format!("no agent registered for {node}")))?;
            if link.lost {
                return Err(CallError::Unreachable(format!(
                    "the agent of {node} is lost"
                )));
            }
            link.record.clone()
        };
        let url = format!("{}/v1/steps", record.url.trim_end_matches('/'));
        let mut resp = self
            .http
            .post(&url)
            .header("authorization", &format!("Bearer {}", record.secret))
            .send_json(request)
            .map_err(|e| {
                CallError::Unreachable(format!("agent of {node} unreachable at {url}: {e}"))
            })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status().as_u16();
        Err(CallError::Refused(
            match resp.body_mut().read_json::<ApiErrorBody>() {
                Ok(b) => format!("{node}: {}: {}", b.code, b.message),
                Err(_) => format!("{node}: agent answered HTTP {status}"),
            },
        ))
    }
}

/// Why a step sent to an agent did not run.
#[derive(Debug)]
enum CallError {
    /// The agent could not be reached (lost, not registered, transport failure).
    Unreachable(String),
    /// The agent (or the host's hardware) refused or failed the step.
    Refused(String),
}

impl AgentFleet {
    /// Sends one step to the agent of the host that runs it.
    fn run_step(&self, step: Step, ctx: &StepContext) -> Result<(), String> {
        let node = match step.side() {
            Side::Lender => ctx.lender,
            Side::Borrower => ctx.borrower,
        };
        let request = StepRequest {
            step,
            ctx: ctx.clone(),
        };
        match (step, self.call(NodeId(node), &request)) {
            (_, Ok(())) => Ok(()),
            // Nothing on a borrower nobody can reach is using the device any more.
            (Step::BorrowerQuiesceCheck, Err(CallError::Unreachable(_))) => Ok(()),
            (_, Err(CallError::Unreachable(why) | CallError::Refused(why))) => Err(why),
        }
    }
}

/// The hardware a controller drives; shared by concurrent requests.
#[derive(Debug)]
pub enum Hardware {
    /// The simulated lab in this process (`pcipool dev`): a restart of the process is a power cycle. Each
    /// step takes the lock on its own, so requests for different devices interleave their steps.
    InProcess(Box<Mutex<Sim>>),
    /// Agents on the hosts (`pcipool server`): the hardware outlives a controller restart.
    Agents(AgentFleet),
}

impl Hardware {
    /// An executor over this hardware for one request.
    pub fn steps(&self) -> Steps<'_> {
        Steps(self)
    }
}

/// The controller's executor for one request: a handle on the shared hardware.
#[derive(Debug)]
pub struct Steps<'a>(&'a Hardware);

impl Executor for Steps<'_> {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<(), String> {
        match self.0 {
            Hardware::InProcess(sim) => sim
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .run(step, ctx),
            Hardware::Agents(fleet) => fleet.run_step(step, ctx),
        }
    }
}
