//! The controller of a running pool as the suites use it, over its HTTP API: an operator's client (and
//! a second tenant's, for the isolation suite), the same for every running target.

use std::collections::BTreeMap;

use crate::target::{Audited, Held, PoolDevice, Seen};
use pcipool_client::{Client, ClientError};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_pool::schedule::{DeviceInfo, Selector};
use pcipool_qualify::AccessModel;
use pcipool_wire::{BorrowRequest, DeviceAction, Granted};

/// An API error as the suites' evidence shows it.
pub(crate) fn text(e: &ClientError) -> String {
    match e {
        ClientError::Api { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

/// A running pool's controller.
pub(crate) struct ControlPlane {
    pub(crate) operator: Client,
    intruder: Option<Client>,
    /// What the pool knew of each device when the run began.
    pub(crate) infos: BTreeMap<Fdid, DeviceInfo>,
    pub(crate) hosts: Vec<NodeId>,
}

impl ControlPlane {
    /// Connects: reads the pool's devices and hosts.
    pub(crate) fn connect(url: &str, token: &str, intruder: Option<&str>) -> Result<Self, String> {
        let operator = Client::new(url, token);
        let mut infos = BTreeMap::new();
        for d in operator.devices().map_err(|e| text(&e))? {
            let detail = operator.device(&d.fdid.to_string()).map_err(|e| text(&e))?;
            infos.insert(d.fdid, detail.info);
        }
        let hosts = operator
            .hosts()
            .map_err(|e| text(&e))?
            .into_iter()
            .map(|h| h.node)
            .collect();
        Ok(Self {
            operator,
            intruder: intruder.map(|t| Client::new(url, t)),
            infos,
            hosts,
        })
    }

    pub(crate) fn devices(&self) -> Vec<PoolDevice> {
        self.operator
            .devices()
            .unwrap_or_default()
            .into_iter()
            .map(|d| PoolDevice {
                models: self
                    .infos
                    .get(&d.fdid)
                    .map(|i| i.models.clone())
                    .unwrap_or_default(),
                fdid: d.fdid,
                state: d.state,
            })
            .collect()
    }

    pub(crate) fn borrowers(&self, fdid: Fdid) -> Vec<NodeId> {
        self.hosts
            .iter()
            .copied()
            .filter(|n| *n != fdid.node)
            .collect()
    }

    /// Asks for one named device; `wait` false answers once the lend is under way.
    pub(crate) fn ask(
        &self,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
        duration: Option<u64>,
        wait: bool,
    ) -> Result<Granted, String> {
        let granted = self
            .operator
            .borrow(&BorrowRequest {
                selector: Selector {
                    fdid: Some(fdid),
                    ..Selector::default()
                },
                count: 1,
                model,
                borrower,
                duration_secs: duration,
                max_sharers: None,
                request_id: None,
                wait,
            })
            .map_err(|e| text(&e))?;
        granted
            .into_iter()
            .next()
            .ok_or_else(|| "nothing granted".to_owned())
    }

    pub(crate) fn borrow(
        &self,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
        duration: Option<u64>,
    ) -> Result<Held, String> {
        self.ask(fdid, model, borrower, duration, true)
            .map(|g| Held {
                lease: g.lease_id,
                fdid: g.fdid,
                borrower,
                attached: g.attached,
            })
    }

    /// Releases as the operator, or as the second tenant (`intruder`).
    pub(crate) fn release(&self, tenant: Option<&str>, lease: LeaseId) -> Result<(), String> {
        let client = match tenant {
            Some("intruder") => self
                .intruder
                .as_ref()
                .ok_or_else(|| "no second tenant's token".to_owned())?,
            _ => &self.operator,
        };
        client.release(lease.0).map_err(|e| text(&e))
    }

    pub(crate) fn state(&self, fdid: Fdid) -> Option<String> {
        self.operator
            .device(&fdid.to_string())
            .ok()
            .map(|d| d.state)
    }

    pub(crate) fn audit_after(&self, seq: u64) -> Seen<Vec<Audited>> {
        Ok(self
            .operator
            .audit(seq + 1, 10_000)
            .map_err(|e| text(&e))?
            .into_iter()
            .map(|a| Audited {
                seq: a.seq,
                actor: a.actor,
                action: a.action,
                target: a.target,
                result: a.result,
            })
            .collect())
    }

    pub(crate) fn audit_head(&self) -> u64 {
        self.operator.audit_verify().map_or(0, |v| v.records)
    }

    pub(crate) fn audit_intact(&self) -> bool {
        self.operator.audit_verify().is_ok_and(|v| v.ok)
    }

    pub(crate) fn act(&self, fdid: Fdid, action: DeviceAction) -> Result<(), String> {
        self.operator
            .device_action(&fdid.to_string(), action)
            .map(|_| ())
            .map_err(|e| text(&e))
    }

    pub(crate) fn leases_of(&self, fdid: Fdid) -> Seen<Vec<LeaseId>> {
        self.operator
            .device(&fdid.to_string())
            .map(|d| d.leases.iter().map(|l| l.lease_id).collect())
            .map_err(|e| text(&e))
    }
}
