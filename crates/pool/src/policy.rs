//! The pool policy file (TOML): tenants with quotas and priorities, which devices they may use, lease
//! length limits, maintenance windows, and the qualification overrides operators accepted.
//!
//! ```toml
//! max_lease_secs = 86400
//! strategy = "spread"            # or "pack"
//! link_oversubscription_pct = 400  # leases may reserve this % of a fabric link's bandwidth
//!
//! [[tenant]]
//! name = "ml"
//! priority = 10
//! max_lease_secs = 3600
//! quota = { gpu = 4, nvme = 8 }  # concurrent leases per device class; absent class = no limit
//! labels = { pool = "ml" }       # may only use devices carrying these labels
//!
//! [[maintenance]]
//! node = "n1"                    # a whole lender, or `fdid = "n1:0000:03:00.0"`
//! from_ms = 0
//! until_ms = 3600000
//!
//! [[override]]                   # see pcipool qualify
//! code = "IOMMU_GROUP_SHARED"
//! reason = "the peer is lent with it"
//! ```

use std::collections::BTreeMap;

use pcipool_fabric::{Fdid, NodeId};
use pcipool_qualify::Override;
use serde::Deserialize;

use crate::schedule::{DeviceClass, Request, Strategy};
use crate::state::Millis;

/// One tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Name (the tenant token carries it).
    pub name: String,
    /// Higher goes first when requests queue.
    #[serde(default)]
    pub priority: i32,
    /// Longest lease, seconds (capped by the pool's maximum).
    #[serde(default)]
    pub max_lease_secs: Option<u64>,
    /// Concurrent leases per class.
    #[serde(default)]
    pub quota: BTreeMap<DeviceClass, u32>,
    /// Labels every device it uses must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// A whole lender.
    #[serde(default)]
    pub node: Option<NodeId>,
    /// One device.
    #[serde(default)]
    pub fdid: Option<Fdid>,
    /// Start (control-plane clock, ms).
    pub from_ms: Millis,
    /// End (exclusive).
    pub until_ms: Millis,
}

/// The policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Pool-wide lease maximum, seconds.
    #[serde(default = "default_max_lease")]
    pub max_lease_secs: u64,
    /// Placement strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Tenants. With none declared, every tenant is admitted without quota.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<Tenant>,
    /// Maintenance windows.
    #[serde(default)]
    pub maintenance: Vec<Maintenance>,
    /// Accepted qualification findings.
    #[serde(default, rename = "override")]
    pub overrides: Vec<Override>,
    /// How much of a fabric link's bandwidth the leases crossing it may reserve, in percent (each lease
    /// reserves its device's own link bandwidth). 100 = never oversubscribed.
    #[serde(default = "default_oversubscription")]
    pub link_oversubscription_pct: u32,
}

fn default_max_lease() -> u64 {
    86_400
}

fn default_oversubscription() -> u32 {
    400
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_lease_secs: default_max_lease(),
            strategy: Strategy::Spread,
            link_oversubscription_pct: default_oversubscription(),
            tenants: Vec::new(),
            maintenance: Vec::new(),
            overrides: Vec::new(),
        }
    }
}

/// Why a policy file or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML / wrong fields.
    #[error("invalid policy: {0}")]
    Syntax(String),
    /// An override with no written reason.
    #[error("override of {0} has no written reason")]
    OverrideWithoutReason(String),
    /// A window that ends before it starts.
    #[error("maintenance window ends before it starts ({from_ms}..{until_ms})")]
    BadWindow {
        /// Start.
        from_ms: Millis,
        /// End.
        until_ms: Millis,
    },
    /// The tenant is not declared.
    #[error("unknown tenant '{0}'")]
    UnknownTenant(String),
    /// Over quota.
    #[error("tenant {tenant}: {class:?} quota {limit}, {used} in use, {asked} asked")]
    OverQuota {
        /// Tenant.
        tenant: String,
        /// Class.
        class: DeviceClass,
        /// Limit.
        limit: u32,
        /// In use.
        used: u32,
        /// Asked.
        asked: u32,
    },
}

/// What admission grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Lease time to live, ms (the asked duration capped by tenant and pool maxima).
    pub ttl_ms: Millis,
    /// Priority.
    pub priority: i32,
}

