//! `pcipool server` on etcd: a controller that leads the pool or follows the one that does, and
//! changes between the two by itself.
//!
//! Every controller of a pool campaigns for the store's `leader` key (an etcd lease of
//! [`LEADERSHIP_TTL`]). The one holding it runs the controller service: it alone writes, runs
//! workflows (resuming the unfinished journals first), expiry and reconcile. The others follow: they
//! answer the reads of the store themselves and pass every other request to the leader at the URL it
//! wrote into the key (see [`crate::forward`]), and try to take the key every eighth of its TTL, so
//! when the leader dies one of them leads about a TTL later. A leader that learns its lease is gone
//! (paused past it, cut off from etcd) stops its service and follows; its late writes fail on the
//! leadership compare every write makes.
//!
//! One listener serves the process's whole life; the router behind it is swapped when the role
//! changes, so requests in flight finish where they started.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use pcipool_api::{Background, Follower, Principal};
use pcipool_controller::Controller;
use pcipool_store::{EtcdStore, StoreError};
use pcipool_wire::ControllerView;
use tower::ServiceExt as _;

use crate::ServeError;
use crate::forward::{Forwarder, forward};
use crate::server::{LEADERSHIP_TTL, ServerConfig, start_service};

/// A controller of a pool on etcd, ready to serve.
pub struct Seat {
    pub(crate) config: ServerConfig,
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) tokens: BTreeMap<String, Principal>,
    pub(crate) tokens_from: String,
}

/// Why a role ended.
enum Next {
    /// The process is told to stop.
    Stop,
    /// Lead with this store (it holds the leadership).
    Lead(Box<EtcdStore>),
    /// Follow, campaigning for the leadership.
    Follow,
}

/// How often a follower tries to take the leadership: an eighth of its TTL, so a dead leader's
/// successor leads within about 1.1 TTL of the leader's last renewal.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(250);

/// How often a leader checks that its lease still lives.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(100);

/// What both roles share: the process's identity, what `/v1/controller` says, the router in use.
struct Shared {
    this: String,
    view: Arc<Mutex<ControllerView>>,
    current: Arc<RwLock<Router>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// Which controller leads the pool, and whether this one does.
#[utoipa::path(
    get, path = "/v1/controller", tag = "watch",
    security(()),
    responses((status = 200, description = "This controller's role and the leader", body = ControllerView)),
)]
async fn controller_view(
    axum::extract::State(view): axum::extract::State<Arc<Mutex<ControllerView>>>,
) -> axum::Json<ControllerView> {
    let v = view
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    axum::Json(v)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(controller_view))]
struct SeatDoc;

/// The pool API's contract with the seat's own route.
fn contract() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    pcipool_api::contract::document().merge_from(SeatDoc::openapi())
}

impl Shared {
    fn set_view(&self, role: &str, leader: Option<String>) {
        let mut v = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.role = role.to_owned();
        v.leader = leader;
    }

    fn route(&self, router: Router) {
        let router = router.merge(
            Router::new()
                .route("/v1/controller", axum::routing::get(controller_view))
                .with_state(self.view.clone()),
        );
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = router;
    }

    /// Follows again after `d`, unless the process is told to stop meanwhile.
    async fn follow_after(&self, d: Duration) -> Next {
        if self.stopped_within(d).await {
            Next::Stop
        } else {
            Next::Follow
        }
    }

    /// Waits `d`; true when the process was told to stop meanwhile.
    async fn stopped_within(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            () = tokio::time::sleep(d) => *self.stop.borrow(),
        }
    }
}

impl Seat {
    /// Serves on `listen` until `shutdown`, leading or following; `banner` hears what `pcipool server`
    /// prints once bound.
    ///
    /// # Errors
    /// Bind failures.
    pub fn serve(
        self,
        listen: &str,
        banner: impl FnOnce(Vec<String>),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        crate::runtime()?.block_on(self.run(listen, banner, shutdown))
    }

