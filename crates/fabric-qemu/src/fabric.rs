//! [`QemuFabric`]: `FabricControl` over the guests' QMP sockets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pcipool_backend::{
    Attachment, Capabilities, FabricControl, FabricError, FabricMapping, Mapped,
};
use pcipool_fabric::{Fdid, LeaseId, NodeId};
use serde_json::{Value, json};

use crate::qmp::{Qmp, QmpError};

/// How long one QMP command may take, and how long a guest may take to let go of a device.
const COMMAND: Duration = Duration::from_secs(10);
const UNPLUG: Duration = Duration::from_secs(30);

/// One guest: a host of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// The pool's name for it.
    pub node: NodeId,
    /// Its QMP socket.
    pub qmp: PathBuf,
    /// Its hot-plug root ports (QEMU ids, e.g. `rp2`) that a borrowed device may go into.
    pub free_slots: Vec<String>,
}

/// One drive the fabric moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// The pool's id: its lender and its address there.
    pub fdid: Fdid,
    /// The raw image behind it.
    pub image: PathBuf,
    /// Its NVMe serial, from which its QEMU ids are made (`dev-SERIAL`, `disk-SERIAL`).
    pub serial: String,
    /// The root port it sits in on its lender.
    pub home_slot: String,
}

impl Drive {
    fn device_id(&self) -> String {
        format!("dev-{}", self.serial)
    }

    fn node_name(&self) -> String {
        format!("disk-{}", self.serial)
    }
}

/// The hypervisor as the fabric.
#[derive(Debug, Clone)]
pub struct QemuFabric {
    guests: BTreeMap<NodeId, Guest>,
    drives: BTreeMap<Fdid, Drive>,
    leases: BTreeMap<LeaseId, (Fdid, NodeId)>,
    /// Nanoseconds spent waiting for QEMU, shared by every clone of this fabric.
    waited: Arc<AtomicU64>,
}

fn failed(e: QmpError) -> FabricError {
    FabricError::Failed(e.to_string())
}

impl QemuFabric {
    /// A fabric over `guests` moving `drives`.
    pub fn new(guests: Vec<Guest>, drives: Vec<Drive>) -> Self {
        Self {
            guests: guests.into_iter().map(|g| (g.node, g)).collect(),
            drives: drives.into_iter().map(|d| (d.fdid, d)).collect(),
            leases: BTreeMap::new(),
            waited: Arc::default(),
        }
    }

    fn connect(&self, node: NodeId) -> Result<Qmp, FabricError> {
        let guest = self
            .guests
            .get(&node)
            .ok_or_else(|| FabricError::Failed(format!("{node} is not a guest of this fabric")))?;
        Qmp::connect_counting(&guest.qmp, COMMAND, self.waited.clone()).map_err(|e| match e {
            QmpError::Io(_) => FabricError::HostDown(node),
            other => failed(other),
        })
    }

    fn drive(&self, fdid: Fdid) -> Result<&Drive, FabricError> {
        self.drives
            .get(&fdid)
            .ok_or_else(|| FabricError::Failed(format!("{fdid} is not a drive of this fabric")))
    }

