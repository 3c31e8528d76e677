//! The controller's metrics for Prometheus, in one place: every name, label and bucket the controller
//! exports is declared here, and encoded with `prometheus-client` in the OpenMetrics text format
//! (`GET /metrics`). docs/metrics.md lists them; `promtool check metrics` checks the output in the
//! test command.
//!
//! Two kinds: events the controller reports as they happen ([`Metrics::step_done`],
//! [`Metrics::workflow_done`], [`Metrics::refused`], [`Metrics::fault`], [`Metrics::store_op`]), and
//! the pool's state read at each scrape ([`Census`], given to [`Metrics::encode`]).
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label pairs (name, value).
type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Durations from 1 ms to about 33 s: steps, workflows.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Durations from 100 µs to about 3 s: one store operation.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The pool's state at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Devices per ownership state (`available`, `lent`, ...).
    pub devices: BTreeMap<String, i64>,
    /// Active leases per access model (`lend`, `shared`).
    pub leases: BTreeMap<String, i64>,
    /// The audit chain's length.
    pub audit_records: i64,
    /// Each host's agent: true when it is heard from (hosts run in process are left out).
    pub agents: BTreeMap<String, bool>,
}

/// Every metric of a controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    devices: Family<Labels, Gauge>,
    leases: Family<Labels, Gauge>,
    audit_records: Gauge,
    agent_up: Family<Labels, Gauge>,
    workflows: Histograms,
    steps: Histograms,
    store_ops: Histograms,
    refusals: Family<Labels, Counter>,
    faults: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, none observed yet.
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::default()),
            devices: Family::default(),
            leases: Family::default(),
            audit_records: Gauge::default(),
            agent_up: Family::default(),
            workflows: Family::new_with_constructor(seconds_buckets),
            steps: Family::new_with_constructor(seconds_buckets),
            store_ops: Family::new_with_constructor(store_buckets),
            refusals: Family::default(),
            faults: Family::default(),
        };
        {
            let mut r = m.registry();
            r.register(
                "pcipool_devices",
                "Pooled devices by ownership state",
                m.devices.clone(),
            );
            r.register(
                "pcipool_leases",
                "Active leases by access model",
                m.leases.clone(),
            );
            r.register(
                "pcipool_audit_records",
                "Records in the audit chain",
                m.audit_records.clone(),
            );
            r.register(
                "pcipool_agent_up",
                "Whether a host's agent is heard from (1) or lost (0)",
                m.agent_up.clone(),
            );
            r.register_with_unit(
                "pcipool_workflow_duration",
                "Lend and return workflows, from their first step to their outcome, by kind and outcome",
                Unit::Seconds,
                m.workflows.clone(),
            );
            r.register_with_unit(
                "pcipool_step_duration",
                "Workflow steps by step and outcome",
                Unit::Seconds,
                m.steps.clone(),
            );
            r.register_with_unit(
                "pcipool_store_operation_duration",
                "Store operations the controller waited for, by operation",
                Unit::Seconds,
                m.store_ops.clone(),
            );
            r.register(
                "pcipool_refusals",
                "Requests the API refused, by stable error code",
                m.refusals.clone(),
            );
            r.register(
                "pcipool_faults",
                "Faults the controller met and handled, by kind",
                m.faults.clone(),
            );
        }
        m
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A workflow reached its outcome (`done`, `compensated`, `failed`, ...) after `seconds`.
    pub fn workflow_done(&self, kind: &str, outcome: &str, seconds: f64) {
        self.workflows
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .observe(seconds);
    }

    /// A step ran (`ok` or its error kind) in `seconds`.
    pub fn step_done(&self, step: &str, outcome: &str, seconds: f64) {
        self.steps
            .get_or_create(&vec![
                ("step", step.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .observe(seconds);
    }

    /// A store operation took `seconds`.
    pub fn store_op(&self, op: &str, seconds: f64) {
        self.store_ops
            .get_or_create(&vec![("operation", op.to_owned())])
            .observe(seconds);
    }

    /// The API refused a request with `code`.
    pub fn refused(&self, code: &str) {
        self.refusals
            .get_or_create(&vec![("code", code.to_owned())])
            .inc();
    }

    /// The controller met a fault (`lender_lost`, `lender_back`, `lease_fenced`, `error`, ...).
    pub fn fault(&self, kind: &str) {
        self.faults
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// The exposition text with the pool's state as `census` says.
    pub fn encode(&self, census: &Census) -> String {
        let set = |family: &Family<Labels, Gauge>,
                   label: &'static str,
                   counts: &BTreeMap<String, i64>| {
            family.clear();
            for (value, n) in counts {
                family.get_or_create(&vec![(label, value.clone())]).set(*n);
            }
        };
        set(&self.devices, "state", &census.devices);
        set(&self.leases, "model", &census.leases);
        self.audit_records.set(census.audit_records);
        self.agent_up.clear();
        for (node, up) in &census.agents {
            self.agent_up
                .get_or_create(&vec![("node", node.clone())])
                .set(i64::from(*up));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry()).is_err() {
            // Writing into a String cannot fail; say so in the output rather than hide it.
            out.push_str("# encoding the metrics failed\n");
        }
        prometheus_text(&out)
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text (what `prometheus-client` writes) as Prometheus's text format 0.0.4, which every
/// Prometheus and `promtool check metrics` read: a counter's HELP and TYPE name its `_total` sample,
/// and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_the_census_appear_with_their_labels() {
        let m = Metrics::new();
        m.step_done("map_bars", "ok", 0.002);
        m.workflow_done("lend", "done", 0.4);
        m.refused("NO_CAPACITY");
        m.refused("NO_CAPACITY");
        m.fault("lender_lost");
        m.store_op("write_device", 0.0005);
        let census = Census {
            devices: BTreeMap::from([("available".into(), 3), ("lent".into(), 1)]),
            leases: BTreeMap::from([("lend".into(), 1)]),
            audit_records: 12,
            agents: BTreeMap::from([("n1".into(), true), ("n2".into(), false)]),
        };
        let text = m.encode(&census);
        for line in [
            "pcipool_devices{state=\"lent\"} 1",
            "pcipool_leases{model=\"lend\"} 1",
            "pcipool_audit_records 12",
            "pcipool_agent_up{node=\"n2\"} 0",
            "pcipool_refusals_total{code=\"NO_CAPACITY\"} 2",
            "pcipool_faults_total{kind=\"lender_lost\"} 1",
            "pcipool_step_duration_seconds_count{step=\"map_bars\",outcome=\"ok\"} 1",
            "pcipool_workflow_duration_seconds_count{kind=\"lend\",outcome=\"done\"} 1",
            "pcipool_store_operation_duration_seconds_count{operation=\"write_device\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn counters_are_named_by_their_sample_and_openmetrics_only_lines_go() {
        let text = prometheus_text(
            "# HELP x_seconds A.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_sum 1\n# HELP y B.\n# TYPE y counter\ny_total 2\n# EOF\n",
        );
        assert_eq!(
            text,
            "# HELP x_seconds A.\n# TYPE x_seconds histogram\nx_seconds_sum 1\n# HELP y_total B.\n# TYPE y_total counter\ny_total 2\n"
        );
    }

    #[test]
    fn a_state_no_device_is_in_any_more_is_gone_at_the_next_scrape() {
        let m = Metrics::new();
        let mut census = Census::default();
        census.devices.insert("lent".into(), 1);
        let first = m.encode(&census);
        census.devices.clear();
        census.devices.insert("available".into(), 1);
        let second = m.encode(&census);
        assert_eq!(
            (
                first.contains("state=\"lent\""),
                second.contains("state=\"lent\""),
                second.contains("pcipool_devices{state=\"available\"} 1")
            ),
            (true, false, true)
        );
    }
}

#[cfg(test)]
mod dashboard {
    use super::*;

    /// Every `pcipool_*` name in a text.
    fn names(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("pcipool_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn every_metric_the_shipped_grafana_dashboard_queries_is_exported() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/grafana/pcipool.json"
        );
        let dashboard = std::fs::read_to_string(path).expect("the dashboard is shipped");
        let m = Metrics::new();
        m.step_done("map_bars", "ok", 0.001);
        m.workflow_done("lend", "succeeded", 0.1);
        m.store_op("read_device", 0.001);
        m.refused("CONFLICT");
        m.fault("error");
        let census = Census {
            devices: BTreeMap::from([("available".into(), 1)]),
            leases: BTreeMap::from([("lend".into(), 1)]),
            audit_records: 1,
            agents: BTreeMap::from([("n1".into(), true)]),
        };
        let exported = names(&m.encode(&census));
        let queried: Vec<String> = names(&dashboard)
            .into_iter()
            .filter(|n| !exported.contains(n))
            .collect();
        assert!(
            queried.is_empty(),
            "the dashboard queries metrics the controller does not export: {queried:?}"
        );
        assert!(
            names(&dashboard).len() >= 8,
            "the dashboard queries too little"
        );
    }
}
