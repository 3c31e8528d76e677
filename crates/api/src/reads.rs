//! The API's reads, answered from the store through a controller: the same for the leader's service
//! and for a follower (a controller that does not lead serves them too).

use pcipool_controller::{ControlError, Controller};
use pcipool_fabric::Fdid;
use pcipool_pool::AuditChain;
use pcipool_store::Store;
use pcipool_wire::{AuditVerify, AuditView, DeviceDetail, DeviceView, LeaseView};

/// Every lease.
pub(crate) fn leases<S: Store>(c: &Controller<S>) -> Result<Vec<LeaseView>, ControlError> {
    Ok(c.leases()?
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

/// Every device.
pub(crate) fn devices<S: Store>(c: &Controller<S>) -> Result<Vec<DeviceView>, ControlError> {
    Ok(c.store()
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

/// The fabric's switches and links.
pub(crate) fn topology<S: Store>(c: &Controller<S>) -> pcipool_wire::TopologyView {
    let topology = c.topology();
    pcipool_wire::TopologyView {
        switches: topology.switches().cloned().collect(),
        links: topology
            .links()
            .iter()
            .map(|l| pcipool_wire::LinkView {
                a: l.a.to_string(),
                b: l.b.to_string(),
                generation: l.generation,
                width: l.width,
                mb_per_s: l.mb_per_s(),
            })
            .collect(),
    }
}

/// Audit records from `from`, at most `limit`.
pub(crate) fn audit<S: Store>(
    c: &Controller<S>,
    from: u64,
    limit: usize,
) -> Result<Vec<AuditView>, ControlError> {
    Ok(c.store()
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

/// A workflow's journal as JSON.
pub(crate) fn workflow<S: Store>(
    c: &Controller<S>,
    id: u64,
) -> Result<Option<serde_json::Value>, ControlError> {
    Ok(c.journal(id)?.and_then(|j| serde_json::to_value(j).ok()))
}

/// One device in full.
pub(crate) fn device<S: Store>(
    c: &Controller<S>,
    fdid: Fdid,
) -> Result<DeviceDetail, ControlError> {
    let row = c
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

/// The audit chain verified from its first record.
pub(crate) fn audit_verify<S: Store>(c: &Controller<S>) -> Result<AuditVerify, ControlError> {
    let records = c.store().all_audit()?;
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
