//! The controller's service behind the API: each call is one domain operation, its answer translated
//! into the wire's views.

use pcipool_controller::{ControlError, Service};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::AuditChain;
use pcipool_store::Store;
use pcipool_wire::{
    AgentHeartbeat, AgentRegistration, AuditVerify, AuditView, BorrowRequest, DeviceAction,
    DeviceDetail, DeviceView, Granted, HeartbeatReply, HostView, LeaseView, RegistrationReply,
};

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
        Ok(self
            .controller()
            .leases()?
            .into_iter()
            .map(|(fdid, l, state)| LeaseView {
                lease_id: l.id,
                fdid,
                borrower: l.borrower,
                tenant: l.tenant,
                model: l.model,
                epoch: l.epoch.0,
                expires_at: l.expires_at,
                state: state.to_owned(),
            })
            .collect())
    }

    fn devices(&self) -> Result<Vec<DeviceView>, ControlError> {
        Ok(self
            .controller()
            .store()
            .devices()?
            .into_iter()
            .map(|d| DeviceView {
                fdid: d.value.info.fdid,
                name: d.value.info.name.clone(),
                class: d.value.info.class,
                state: d.value.state.name().to_owned(),
                leases: d.value.state.leases().iter().map(|l| l.id).collect(),
            })
            .collect())
    }

    fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditView>, ControlError> {
        Ok(self
            .controller()
            .store()
            .audit_records(from, limit)?
            .into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                target: r.target,
                action: r.action,
                result: r.result,
                after: r.after,
            })
            .collect())
    }

    fn hosts(&self) -> Result<Vec<HostView>, ControlError> {
        Service::hosts(self)
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
        Ok(self
            .controller()
            .journal(id)?
            .and_then(|j| serde_json::to_value(j).ok()))
    }

    fn device(&self, fdid: Fdid) -> Result<DeviceDetail, ControlError> {
        let row = self
            .controller()
            .store()
            .device(fdid)?
            .ok_or(ControlError::NoDevice(fdid))?;
        let leases = row
            .value
            .state
            .leases()
            .into_iter()
            .map(|l| LeaseView {
                lease_id: l.id,
                fdid,
                borrower: l.borrower,
                tenant: l.tenant.clone(),
                model: l.model,
                epoch: l.epoch.0,
                expires_at: l.expires_at,
                state: row.value.state.name().to_owned(),
            })
            .collect();
        Ok(DeviceDetail {
            state: row.value.state.name().to_owned(),
            detail: serde_json::to_value(&row.value.state).unwrap_or_default(),
            info: row.value.info,
            version: row.version,
            leases,
        })
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

    fn audit_verify(&self) -> Result<AuditVerify, ControlError> {
        let records = self.controller().store().all_audit()?;
        Ok(match AuditChain::verify(&records) {
            Ok(n) => AuditVerify {
                records: n,
                ok: true,
                error: None,
            },
            Err(e) => AuditVerify {
                records: records.len() as u64,
                ok: false,
                error: Some(e.to_string()),
            },
        })
    }
}

/// Serves `service` on `listener` with `extra` routes beside the API, until `shutdown` resolves: a
/// ticker expires leases and notices silent agents once a second, and a worker runs the lends requests
/// did not wait for. Both stop with the server.
///
/// # Errors
/// The listener failed.
pub async fn serve_service<S: Store + Send + Sync + 'static>(
    service: std::sync::Arc<Service<S>>,
    listener: tokio::net::TcpListener,
    tokens: std::collections::BTreeMap<String, crate::Principal>,
    extra: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let worker = pcipool_controller::spawn_lend_worker(&service);
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
    let app = crate::server::router(service.clone(), tokens).merge(extra);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    ticker.abort();
    service.stop();
    if worker.join().is_err() {
        tracing::error!("the lend worker panicked");
    }
    served
}