    /// The running guests whose answer to the QMP `command` satisfies `here` (a guest that is gone
    /// has nothing).
    fn guests_where(
        &self,
        command: &str,
        arguments: Value,
        here: impl Fn(&Value) -> bool,
    ) -> Result<Vec<NodeId>, FabricError> {
        let mut out = Vec::new();
        for &node in self.guests.keys() {
            let mut qmp = match self.connect(node) {
                Ok(q) => q,
                Err(FabricError::HostDown(_)) => continue,
                Err(e) => return Err(e),
            };
            let answer = qmp
                .execute(command, arguments.clone(), COMMAND)
                .map_err(failed)?;
            if here(&answer) {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// The guest whose QEMU holds the drive's image now (None: no guest does).
    ///
    /// # Errors
    /// A guest that cannot be asked; the image open in two guests.
    pub fn holder(&self, fdid: Fdid) -> Result<Option<NodeId>, FabricError> {
        let node_name = self.drive(fdid)?.node_name();
        let holders = self.guests_where(
            "query-named-block-nodes",
            json!({ "flat": true }),
            |nodes| {
                nodes.as_array().is_some_and(|n| {
                    n.iter()
                        .any(|b| b["node-name"].as_str() == Some(&node_name))
                })
            },
        )?;
        match holders.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(FabricError::Failed(format!(
                "{fdid}'s image is open in {} guests: {many:?}",
                many.len()
            ))),
        }
    }

    /// The guests whose PCI tree has the drive now (`query-pci`: its device id behind a root port),
    /// whatever holds its image: what the guests' kernels can see, to check against the store.
    ///
    /// # Errors
    /// A guest that cannot be asked.
    pub fn in_pci_tree(&self, fdid: Fdid) -> Result<Vec<NodeId>, FabricError> {
        let id = self.drive(fdid)?.device_id();
        self.guests_where("query-pci", json!({}), |pci| device_ids(pci).contains(&id))
    }

    /// Unplugs the drive from `node`: `device_del`, the guest lets go (`DEVICE_DELETED`), then its
    /// image is closed. A drive already gone is done.
    fn unplug(&self, drive: &Drive, node: NodeId) -> Result<(), FabricError> {
        let mut qmp = self.connect(node)?;
        let id = drive.device_id();
        match qmp.execute("device_del", json!({ "id": id }), COMMAND) {
            Ok(_) => {
                qmp.wait_event("DEVICE_DELETED", Some(&id), UNPLUG)
                    .map_err(|e| match e {
                        QmpError::Timeout(_) => FabricError::Failed(format!(
                            "{node} did not let go of {id} within {UNPLUG:?} (is its driver still bound?)"
                        )),
                        other => failed(other),
                    })?;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(failed(e)),
        }
        match qmp.execute(
            "blockdev-del",
            json!({ "node-name": drive.node_name() }),
            COMMAND,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }

    /// Plugs the drive into `slot` of `node`: its image opened there, then `device_add`. When the
    /// device cannot be added, the image is closed again.
    fn plug(&self, drive: &Drive, node: NodeId, slot: &str) -> Result<(), FabricError> {
        let mut qmp = self.connect(node)?;
        let blockdev = json!({
            "driver": "raw",
            "node-name": drive.node_name(),
            "file": { "driver": "file", "filename": drive.image.display().to_string() },
        });
        qmp.execute("blockdev-add", blockdev, COMMAND)
            .map_err(failed)?;
        let device = json!({
            "driver": "nvme",
            "id": drive.device_id(),
            "serial": drive.serial,
            "drive": drive.node_name(),
            "bus": slot,
        });
        if let Err(e) = qmp.execute("device_add", device, COMMAND) {
            // Closing the image undoes the half-done plug; its own failure is reported with the first.
            let closed = qmp.execute(
                "blockdev-del",
                json!({ "node-name": drive.node_name() }),
                COMMAND,
            );
            return Err(FabricError::Failed(format!(
                "device_add on {node} {slot}: {e}{}",
                closed
                    .err()
                    .map(|c| format!("; closing the image again: {c}"))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The hot-plug root ports of `node` with nothing in them now (`query-pci` shows no device behind
    /// them), in slot order: where a lend to `node` can go.
    ///
    /// # Errors
    /// The guest cannot be asked.
    pub fn free_slots(&self, node: NodeId) -> Result<Vec<String>, FabricError> {
        let guest = self
            .guests
            .get(&node)
            .ok_or_else(|| FabricError::Failed(format!("{node} is not a guest of this fabric")))?;
        let mut qmp = self.connect(node)?;
        let pci = qmp
            .execute("query-pci", json!({}), COMMAND)
            .map_err(failed)?;
        let busy = occupied_ports(&pci);
        Ok(guest
            .free_slots
            .iter()
            .filter(|s| !busy.contains(s))
            .cloned()
            .collect())
    }

    /// A root port of `node` with nothing in it.
    fn free_slot(&self, node: NodeId) -> Result<String, FabricError> {
        self.free_slots(node)?
            .into_iter()
            .next()
            .ok_or_else(|| FabricError::NoCapacity(format!("no free hot-plug slot on {node}")))
    }
}

/// Every device id in a `query-pci` answer, behind bridges too.
fn device_ids(pci: &Value) -> Vec<String> {
    fn walk(devices: &Value, out: &mut Vec<String>) {
        for dev in devices.as_array().into_iter().flatten() {
            if let Some(id) = dev["qdev_id"].as_str().filter(|i| !i.is_empty()) {
                out.push(id.to_owned());
            }
            walk(&dev["pci_bridge"]["devices"], out);
        }
    }
    let mut out = Vec::new();
    for bus in pci.as_array().into_iter().flatten() {
        walk(&bus["devices"], &mut out);
    }
    out
}

/// The ids of root ports with a device behind them, from `query-pci`.
fn occupied_ports(pci: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for bus in pci.as_array().into_iter().flatten() {
        for dev in bus["devices"].as_array().into_iter().flatten() {
            let below = dev["pci_bridge"]["devices"]
                .as_array()
                .is_some_and(|d| !d.is_empty());
            if below && let Some(id) = dev["qdev_id"].as_str() {
                out.push(id.to_owned());
            }
        }
    }
    out
}

impl FabricControl for QemuFabric {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            attachment: Attachment::WholeDevice,
        }
    }

    fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited.load(Ordering::Relaxed))
    }

    fn mappings(&self) -> Result<Vec<FabricMapping>, FabricError> {
        Ok(self
            .leases
            .iter()
            .map(|(&lease, &(fdid, borrower))| FabricMapping {
                lease,
                fdid,
                borrower,
                mapped: Mapped::Device,
            })
            .collect())
    }

    fn map_bar(
        &mut self,
        _: LeaseId,
        _: Fdid,
        _: u8,
        _: u64,
        _: NodeId,
    ) -> Result<(), FabricError> {
        Err(FabricError::Unsupported(
            "map BARs: QEMU moves whole devices".into(),
        ))
    }

    fn map_dma(&mut self, _: LeaseId, _: Fdid, _: NodeId, _: u64) -> Result<(), FabricError> {
        Err(FabricError::Unsupported(
            "map DMA windows: QEMU moves whole devices".into(),
        ))
    }

    fn unmap_lease(&mut self, lease: LeaseId) -> Result<(), FabricError> {
        self.detach(lease)
    }

    /// Moves the drive from wherever it is to a free slot of `borrower`; a drive already there is
    /// done. If the borrower cannot take it, it goes back to its lender.
    fn attach(&mut self, lease: LeaseId, fdid: Fdid, borrower: NodeId) -> Result<(), FabricError> {
        let drive = self.drive(fdid)?.clone();
        let holder = self.holder(fdid)?;
        if holder == Some(borrower) {
            self.leases.insert(lease, (fdid, borrower));
            return Ok(());
        }
        if let Some(from) = holder {
            self.unplug(&drive, from)?;
        }
        let plugged = self
            .free_slot(borrower)
            .and_then(|slot| self.plug(&drive, borrower, &slot));
        if let Err(e) = plugged {
            // Back where it came from, so the lender's kernel gets it again.
            if let Err(back) = self.plug(&drive, fdid.node, &drive.home_slot) {
                tracing::warn!(%fdid, error = %back, "could not give the drive back to its lender");
            }
            return Err(e);
        }
        self.leases.insert(lease, (fdid, borrower));
        Ok(())
    }

    /// Moves the lease's drive back into its lender's slot; a drive already home is done.
    fn detach(&mut self, lease: LeaseId) -> Result<(), FabricError> {
        let Some(&(fdid, _)) = self.leases.get(&lease) else {
            return Ok(());
        };
        let drive = self.drive(fdid)?.clone();
        match self.holder(fdid)? {
            Some(node) if node == fdid.node => {}
            Some(node) => {
                self.unplug(&drive, node)?;
                self.plug(&drive, fdid.node, &drive.home_slot)?;
            }
            None => self.plug(&drive, fdid.node, &drive.home_slot)?,
        }
        self.leases.remove(&lease);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupied_ports_are_bridges_with_devices_below() {
        let pci = json!([{ "bus": 0, "devices": [
            { "qdev_id": "rp1", "pci_bridge": { "devices": [ { "qdev_id": "dev-a" } ] } },
            { "qdev_id": "rp2", "pci_bridge": { "devices": [] } },
            { "qdev_id": "", "class_info": {} }
        ]}]);
        assert_eq!(
            (occupied_ports(&pci), device_ids(&pci)),
            (
                vec!["rp1".to_owned()],
                vec!["rp1".to_owned(), "dev-a".to_owned(), "rp2".to_owned()]
            )
        );
    }
}
