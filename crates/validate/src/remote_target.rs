//! The validation suites against a running simulated pool: the controller through its HTTP API (as an
//! operator), the hardware through the simulated fabric's test port (`/v1/probe` on `pcipool sim serve`),
//! as an operator with a console on every host would see it.
//!
//! What it cannot do from outside: kill the controller in the middle of a workflow, or move the
//! controller's clock; the recovery suite therefore runs against the embedded lab (and the multi-process
//! crash tests cover killed controllers and agents).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::control_plane::ControlPlane;
use crate::target::{Audited, Fault, Free, Held, PoolDevice, Seen, Target, ntb_free};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use pcipool_qualify::AccessModel;
use serde_json::Value;

use pcipool_sim_server::probe::Probe;

/// A running pool reached over HTTP.
pub struct RemoteTarget {
    pool: ControlPlane,
    fabric: String,
    http: ureq::Agent,
}

impl RemoteTarget {
    /// Connects: reads the pool's devices and hosts.
    ///
    /// # Errors
    /// The controller is not reachable or refuses the token.
    pub fn connect(
        url: &str,
        token: &str,
        intruder_token: Option<&str>,
        fabric: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            pool: ControlPlane::connect(url, token, intruder_token)?,
            fabric: fabric.trim_end_matches('/').to_owned(),
            http: pcipool_client::http_agent(Duration::from_secs(30)),
        })
    }

    fn probe(&self, p: &Probe) -> Result<Value, String> {
        let url = format!("{}/v1/probe", self.fabric);
        let mut resp = self
            .http
            .post(&url)
            .send_json(p)
            .map_err(|e| format!("cannot reach the fabric at {url}: {e}"))?;
        let ok = resp.status().is_success();
        let body: Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| format!("{url}: unexpected body: {e}"))?;
        if ok {
            Ok(body)
        } else {
            Err(format!(
                "{}: {}",
                body["code"].as_str().unwrap_or("ERROR"),
                body["message"].as_str().unwrap_or_default()
            ))
        }
    }

    /// The function a device's steps act on (a VF's own address).
    fn function(&self, fdid: Fdid) -> (NodeId, pcipool_pcie::Bdf) {
        let bdf = self
            .pool
            .infos
            .get(&fdid)
            .and_then(|i| i.function)
            .unwrap_or(fdid.bdf);
        (fdid.node, bdf)
    }

    fn device_probe(&self, fdid: Fdid) -> Option<Value> {
        let (node, bdf) = self.function(fdid);
        self.probe(&Probe::Device { node, bdf }).ok()
    }

    /// The fabric's state as its test port shows it; an unreachable port or a body without `field` is
    /// "cannot tell", never an empty answer.
    fn fabric_field(&self, field: &str) -> Seen<Value> {
        let state = self.probe(&Probe::Fabric)?;
        state
            .get(field)
            .cloned()
            .ok_or_else(|| format!("the fabric's state has no {field}"))
    }

    fn fabric_count(&self, field: &str) -> Seen<usize> {
        self.fabric_field(field)?
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| format!("the fabric's {field} is not a count"))
    }

    fn mappings(&self) -> Seen<Vec<Value>> {
        self.fabric_field("mappings")?
            .as_array()
            .cloned()
            .ok_or_else(|| "the fabric's mappings are not a list".to_owned())
    }
}

impl Target for RemoteTarget {
    fn devices(&self) -> Vec<PoolDevice> {
        self.pool.devices()
    }

    fn borrowers(&self, fdid: Fdid) -> Vec<NodeId> {
        self.pool.borrowers(fdid)
    }

    fn borrow_for(
        &self,
        _tenant: &str,
        fdid: Fdid,
        model: AccessModel,
        borrower: NodeId,
        duration: Option<u64>,
    ) -> Result<Held, String> {
        self.pool.borrow(fdid, model, borrower, duration)
    }

    fn release(&self, tenant: Option<&str>, lease: LeaseId) -> Result<(), String> {
        self.pool.release(tenant, lease)
    }

