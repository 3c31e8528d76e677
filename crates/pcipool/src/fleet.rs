//! Where workflow steps run: the simulated lab inside this process (`pcipool dev`), or the hosts' agents
//! over HTTP (`pcipool server`). One enum, so the controller's generic executor stays a plain value.

use std::collections::BTreeMap;
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

/// The hosts' agents, reached over HTTP.
#[derive(Debug)]
pub struct AgentFleet {
    agents: BTreeMap<NodeId, AgentLink>,
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
            agents: records
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
            http: config.into(),
            timeout,
        }
    }

    /// Records a (re-)registration; returns whether the agent had been lost.
    pub fn register(&mut self, node: NodeId, record: AgentRecord) -> bool {
        let was_lost = self.agents.get(&node).is_some_and(|l| l.lost);
        self.agents.insert(
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
    pub fn heard(&mut self, node: NodeId) -> Liveness {
        match self.agents.get_mut(&node) {
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
        match self.agents.get(&node) {
            None => "none",
            Some(l) if l.lost => "lost",
            Some(_) => "up",
        }
    }

    /// Agents silent past the timeout that were not yet reported lost; marks them lost.
    pub fn newly_lost(&mut self) -> Vec<NodeId> {
        let timeout = self.timeout;
        self.agents
            .iter_mut()
            .filter(|(_, l)| !l.lost && l.last_seen.elapsed() > timeout)
            .map(|(node, l)| {
                l.lost = true;
                *node
            })
            .collect()
    }

    fn call(&self, node: NodeId, request: &StepRequest) -> Result<(), String> {
        let link = self
            .agents
            .get(&node)
            .ok_or_else(|| format!("no agent registered for {node}"))?;
        if link.lost {
            return Err(format!("the agent of {node} is lost"));
        }
        let url = format!("{}/v1/steps", link.record.url.trim_end_matches('/'));
        let mut resp = self
            .http
            .post(&url)
            .header("authorization", &format!("Bearer {}", link.record.secret))
            .send_json(request)
            .map_err(|e| format!("agent of {node} unreachable at {url}: {e}"))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status().as_u16();
        match resp.body_mut().read_json::<ApiErrorBody>() {
            Ok(b) => Err(format!("{node}: {}: {}", b.code, b.message)),
            Err(_) => Err(format!("{node}: agent answered HTTP {status}")),
        }
    }
}

impl Executor for AgentFleet {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<(), String> {
        let node = match step.side() {
            Side::Lender => ctx.lender,
            Side::Borrower => ctx.borrower,
        };
        self.call(
            NodeId(node),
            &StepRequest {
                step,
                ctx: ctx.clone(),
            },
        )
    }
}

/// The hardware a controller drives.
#[derive(Debug)]
pub enum Hardware {
    /// The simulated lab in this process (`pcipool dev`): a restart of the process is a power cycle.
    InProcess(Box<Sim>),
    /// Agents on the hosts (`pcipool server`): the hardware outlives a controller restart.
    Agents(AgentFleet),
}

impl Executor for Hardware {
    fn run(&mut self, step: Step, ctx: &StepContext) -> Result<(), String> {
        match self {
            Self::InProcess(sim) => sim.run(step, ctx),
            Self::Agents(fleet) => fleet.run(step, ctx),
        }
    }
}
