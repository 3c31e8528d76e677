//! `pcipool server`: the controller whose hosts are reached through their agents. Its store is a SQLite
//! file in the data directory, or an etcd cluster (`--store etcd://...`) that the controller leads;
//! agents register over the API and are recorded in the store, so a restarted controller knows them
//! before they call again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pcipool_api::{Principal, Role};
use pcipool_controller::{
    AgentFleet, AgentRecord, Clock, Controller, Hardware, Service, SystemClock,
};
use pcipool_store::{EtcdStore, SqliteStore, Store};

use crate::ServeError;
use crate::tokens::{random_token, read_token_file, token_file};

/// Where the pool's state is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreAt {
    /// `pool.db` in the data directory (one controller per file).
    #[default]
    DataDir,
    /// An etcd cluster: the members' client addresses, and the prefix of every key.
    Etcd {
        /// `HOST:PORT` or URLs.
        endpoints: Vec<String>,
        /// Key prefix (one pool per prefix).
        prefix: String,
    },
}

impl StoreAt {
    /// Parses `--store`: absent or `sqlite` is the data directory's file; `etcd://HOST:PORT[,HOST:PORT...]`
    /// an etcd cluster.
    ///
    /// # Errors
    /// [`ServeError::BadInput`] for anything else.
    pub fn parse(text: Option<&str>, prefix: &str) -> Result<Self, ServeError> {
        match text {
            None | Some("sqlite") => Ok(Self::DataDir),
            Some(t) => {
                let endpoints: Vec<String> = t
                    .strip_prefix("etcd://")
                    .ok_or_else(|| {
                        ServeError::BadInput(format!(
                            "--store {t}: expected sqlite or etcd://HOST:PORT[,HOST:PORT...]"
                        ))
                    })?
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                if endpoints.is_empty() {
                    return Err(ServeError::BadInput(format!("--store {t}: no etcd member")));
                }
                Ok(Self::Etcd {
                    endpoints,
                    prefix: prefix.to_owned(),
                })
            }
        }
    }
}

/// How long a controller's leadership of an etcd store lasts without renewal: the time another
/// controller waits after this one was killed.
pub const LEADERSHIP_TTL: Duration = Duration::from_secs(2);

/// What `pcipool server` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Generated tokens, and the store (`pool.db`) when it is kept there.
    pub data_dir: PathBuf,
    /// Where the store is.
    pub store: StoreAt,
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
    /// The URL other controllers of the pool pass requests to while this one leads (etcd store
    /// only; None: `http://` and the address it listens on).
    pub advertise_url: Option<String>,
    /// The fault tests' mutant (etcd store): writes do not compare the leadership.
    pub mutant_unfenced: bool,
}

/// A controller ready to serve, with its tokens and where they came from.
pub struct Server<S> {
    /// The running service.
    pub service: Service<S>,
    /// Accepted tokens.
    pub tokens: BTreeMap<String, Principal>,
    /// Where the tokens are, in words for the operator.
    pub tokens_from: String,
    /// The store, in words for the operator.
    pub store_name: String,
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

/// A controller ready to serve on one of the stores.
pub enum Opened {
    /// On the data directory's SQLite file.
    Sqlite(Box<Server<SqliteStore>>),
    /// On an etcd cluster, leading or following.
    Etcd(Box<crate::seat::Seat>),
}

impl Opened {
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
        match self {
            Self::Sqlite(s) => s.serve(listen, banner, shutdown),
            Self::Etcd(seat) => seat.serve(listen, banner, shutdown),
        }
    }
}

impl<S: Store + Send + Sync + 'static> Server<S> {
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
            store_name,
            fabric_url,
        } = self;
        let lines = move |addr: std::net::SocketAddr| {
            banner(Self::banner(
                addr,
                &store_name,
                &tokens_from,
                fabric_url.as_deref(),
            ));
        };
        crate::serve(
            service,
            listen,
            tokens,
            |_| pcipool_api::Beside::nothing(),
            lines,
            shutdown,
        )
    }

    fn banner(
        addr: std::net::SocketAddr,
        store_name: &str,
        tokens_from: &str,
        fabric_url: Option<&str>,
    ) -> Vec<String> {
        vec![
            format!("pcipool server: controller at http://{addr}"),
            format!("  store:  {store_name}"),
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

/// Opens the store and starts the service on it (SQLite), or checks that the etcd cluster answers and
/// reads the pool's shared tokens (etcd: the controller leads or follows once it serves).
///
/// # Errors
/// Bad files ([`ServeError::BadInput`]), store or start-up failures.
pub fn open(config: &ServerConfig) -> Result<Opened, ServeError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(ServeError::io(format!("creating {}", dir.display())))?;
    match &config.store {
        StoreAt::DataDir => {
            let path = dir.join("pool.db");
            let store = SqliteStore::open(&path)?;
            let (tokens, tokens_from) = tokens_of(config, None)?;
            Ok(Opened::Sqlite(Box::new(Server {
                service: start_service(config, store)?,
                tokens,
                tokens_from,
                store_name: path.display().to_string(),
                fabric_url: config.fabric_url.clone(),
            })))
        }
        StoreAt::Etcd { endpoints, prefix } => {
            let store = EtcdStore::connect(endpoints, prefix)?;
            // The fabric and policy are read now so a bad file stops the process at once, not when
            // it first leads.
            pcipool_sim::FabricDesc::load(config.fabric.as_deref())?;
            crate::load_policy(config.policy.as_deref())?;
            let (tokens, tokens_from) = tokens_of(config, Some(&store))?;
            Ok(Opened::Etcd(Box::new(crate::seat::Seat {
                config: config.clone(),
                endpoints: endpoints.clone(),
                prefix: prefix.clone(),
                tokens,
                tokens_from,
            })))
        }
    }
}

/// The tokens a controller accepts: the operator's file, or generated ones (on etcd, generated once
/// for the whole pool and kept in the store, so every controller of the pool takes the same tokens;
/// written into each data directory for the operators).
fn tokens_of(
    config: &ServerConfig,
    etcd: Option<&EtcdStore>,
) -> Result<(BTreeMap<String, Principal>, String), ServeError> {
    if let Some(p) = &config.tokens {
        return Ok((read_token_file(p)?, format!("tokens from {}", p.display())));
    }
    let Some(store) = etcd else {
        return generated_tokens(&config.data_dir);
    };
    let made = format!("{} {}", random_token()?, random_token()?);
    let shared = store.shared("tokens", || made)?;
    let (admin, agent) = shared.split_once(' ').ok_or_else(|| {
        ServeError::BadInput("the pool's tokens in the store are malformed".into())
    })?;
    let dir = &config.data_dir;
    for (name, token) in [("admin.token", admin), ("agent.token", agent)] {
        crate::tokens::write_token(&dir.join(name), token)?;
    }
    generated_tokens(dir)
}

/// Starts the service on an opened store: the fabric, the policy, the agents recorded before.
pub(crate) fn start_service<S: Store + Send + Sync + 'static>(
    config: &ServerConfig,
    store: S,
) -> Result<Service<S>, ServeError> {
    let desc = pcipool_sim::FabricDesc::load(config.fabric.as_deref())?.desc;
    let (_, policy) = crate::load_policy(config.policy.as_deref())?;
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
    Ok(Service::start(controller, Hardware::Agents(fleet), clock)?)
}