    fn state(&self, fdid: Fdid) -> Option<String> {
        self.pool.state(fdid)
    }

    fn at_baseline(&self, fdid: Fdid) -> Option<bool> {
        self.device_probe(fdid)?["at_baseline"].as_bool()
    }

    fn local_driver(&self, fdid: Fdid) -> Option<Option<String>> {
        let d = self.device_probe(fdid)?;
        Some(d["driver"].as_str().map(str::to_owned))
    }

    fn mapped_leases(&self) -> Seen<BTreeSet<u64>> {
        self.mappings()?
            .iter()
            .map(|m| {
                m["lease"]
                    .as_u64()
                    .ok_or_else(|| format!("a mapping without a lease: {m}"))
            })
            .collect()
    }

    fn free_resources(&self) -> Seen<BTreeMap<String, Free>> {
        let free = self.fabric_field("free")?;
        let adapters = free
            .as_object()
            .ok_or_else(|| "the fabric's free resources are not a map".to_owned())?;
        adapters
            .iter()
            .map(
                |(a, v)| match (v[0].as_u64(), v[1].as_u64(), v[2].as_u64()) {
                    (Some(windows), Some(lut), Some(aperture)) => {
                        Ok((a.clone(), ntb_free((windows, lut, aperture))))
                    }
                    _ => Err(format!(
                        "adapter {a}: free resources {v} are not three counts"
                    )),
                },
            )
            .collect()
    }

    fn bar_address(&self, lease: LeaseId) -> Option<(NodeId, u64)> {
        self.mappings().ok()?.iter().find_map(|m| {
            (m["lease"].as_u64() == Some(lease.0)
                && m["kind"] == "bar"
                && m["bar"].as_u64() == Some(0))
            .then(|| {
                Some((
                    m["borrower"].as_str()?.parse().ok()?,
                    m["host_addr"].as_u64()?,
                ))
            })
            .flatten()
        })
    }

    fn dma_window(&self, lease: LeaseId) -> Option<(u64, u64)> {
        self.mappings().ok()?.iter().find_map(|m| {
            (m["lease"].as_u64() == Some(lease.0) && m["kind"] == "dma")
                .then(|| Some((m["host_addr"].as_u64()?, m["size"].as_u64()?)))
                .flatten()
        })
    }

