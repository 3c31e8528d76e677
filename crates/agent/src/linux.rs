//! A Linux host's agent: its hardware is its own kernel, driven through [`LinuxControl`] within the
//! pool of functions the operator named, and its offer is those functions as qualification judges
//! them on this host.
//!
//! Safety, checked at start and on every report: a pooled function must exist, and one that backs
//! the root filesystem or carries the default route is refused outright (no override); a function
//! that fails qualification for every model is reported without models, so the controller never
//! places a lease on it, and is left out of the writer's scope, which refuses every write to a
//! function outside it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pcipool_backend::Inventory;
use pcipool_backend_linux::qualify_facts::{load_aliases, platform_facts};
use pcipool_backend_linux::write::{Mode, Scope, Writer};
use pcipool_backend_linux::{HostPaths, LinuxControl, LinuxHost};
use pcipool_fabric::NodeId;
use pcipool_pcie::Bdf;
use pcipool_pool::offer::{HostFacts, offer};
use pcipool_qualify::AdapterProfile;
use pcipool_wire::ReportedDevice;

use crate::runtime::Reporter;

/// What a Linux agent pools.
#[derive(Debug, Clone)]
pub struct LinuxPool {
    /// The host.
    pub node: NodeId,
    /// The roots it reads and writes through.
    pub paths: HostPaths,
    /// The functions the operator put in the pool.
    pub pool: BTreeSet<Bdf>,
    /// The operator said this host only borrows (an empty pool is then right).
    pub borrower_only: bool,
    /// Pooled functions this agent served leases of before it restarted: when one is missing, it is
    /// taken to be away on the fabric (a whole device lent to a borrower), not a mistake in `pool`.
    pub served_before: BTreeSet<Bdf>,
    /// The fabric adapter's profile.
    pub profile: AdapterProfile,
    /// The module directory whose aliases tell which driver binds a device
    /// (default `/lib/modules/<release>`).
    pub modules: Option<PathBuf>,
}

impl LinuxPool {
    /// Checks the pool against the host as it is now; returns the pooled functions that are away (not
    /// here now, served before).
    ///
    /// # Errors
    /// An empty pool (unless the host only borrows), a function that is not here and was never
    /// served, or one that keeps the host running.
    pub fn check(&self) -> Result<BTreeSet<Bdf>, String> {
        if self.pool.is_empty() && !self.borrower_only {
            return Err(
                "a Linux agent needs --pool (it touches only the functions named there) or --borrower-only"
                    .into(),
            );
        }
        let inv = LinuxHost::new(self.paths.clone())
            .inventory()
            .map_err(|e| e.to_string())?;
        let mut away = BTreeSet::new();
        for bdf in &self.pool {
            let record = inv.devices.iter().find(|d| d.bdf == *bdf);
            if record.is_none() && self.served_before.contains(bdf) {
                tracing::warn!(%bdf, "a pooled function is not here: away on the fabric, expected back with its return");
                away.insert(*bdf);
                continue;
            }
            pcipool_backend_linux::host::check_safe(record, *bdf).map_err(|e| e.to_string())?;
        }
        Ok(away)
    }

    /// The device control the agent's steps run on: live writes to the pooled functions that
    /// qualify for some model here (and their VFs) and to those `away` on the fabric, nothing else.
    ///
    /// # Errors
    /// The host cannot be read or judged.
    pub fn control(&self, away: &BTreeSet<Bdf>) -> Result<LinuxControl, String> {
        let qualified = self
            .devices()?
            .into_iter()
            .filter(|d| !d.info.models.is_empty())
            .map(|d| d.info.function.unwrap_or(d.info.fdid.bdf))
            // A function away on the fabric was qualified when it was lent; its return writes to it.
            .chain(away.iter().copied());
        let scope = Scope::new(&self.paths.sys, qualified);
        LinuxControl::new(self.paths.clone(), Writer::new(scope, Mode::Live))
            .map_err(|e| e.to_string())
    }
}

impl Reporter for LinuxPool {
    fn devices(&self) -> Result<Vec<ReportedDevice>, String> {
        let inv = LinuxHost::new(self.paths.clone())
            .inventory()
            .map_err(|e| format!("reading the inventory: {e}"))?;
        let platform =
            platform_facts(&self.paths, &inv).map_err(|e| format!("platform facts: {e}"))?;
        let modules = self.modules.clone().or_else(|| {
            inv.kernel_release
                .as_ref()
                .map(|r| PathBuf::from(format!("/lib/modules/{r}")))
        });
        // Without aliases qualification warns that the native driver is unknown; it does not fail.
        let aliases = modules.and_then(|m| load_aliases(&m).ok());
        let facts = HostFacts {
            node: self.node,
            inventory: &inv,
            platform: &platform,
            profile: &self.profile,
            aliases: aliases.as_deref(),
        };
        Ok(offer(&facts, |r| {
            self.pool.contains(&r.bdf) && !r.backs_root_fs && !r.backs_default_route
        })
        .into_iter()
        .map(|(info, reasons)| ReportedDevice { info, reasons })
        .collect())
    }
}