impl Policy {
    /// Parses and checks a policy file.
    ///
    /// # Errors
    /// [`PolicyError`] naming the problem.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if let Some(o) = policy.overrides.iter().find(|o| o.reason.trim().is_empty()) {
            return Err(PolicyError::OverrideWithoutReason(o.code.to_string()));
        }
        if let Some(w) = policy.maintenance.iter().find(|w| w.until_ms < w.from_ms) {
            return Err(PolicyError::BadWindow {
                from_ms: w.from_ms,
                until_ms: w.until_ms,
            });
        }
        Ok(policy)
    }

    /// Checks the devices placement chose against the tenant's class quotas. [`Self::admit`] can only
    /// check requests that name a class; a request by vendor/device id, model name or one specific device
    /// is checked here, once its devices (and so their classes) are known.
    ///
    /// # Errors
    /// [`PolicyError::OverQuota`] for the first class that would go over.
    pub fn check_placed(
        &self,
        tenant: &str,
        usage: &BTreeMap<DeviceClass, u32>,
        placed: &[DeviceClass],
    ) -> Result<(), PolicyError> {
        let Some(t) = self.tenants.iter().find(|t| t.name == tenant) else {
            return Ok(());
        };
        let mut asked: BTreeMap<DeviceClass, u32> = BTreeMap::new();
        for class in placed {
            *asked.entry(*class).or_default() += 1;
        }
        for (class, n) in asked {
            if let Some(limit) = t.quota.get(&class) {
                let used = usage.get(&class).copied().unwrap_or(0);
                if used.saturating_add(n) > *limit {
                    return Err(PolicyError::OverQuota {
                        tenant: tenant.to_owned(),
                        class,
                        limit: *limit,
                        used,
                        asked: n,
                    });
                }
            }
        }
        Ok(())
    }

    /// Admits (or refuses) a request of `tenant` for `duration_secs` given the tenant's current usage.
    /// The tenant's required labels are added to the request's selector.
    ///
    /// # Errors
    /// Unknown tenant, or over quota.
    pub fn admit(
        &self,
        tenant: &str,
        request: &mut Request,
        usage: &BTreeMap<DeviceClass, u32>,
        duration_secs: Option<u64>,
    ) -> Result<Admission, PolicyError> {
        let declared = self.tenants.iter().find(|t| t.name == tenant);
        if declared.is_none() && !self.tenants.is_empty() {
            return Err(PolicyError::UnknownTenant(tenant.to_owned()));
        }
        let cap = declared
            .and_then(|t| t.max_lease_secs)
            .map_or(self.max_lease_secs, |t| t.min(self.max_lease_secs));
        let secs = duration_secs.map_or(cap, |d| d.min(cap));
        if let Some(t) = declared {
            if let Some(class) = request.selector.class
                && let Some(limit) = t.quota.get(&class)
            {
                let used = usage.get(&class).copied().unwrap_or(0);
                if used.saturating_add(request.count) > *limit {
                    return Err(PolicyError::OverQuota {
                        tenant: tenant.to_owned(),
                        class,
                        limit: *limit,
                        used,
                        asked: request.count,
                    });
                }
            }
            for (k, v) in &t.labels {
                request.selector.labels.insert(k.clone(), v.clone());
            }
        }
        Ok(Admission {
            ttl_ms: secs.saturating_mul(1000),
            priority: declared.map_or(0, |t| t.priority),
        })
    }

    /// Whether a device is in a maintenance window at `now` (the scheduler skips it).
    pub fn in_maintenance(&self, fdid: Fdid, now: Millis) -> bool {
        self.maintenance.iter().any(|w| {
            (w.node == Some(fdid.node) || w.fdid == Some(fdid))
                && w.from_ms <= now
                && now < w.until_ms
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Selector;
    use pcipool_qualify::AccessModel;

    const POLICY: &str = r#"
max_lease_secs = 7200

[[tenant]]
name = "ml"
priority = 5
max_lease_secs = 3600
quota = { gpu = 2 }
labels = { pool = "ml" }

[[maintenance]]
node = "n1"
from_ms = 1000
until_ms = 2000
"#;

    fn gpu_request(count: u32) -> Request {
        Request {
            selector: Selector {
                class: Some(DeviceClass::Gpu),
                ..Selector::default()
            },
            count,
            model: AccessModel::Lend,
            borrower: NodeId(3),
            max_sharers: None,
            request_id: None,
        }
    }

    #[test]
    fn quota_is_enforced() {
        let p = Policy::parse(POLICY).expect("valid");
        let mut usage = BTreeMap::new();
        usage.insert(DeviceClass::Gpu, 1);
        let err = p.admit("ml", &mut gpu_request(2), &usage, None);
        assert_eq!(
            err,
            Err(PolicyError::OverQuota {
                tenant: "ml".into(),
                class: DeviceClass::Gpu,
                limit: 2,
                used: 1,
                asked: 2
            })
        );
    }

    #[test]
    fn lease_length_is_capped_by_tenant() {
        let p = Policy::parse(POLICY).expect("valid");
        let got = p
            .admit("ml", &mut gpu_request(1), &BTreeMap::new(), Some(100_000))
            .map(|a| a.ttl_ms);
        assert_eq!(got, Ok(3_600_000));
    }

    #[test]
    fn tenant_labels_restrict_the_selector() {
        let p = Policy::parse(POLICY).expect("valid");
        let mut r = gpu_request(1);
        p.admit("ml", &mut r, &BTreeMap::new(), None)
            .expect("admitted");
        assert_eq!(
            r.selector.labels.get("pool").map(String::as_str),
            Some("ml")
        );
    }

    #[test]
    fn unknown_tenant_is_refused_when_tenants_are_declared() {
        let p = Policy::parse(POLICY).expect("valid");
        assert_eq!(
            p.admit("eve", &mut gpu_request(1), &BTreeMap::new(), None),
            Err(PolicyError::UnknownTenant("eve".into()))
        );
    }

    #[test]
    fn maintenance_window_covers_lender_devices() {
        let p = Policy::parse(POLICY).expect("valid");
        let fdid: Fdid = "n1:0000:03:00.0".parse().expect("fdid");
        assert_eq!(
            (p.in_maintenance(fdid, 1500), p.in_maintenance(fdid, 2000)),
            (true, false)
        );
    }

    #[test]
    fn override_without_reason_is_rejected() {
        let err = Policy::parse("[[override]]\ncode = \"IOMMU_OFF\"\nreason = \" \"\n");
        assert_eq!(
            err,
            Err(PolicyError::OverrideWithoutReason("IOMMU_OFF".into()))
        );
    }

    #[test]
    fn unknown_field_is_a_syntax_error() {
        assert!(matches!(
            Policy::parse("colour = \"red\"\n"),
            Err(PolicyError::Syntax(_))
        ));
    }
}