    fn host_read(&self, node: NodeId, addr: u64) -> u32 {
        self.probe(&Probe::Read { node, addr })
            .ok()
            .and_then(|v| v["value"].as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(u32::MAX)
    }

    fn device_dma(&self, fdid: Fdid, addr: u64) -> Option<NodeId> {
        let (node, bdf) = self.function(fdid);
        self.probe(&Probe::Dma { node, bdf, addr })
            .ok()?
            .get("reached")?
            .as_str()?
            .parse()
            .ok()
    }

    fn faults_recorded(&self) -> Seen<usize> {
        self.fabric_count("faults")
    }

    fn audit_after(&self, seq: u64) -> Seen<Vec<Audited>> {
        self.pool.audit_after(seq)
    }

    fn audit_head(&self) -> u64 {
        self.pool.audit_head()
    }

    fn drain(&self, fdid: Fdid) -> Result<(), String> {
        self.pool.act(fdid, pcipool_wire::DeviceAction::Drain)
    }

    fn undrain(&self, fdid: Fdid) -> Result<(), String> {
        self.pool.act(fdid, pcipool_wire::DeviceAction::Undrain)
    }

    fn reset_methods(&self, fdid: Fdid) -> Vec<pcipool_pcie::ResetMethod> {
        self.device_probe(fdid)
            .and_then(|d| d["reset_methods"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.as_str()?.parse().ok())
            .collect()
    }

    fn reset(&self, fdid: Fdid, method: pcipool_pcie::ResetMethod) -> Result<u64, String> {
        let (node, bdf) = self.function(fdid);
        let v = self.probe(&Probe::Reset {
            node,
            bdf,
            method: method.to_string(),
        })?;
        Ok(v["micros"].as_u64().unwrap_or(0))
    }

    fn ids_readable(&self, fdid: Fdid) -> bool {
        self.device_probe(fdid)
            .is_some_and(|d| d["ids_readable"].as_bool() == Some(true))
    }

    fn bar_restorable(&self, fdid: Fdid) -> Option<bool> {
        let size = self
            .pool
            .infos
            .get(&fdid)?
            .bars
            .iter()
            .find(|(i, _)| *i == 0)?
            .1;
        let (node, bdf) = self.function(fdid);
        self.probe(&Probe::BarAddress { node, bdf, size })
            .ok()?
            .get("restorable")?
            .as_bool()
    }

    fn siblings(&self, fdid: Fdid) -> Seen<Vec<Fdid>> {
        Ok(crate::target::siblings_among(self.pool.infos.keys(), fdid))
    }

    fn event_mark(&self) -> Seen<usize> {
        self.fabric_count("events")
    }

    fn bus_resets_since(&self, mark: usize) -> Seen<Vec<Fdid>> {
        let answer = self.probe(&Probe::BusResets { since: mark })?;
        let fdids = answer["fdids"]
            .as_array()
            .ok_or_else(|| format!("bus resets: not a list: {answer}"))?;
        fdids
            .iter()
            .map(|f| {
                f.as_str()
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("bus resets: {f} is not a fabric device id"))
            })
            .collect()
    }

    fn inject(&self, fault: Fault) -> Result<(), String> {
        Err(format!(
            "{fault:?} cannot be injected into a remote pool from here"
        ))
    }

    fn advance(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    fn kill_controller_during_lend(
        &self,
        _fdid: Fdid,
        _borrower: NodeId,
        _step: pcipool_backend::Step,
    ) -> Result<(), String> {
        Err("a remote controller cannot be killed from here".into())
    }

    fn clear_quarantine(&self, fdid: Fdid) -> Result<(), String> {
        self.pool
            .act(fdid, pcipool_wire::DeviceAction::ClearQuarantine)
    }

    fn leases_of(&self, fdid: Fdid) -> Seen<Vec<LeaseId>> {
        self.pool.leases_of(fdid)
    }

    fn audit_intact(&self) -> bool {
        self.pool.audit_intact()
    }

    fn native_driver(&self, fdid: Fdid) -> Option<String> {
        self.pool.infos.get(&fdid).and_then(|i| i.driver.clone())
    }

    fn lender_unbind(&self, fdid: Fdid) -> Result<(), String> {
        let (node, bdf) = self.function(fdid);
        self.probe(&Probe::Unbind { node, bdf }).map(|_| ())
    }

    fn lender_bind(&self, fdid: Fdid, driver: &str) -> Result<(), String> {
        let (node, bdf) = self.function(fdid);
        self.probe(&Probe::Bind {
            node,
            bdf,
            driver: driver.to_owned(),
        })
        .map(|_| ())
    }

    fn borrower_unbind(&self, held: &Held) -> Result<(), String> {
        self.probe(&Probe::Unbind {
            node: held.borrower,
            bdf: held.on_borrower()?,
        })
        .map(|_| ())
    }

    fn borrower_bind(&self, held: &Held, driver: &str) -> Result<(), String> {
        self.probe(&Probe::Bind {
            node: held.borrower,
            bdf: held.on_borrower()?,
            driver: driver.to_owned(),
        })
        .map(|_| ())
    }

    fn borrower_driver(&self, held: &Held) -> Option<Option<String>> {
        let d = self
            .probe(&Probe::Device {
                node: held.borrower,
                bdf: held.on_borrower().ok()?,
            })
            .ok()?;
        Some(d["driver"].as_str().map(str::to_owned))
    }

    fn set_borrower_users(&self, held: &Held, users: u32) {
        if let Ok(bdf) = held.on_borrower() {
            let _ = self.probe(&Probe::Users {
                node: held.borrower,
                bdf,
                users,
            });
        }
    }
}