    async fn run(
        self,
        listen: &str,
        banner: impl FnOnce(Vec<String>),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (listener, addr) = crate::bind(listen).await?;
        let url = self
            .config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "localhost".into());
        let this = format!("{}:{} {url}", hostname.trim(), std::process::id());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shared = Shared {
            this: this.clone(),
            view: Arc::new(Mutex::new(ControllerView {
                role: "follower".into(),
                leader: None,
                this: this.clone(),
            })),
            current: Arc::new(RwLock::new(Router::new())),
            stop: stop_rx.clone(),
        };
        let app = {
            let current = shared.current.clone();
            Router::new().fallback(move |request: Request| {
                let router = current
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                async move {
                    match router.oneshot(request).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                }
            })
        };
        tokio::spawn(async move {
            shutdown.await;
            let _sent = stop_tx.send(true);
        });
        let mut stopped = stop_rx;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _stopped = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        banner(self.banner(addr, &this));
        let seat = Arc::new(self);
        let mut next = Next::Follow;
        loop {
            next = match next {
                Next::Stop => break,
                Next::Lead(store) => seat.lead(*store, &shared).await,
                Next::Follow => seat.follow(&shared).await,
            };
        }
        match server.await {
            Ok(served) => served.map_err(ServeError::Serve),
            Err(e) => Err(ServeError::Serve(std::io::Error::other(e))),
        }
    }

    fn banner(&self, addr: std::net::SocketAddr, this: &str) -> Vec<String> {
        vec![
            format!("pcipool server: controller at http://{addr}"),
            format!(
                "  store:  etcd {} (prefix /{}/); leads when it holds the leadership, follows otherwise",
                self.endpoints.join(","),
                self.prefix.trim_matches('/')
            ),
            format!("  this controller: {this}"),
            format!("  {}", self.tokens_from),
            format!(
                "  fabric steps: {}",
                self.config
                    .fabric_url
                    .as_deref()
                    .unwrap_or("no fabric manager (--fabric-url): lends cannot map")
            ),
        ]
    }

    fn connect(&self) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(&self.endpoints, &self.prefix)
    }

    /// Follows: reads served here, the rest passed to the leader; campaigns until it leads or stops.
    async fn follow(self: &Arc<Self>, shared: &Shared) -> Next {
        let seat = self.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let reads = seat.connect()?;
            let campaign = seat.connect()?;
            let desc = pcipool_sim::FabricDesc::load(seat.config.fabric.as_deref())
                .map_err(ServeError::from)?
                .desc;
            let (_, policy) = crate::load_policy(seat.config.policy.as_deref())?;
            Ok::<_, ServeError>((Controller::new(reads, policy, desc.topology), campaign))
        })
        .await;
        let (controller, mut campaign) = match opened {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "following: cannot open the store; trying again");
                return shared.follow_after(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "following: opening the store panicked");
                return Next::Stop;
            }
        };
        let leader = Arc::new(Mutex::new(None));
        let forwarder = Forwarder::new(leader.clone(), shared.this.clone());
        shared.set_view("follower", None);
        let follower = Arc::new(Follower::new(controller));
        shared.route(
            pcipool_api::server::router_with_contract(
                follower.clone(),
                self.tokens.clone(),
                contract(),
            )
            .layer(axum::middleware::from_fn_with_state(forwarder, forward)),
        );
        let mut first = true;
        let mut audit_len = None;
        loop {
            if !first && shared.stopped_within(CAMPAIGN_EVERY).await {
                follower.close();
                return Next::Stop;
            }
            first = false;
            // The leader's changes are not this process's: the audit chain growing says there were
            // some, so the follower's event streams and long polls hear of them.
            let watched = follower.clone();
            if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || watched.audit_len()).await {
                if audit_len.is_some_and(|before| before != n) {
                    follower.poke();
                }
                audit_len = Some(n);
            }
            let this = shared.this.clone();
            let tried = tokio::task::spawn_blocking(move || {
                let won = campaign.lead(&this, LEADERSHIP_TTL);
                (won, campaign)
            })
            .await;
            let (won, store) = match tried {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "campaigning panicked");
                    return Next::Stop;
                }
            };
            campaign = store;
            match won {
                Ok(()) => {
                    if *shared.stop.borrow() {
                        return Next::Stop;
                    }
                    return Next::Lead(Box::new(campaign));
                }
                Err(StoreError::NotLeader(holder)) => {
                    let mut known = leader
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if known.as_deref() != Some(holder.as_str()) {
                        tracing::info!(leader = %holder, "following the leader");
                        shared.set_view("follower", Some(holder.clone()));
                    }
                    *known = Some(holder);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "campaigning for the leadership");
                }
            }
        }
    }

    /// Leads with `store` until the process stops or the leadership is lost.
    async fn lead(self: &Arc<Self>, store: EtcdStore, shared: &Shared) -> Next {
        tracing::warn!(this = %shared.this, "leading the pool: resuming unfinished workflows");
        if self.config.mutant_unfenced {
            tracing::error!("MUTANT: this controller's writes do not compare the leadership");
            store.drop_leadership_compare();
        }
        let seat = self.clone();
        let started = tokio::task::spawn_blocking(move || start_service(&seat.config, store)).await;
        let service = match started {
            Ok(Ok(s)) => Arc::new(s),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not start leading; following");
                return shared.follow_after(CAMPAIGN_EVERY).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "starting the service panicked");
                return Next::Stop;
            }
        };
        let background = Background::start(&service);
        shared.set_view("leader", Some(shared.this.clone()));
        shared.route(pcipool_api::server::router_with_contract(
            service.clone(),
            self.tokens.clone(),
            contract(),
        ));
        let next = loop {
            if shared.stopped_within(LEADERSHIP_CHECK).await {
                service.controller().close_changes();
                break Next::Stop;
            }
            if !service.controller().store().leads() {
                tracing::warn!(this = %shared.this, "the leadership's lease is gone: following");
                break Next::Follow;
            }
        };
        let stopping = service.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || background.stop(&stopping)).await {
            tracing::error!(error = %e, "stopping the service panicked");
        }
        next
    }
}
