//! The hosts' agents and the fabric manager, reached over HTTP: where a controller whose hosts are
//! other machines sends each step, and how it knows which agents are alive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use pcipool_backend::{SharedExecutor, Step, StepContext, StepError, StepErrorKind, StepOutput};
use pcipool_fabric::NodeId;

use pcipool_pool::Millis;
use pcipool_wire::{ApiErrorBody, StepRequest};
use serde::{Deserialize, Serialize};

use crate::service::Clock;

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
    /// When it was last heard from, on the service's clock.
    last_seen: Millis,
    lost: bool,
}

/// The hosts' agents and the fabric manager, reached over HTTP. Shared by concurrent requests: the map
/// is locked only to read or update a link, never across a call to an agent.
#[derive(Debug)]
pub struct AgentFleet {
    agents: Mutex<BTreeMap<NodeId, AgentLink>>,
    /// Where fabric steps go (the simulated fabric's process, a hypervisor, a switch manager).
    fabric: Option<String>,
    http: ureq::Agent,
    /// An agent silent for this long is lost (its devices go `Lost`).
    pub timeout: Duration,
    clock: Arc<dyn Clock>,
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
    /// A fleet from stored records, each given a full timeout to be heard from; fabric steps go to
    /// `fabric`.
    pub fn new(
        records: Vec<(NodeId, AgentRecord)>,
        fabric: Option<String>,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now_ms();
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
            fabric,
            http: pcipool_client::http_agent(Duration::from_secs(30)),
            timeout,
            clock,
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, AgentLink>> {
        self.agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a (re-)registration; returns whether the agent had been lost.
    pub fn register(&self, node: NodeId, record: AgentRecord) -> bool {
        let now = self.clock.now_ms();
        let mut agents = self.links();
        let was_lost = agents.get(&node).is_some_and(|l| l.lost);
        agents.insert(
            node,
            AgentLink {
                record,
                last_seen: now,
                lost: false,
            },
        );
        was_lost
    }

    /// Takes `node`'s agent for lost (its devices are `Lost` in the store, left so by an earlier
    /// controller): its next heartbeat or registration is then a return, which brings them back.
    pub fn mark_lost(&self, node: NodeId) {
        if let Some(link) = self.links().get_mut(&node) {
            link.lost = true;
        }
    }

    /// Records a heartbeat.
    pub fn heard(&self, node: NodeId) -> Liveness {
        let now = self.clock.now_ms();
        match self.links().get_mut(&node) {
            None => Liveness::Unknown,
            Some(link) => {
                link.last_seen = now;
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
        let timeout = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let now = self.clock.now_ms();
        self.links()
            .iter_mut()
            .filter(|(_, l)| !l.lost && now.saturating_sub(l.last_seen) > timeout)
            .map(|(node, l)| {
                l.lost = true;
                *node
            })
            .collect()
    }

    fn agent_url(&self, node: NodeId) -> Result<AgentRecord, StepError> {
        let agents = self.links();
        let link = agents.get(&node).ok_or_else(|| {
            StepError::new(
                StepErrorKind::HostDown,
                format!("no agent registered for {node}"),
            )
        })?;
        if link.lost {
            return Err(StepError::new(
                StepErrorKind::HostDown,
                format!("the agent of {node} is lost"),
            ));
        }
        Ok(link.record.clone())
    }

    /// Sends one step where it runs: a host step to that host's agent, a fabric step to the fabric
    /// manager.
    fn send_step(&self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let request = StepRequest {
            step,
            ctx: ctx.clone(),
        };
        let (url, secret, who) = match step.node(ctx) {
            Some(node) => {
                let record = self.agent_url(node)?;
                (
                    record.url,
                    Some(record.secret),
                    format!("the agent of {node}"),
                )
            }
            None => match &self.fabric {
                Some(url) => (url.clone(), None, "the fabric manager".to_owned()),
                None => {
                    return Err(StepError::new(
                        StepErrorKind::Unsupported,
                        format!(
                            "{step:?} is the fabric's step and no fabric manager is configured (--fabric-url)"
                        ),
                    ));
                }
            },
        };
        let url = format!("{}/v1/steps", url.trim_end_matches('/'));
        let mut call = pcipool_client::with_timeout(
            self.http.post(&url),
            Duration::from_millis(ctx.deadline_ms.max(1)),
        );
        if let Some(secret) = &secret {
            call = call.header("authorization", &format!("Bearer {secret}"));
        }
        let mut resp = call.send_json(&request).map_err(|e| {
            StepError::new(
                StepErrorKind::HostDown,
                format!("{who} unreachable at {url}: {e}"),
            )
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return resp.body_mut().read_json::<StepOutput>().map_err(|e| {
                StepError::failed(format!(
                    "{who} answered {step:?} with an unreadable body: {e}"
                ))
            });
        }
        Err(match resp.body_mut().read_json::<ApiErrorBody>() {
            Ok(b) => StepError::new(
                StepErrorKind::from_code(&b.code),
                format!("{who}: {}", b.message),
            ),
            Err(_) => StepError::failed(format!("{who} answered HTTP {status}")),
        })
    }
}

impl SharedExecutor for AgentFleet {
    fn run_step(&self, step: Step, ctx: &StepContext) -> Result<StepOutput, StepError> {
        self.send_step(step, ctx)
    }
}
