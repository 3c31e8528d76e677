//! `pcipool server`: the controller whose hosts are reached through their agents. Its store lives in the
//! data directory; agents register over the API and are recorded in the store, so a restarted
//! controller knows them before they call again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pcipool_api::{Principal, Role};
use pcipool_controller::{
    AgentFleet, AgentRecord, Clock, Controller, Hardware, Service, SystemClock,
};
use pcipool_store::{SqliteStore, Store as _};

use crate::ServeError;
use crate::tokens::{read_token_file, token_file};

/// What `pcipool server` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Store (`pool.db`) and generated tokens.
    pub data_dir: PathBuf,
    /// Fabric description (None: the built-in lab).
    pub fabric: Option<PathBuf>,
    /// Operator token file (None: generate `admin.token` and `agent.token` in the data directory).
    pub tokens: Option<PathBuf>,
    /// Policy file.
    pub policy: Option<PathBuf>,
    /// Silence after which an agent is lost.
    pub agent_timeout: Duration,
    /// The fabric manager that fabric steps go to (for the simulated fabric, `pcipool sim serve`).
    pub fabric_url: Option<String>,
    /// How that fabric connects a borrower to a device: the workflow plans follow from it.
    pub attachment: pcipool_backend::Attachment,
}

/// A controller ready to serve, with its tokens and where they came from.
pub struct Server {
    /// The running service.
    pub service: Service<SqliteStore>,
    /// Accepted tokens.
    pub tokens: BTreeMap<String, Principal>,
    /// Where the tokens are, in words for the operator.
    pub tokens_from: String,
    /// The store file.
    pub store_path: PathBuf,
    /// The fabric manager fabric steps go to.
    pub fabric_url: Option<String>,
}

fn generated_tokens(dir: &Path) -> Result<(BTreeMap<String, Principal>, String), ServeError> {
    let principal = |name: &str, role| Principal {
        name: name.into(),
        role,
    };
    let tokens = BTreeMap::from([
        (
            token_file(dir, "admin.token")?,
            principal("admin", Role::Admin),
        ),
        (
            token_file(dir, "agent.token")?,
            principal("agent", Role::Agent),
        ),
    ]);
    let from = format!(
        "admin token in {}, agent token in {}",
        dir.join("admin.token").display(),
        dir.join("agent.token").display()
    );
    Ok((tokens, from))
}

impl Server {
    /// Serves on `listen` until `shutdown`; `banner` hears what `pcipool server` prints once bound.
    ///
    /// # Errors
    /// Bind or serve failures.
    pub fn serve(
        self,
        listen: &str,
        banner: impl FnOnce(Vec<String>),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            service,
            tokens,
            tokens_from,
            store_path,
            fabric_url,
        } = self;
        let lines = move |addr: std::net::SocketAddr| {
            banner(Self::banner(
                addr,
                &store_path,
                &tokens_from,
                fabric_url.as_deref(),
            ));
        };
        crate::serve(
            service,
            listen,
            tokens,
            |_| axum::Router::new(),
            lines,
            shutdown,
        )
    }

    fn banner(
        addr: std::net::SocketAddr,
        store_path: &Path,
        tokens_from: &str,
        fabric_url: Option<&str>,
    ) -> Vec<String> {
        vec![
            format!("pcipool server: controller at http://{addr}"),
            format!("  store:  {}", store_path.display()),
            format!("  {tokens_from}"),
            format!(
                "Agents: pcipool agent --node nN --url http://{addr} --token <agent token> --fabric-url <sim>"
            ),
            format!(
                "  fabric steps: {}",
                fabric_url.unwrap_or("no fabric manager (--fabric-url): lends cannot map")
            ),
        ]
    }
}

/// Opens the store, reads the policy, tokens and the agents recorded before, and starts the service.
///
/// # Errors
/// Bad files ([`ServeError::BadInput`]), store or start-up failures.
pub fn open(config: &ServerConfig) -> Result<Server, ServeError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(ServeError::io(format!("creating {}", dir.display())))?;
    let desc = pcipool_sim::FabricDesc::load(config.fabric.as_deref())?.desc;
    let (_, policy) = crate::load_policy(config.policy.as_deref())?;
    let (tokens, tokens_from) = match &config.tokens {
        Some(p) => (read_token_file(p)?, format!("tokens from {}", p.display())),
        None => generated_tokens(dir)?,
    };
    let store_path = dir.join("pool.db");
    let store = SqliteStore::open(&store_path)?;
    let mut records = Vec::new();
    for (node, body) in store.agents()? {
        let record: AgentRecord = serde_json::from_str(&body).map_err(|e| {
            ServeError::BadInput(format!("agent record of {node} in the store: {e}"))
        })?;
        records.push((node, record));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fleet = AgentFleet::new(
        records,
        config.fabric_url.clone(),
        config.agent_timeout,
        clock.clone(),
    );
    let controller =
        Controller::new(store, policy, desc.topology).with_fabric(pcipool_backend::Capabilities {
            attachment: config.attachment,
        });
    let service = Service::start(controller, Hardware::Agents(fleet), clock)?;
    Ok(Server {
        service,
        tokens,
        tokens_from,
        store_path,
        fabric_url: config.fabric_url.clone(),
    })
}
