//! The controller's service behind the API: each call is one domain operation, its answer translated
//! into the wire's views.

use pcipool_controller::{ControlError, Service};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_store::Store;
use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, AuditVerify, AuditView, BorrowRequest, DeviceAction,
    DeviceDetail, DeviceView, Granted, HeartbeatReply, HostView, LeaseView, RegistrationReply,
};

use crate::reads;
use crate::server::PoolApi;

impl<S: Store + Send + Sync + 'static> PoolApi for Service<S> {
    fn borrow(
        &self,
        actor: &str,
        tenant: &str,
        r: BorrowRequest,
    ) -> Result<Vec<Granted>, ControlError> {
        Service::borrow(self, actor, tenant, r)
    }

    fn release(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
    ) -> Result<(), ControlError> {
        self.controller()
            .release(&mut self.steps(), actor, tenant, lease, self.now())
    }

    fn downgrade(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        max_sharers: u32,
    ) -> Result<(), ControlError> {
        self.controller().downgrade(
            &mut self.steps(),
            actor,
            tenant,
            lease,
            max_sharers,
            self.now(),
        )
    }

    fn renew(
        &self,
        actor: &str,
        tenant: Option<&str>,
        lease: LeaseId,
        epoch: u64,
    ) -> Result<(), ControlError> {
        self.controller().renew(
            &mut self.steps(),
            actor,
            tenant,
            lease,
            pcipool_pool::Epoch(epoch),
            self.now(),
        )
    }

    fn record(
        &self,
        actor: &str,
        target: &str,
        action: &str,
        result: &str,
    ) -> Result<(), ControlError> {
        self.controller()
            .record(actor, target, action, result, self.now())
    }

    fn leases(&self) -> Result<Vec<LeaseView>, ControlError> {
        reads::leases(self.controller())
    }

    fn devices(&self) -> Result<Vec<DeviceView>, ControlError> {
        reads::devices(self.controller())
    }

    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ControlError> {
        reads::audit(self.controller(), from, limit)
    }

    fn hosts(&self) -> Result<Vec<HostView>, ControlError> {
        Service::hosts(self)
    }

    fn topology(&self) -> Result<pcipool_wire::TopologyView, ControlError> {
        Ok(reads::topology(self.controller()))
    }

    fn device_action(
        &self,
        actor: &str,
        fdid: Fdid,
        action: DeviceAction,
    ) -> Result<String, ControlError> {
        let event = match action {
            DeviceAction::Drain => pcipool_pool::Event::Drain { to_local: false },
            DeviceAction::DrainLocal => pcipool_pool::Event::Drain { to_local: true },
            DeviceAction::Undrain => pcipool_pool::Event::Undrain,
            DeviceAction::ClearQuarantine => pcipool_pool::Event::ClearQuarantine,
        };
        self.controller()
            .operate(&mut self.steps(), fdid, &event, actor, self.now())
            .map(str::to_owned)
    }

    fn workflow(&self, id: u64) -> Result<Option<serde_json::Value>, ControlError> {
        reads::workflow(self.controller(), id)
    }

    fn device(&self, fdid: Fdid) -> Result<DeviceDetail, ControlError> {
        reads::device(self.controller(), fdid)
    }

    fn register_agent(
        &self,
        actor: &str,
        registration: AgentRegistration,
    ) -> Result<RegistrationReply, ControlError> {
        Service::register_agent(self, actor, registration)
    }

    fn agent_heartbeat(
        &self,
        node: NodeId,
        beat: AgentHeartbeat,
    ) -> Result<HeartbeatReply, ControlError> {
        Service::agent_heartbeat(self, node, &beat)
    }

    fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.controller().subscribe_changes()
    }

    fn metrics_text(&self) -> Result<String, ControlError> {
        Service::metrics_text(self)
    }

    fn count_refusal(&self, code: &str) {
        self.controller().metrics().refused(code);
    }

    fn audit_verify(&self) -> Result<AuditVerify, ControlError> {
        reads::audit_verify(self.controller())
    }
}

/// What a leading controller runs beside its API: a ticker that expires leases and notices silent
/// agents once a second, and a worker that runs the lends requests did not wait for.
pub struct Background {
    worker: std::thread::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Starts both for `service` (on the current tokio runtime).
    pub fn start<S: Store + Send + Sync + 'static>(service: &std::sync::Arc<Service<S>>) -> Self {
        let worker = pcipool_controller::spawn_lend_worker(service);
        let ticker = {
            let service = service.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    every.tick().await;
                    let s = service.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || s.tick()).await {
                        tracing::error!(error = %e, "the tick panicked");
                    }
                }
            })
        };
        Self { worker, ticker }
    }

    /// Stops both: the service takes no more lends, and the worker finishes the one it runs.
    pub fn stop<S: Store + Send + Sync + 'static>(self, service: &Service<S>) {
        self.ticker.abort();
        service.stop();
        if self.worker.join().is_err() {
            tracing::error!("the lend worker panicked");
        }
    }
}

/// Routes a runtime serves beside the pool API on the same listener, with their entries in the contract
/// served at `/v1/openapi.json`.
pub struct Beside {
    /// The routes.
    pub routes: axum::Router,
    /// Their OpenAPI entries.
    pub contract: utoipa::openapi::OpenApi,
}

impl Beside {
    /// Nothing beside the API.
    pub fn nothing() -> Self {
        Self {
            routes: axum::Router::new(),
            contract: utoipa::openapi::OpenApi::default(),
        }
    }
}

/// Serves `service` on `listener` with `extra` routes beside the API, until `shutdown` resolves, with
/// its [`Background`] running; both stop with the server.
///
/// # Errors
/// The listener failed.
pub async fn serve_service<S: Store + Send + Sync + 'static>(
    service: std::sync::Arc<Service<S>>,
    listener: tokio::net::TcpListener,
    tokens: std::collections::BTreeMap<String, crate::Principal>,
    extra: Beside,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = Background::start(&service);
    let contract = crate::contract::document().merge_from(extra.contract);
    let app =
        crate::server::router_with_contract(service.clone(), tokens, contract).merge(extra.routes);
    let closing = service.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Event streams end now, or the graceful shutdown would wait for their clients.
            closing.controller().close_changes();
        })
        .await;
    background.stop(&service);
    served
}
