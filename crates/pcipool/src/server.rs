//! `pcipool server`: the controller as a service. Its store lives in the data directory; the hosts are
//! reached through their agents, which register over the API and are recorded in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pcipool_api::{Principal, Role};
use pcipool_controller::{
    AgentFleet, AgentRecord, Clock, Controller, Hardware, Service, SystemClock,
};
use pcipool_pool::policy::Policy;
use pcipool_store::{SqliteStore, Store as _};

use crate::dev::{random_token, serve_lab};

/// Validated `pcipool server` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Store and generated tokens.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: String,
    /// Fabric description (None: the built-in lab).
    pub fabric: Option<PathBuf>,
    /// Token file.
    pub tokens: Option<PathBuf>,
    /// Policy file.
    pub policy: Option<PathBuf>,
    /// Silence after which an agent is lost.
    pub agent_timeout: Duration,
    /// The fabric manager fabric steps go to (the simulated fabric's process).
    pub fabric_url: Option<String>,
}

/// Reads `DIR/NAME`, or writes a fresh secret there (mode 0600) when it is missing or empty.
pub fn token_file(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_owned());
    }
    let t = random_token()?;
    std::fs::write(&path, format!("{t}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(t)
}

/// `pcipool server`.
///
/// # Errors
/// Bad files (exit 3), store or bind failures.
pub fn run(o: &ServerOptions) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&o.data_dir)
        .with_context(|| format!("creating {}", o.data_dir.display()))?;
    let (_, desc) =
        crate::sim_cmd::load_or(o.fabric.as_deref(), "built-in lab-4", crate::sim_cmd::LAB_4)?;
    let policy = match &o.policy {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Policy::parse(&text).map_err(|e| crate::BadInput(format!("{}: {e}", p.display())))?
        }
        None => Policy::default(),
    };
    let (tokens, where_tokens) = match &o.tokens {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let map = pcipool_api::tokens::parse(&text)
                .map_err(|e| crate::BadInput(format!("{}: {e}", p.display())))?;
            (map, format!("tokens from {}", p.display()))
        }
        None => {
            let mut map = BTreeMap::new();
            map.insert(
                token_file(&o.data_dir, "admin.token")?,
                Principal {
                    name: "admin".into(),
                    role: Role::Admin,
                },
            );
            map.insert(
                token_file(&o.data_dir, "agent.token")?,
                Principal {
                    name: "agent".into(),
                    role: Role::Agent,
                },
            );
            (
                map,
                format!(
                    "admin token in {}, agent token in {}",
                    o.data_dir.join("admin.token").display(),
                    o.data_dir.join("agent.token").display()
                ),
            )
        }
    };
    let store = SqliteStore::open(&o.data_dir.join("pool.db")).context("opening the store")?;
    let mut records = Vec::new();
    for (node, body) in store.agents().context("reading agent records")? {
        let record: AgentRecord = serde_json::from_str(&body)
            .map_err(|e| crate::BadInput(format!("agent record of {node} in the store: {e}")))?;
        records.push((node, record));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fleet = AgentFleet::new(
        records,
        o.fabric_url.clone(),
        o.agent_timeout,
        clock.clone(),
    );
    let controller = Controller::new(store, policy, desc.topology);
    let lab = Service::start(controller, Hardware::Agents(fleet), clock)
        .context("starting the controller")?;
    serve_lab(lab, &o.listen, tokens, |addr| {
        println!("pcipool server: controller at http://{addr}");
        println!("  store:  {}", o.data_dir.join("pool.db").display());
        println!("  {where_tokens}");
        println!(
            "Agents: pcipool agent --node nN --url http://{addr} --token <agent token> --fabric-url <sim>"
        );
        println!(
            "  fabric steps: {}",
            o.fabric_url
                .as_deref()
                .unwrap_or("no fabric manager (--fabric-url): lends cannot map")
        );
    })?;
    Ok(ExitCode::SUCCESS)
}
