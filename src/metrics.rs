//! The one Prometheus registry, and its exposition on its own plain-HTTP listener
//! (`--metrics-listen`, `GET /metrics`, [`crate::serving::metrics_endpoint`]).
//!
//! Each part owns its metrics, as linkerd2-proxy's stacks and envoyproxy/ratelimit's stats do: the
//! part's `…Metrics` type registers its families into the [`MetricsRegistry`] when the app builds
//! it, and only that part records into them (the calls in `api/metrics.rs`, the callers in `auth.rs`,
//! the upstream in `middleware/metrics.rs`, the store in `store/metrics.rs`, the quota in
//! `quota/metrics.rs`, replay, routes, connections in `listener.rs`, TLS). What stays here is what
//! belongs to no part: the build and the runtime.
//!
//! The gRPC server metrics use go-grpc-prometheus's names and labels (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`), so existing Grafana dashboards and
//! alerts work unchanged; the facade's own are prefixed `connect_facade_`. The names are a contract
//! with the dashboard, the alert rules and `scripts/monitoring.py`: a test lists every one.
//!
//! prometheus-client keeps a registry per value rather than a process-global recorder, so every
//! app (and every test) counts only its own calls.

use std::sync::{Arc, atomic::AtomicI64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Metric, Registry},
};

/// Latency buckets of go-grpc-prometheus (seconds), for the call and attempt histograms.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of call or attempt latency, in go-grpc-prometheus's buckets.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The `key` label: an account and region (see [`crate::routes`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KeyLabels {
    pub key: String,
}

impl KeyLabels {
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
        }
    }
}

/// The `result` label of a reload: `ok`, or `error` (what was in use stays).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub result: &'static str,
}

impl OutcomeLabels {
    pub fn of(ok: bool) -> Self {
        Self {
            result: if ok { "ok" } else { "error" },
        }
    }
}

/// A count as a gauge's value, saturating rather than wrapping.
pub fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Where the parts register their families while the app is built.
pub struct MetricsRegistry {
    registry: Registry,
    runtime_tasks: Gauge<i64, AtomicI64>,
    /// Every family's name as exported, in the order registered.
    names: Vec<String>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("families", &self.names)
            .finish_non_exhaustive()
    }
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// A registry holding the build's and the runtime's metrics.
    pub fn new() -> Self {
        let mut registry = Self {
            registry: Registry::default(),
            runtime_tasks: Gauge::default(),
            names: Vec::new(),
        };
        registry.register(
            "runtime_alive_tasks",
            "Tokio tasks alive in the process; under a steady load it must stay flat (a rise is a leak)",
            registry.runtime_tasks.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry
    }

    /// Registers one of the facade's own families: `connect_facade_` is put before its name.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.names.push(format!("{FACADE_PREFIX}_{name}"));
        self.registry
            .sub_registry_with_prefix(FACADE_PREFIX)
            .register(name, help, metric);
    }

    /// Registers a family under a name other software already knows (go-grpc-prometheus's).
    pub fn register_unprefixed(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.names.push(name.to_owned());
        self.registry.register(name, help, metric);
    }

    /// Every family registered so far, by its exported name (a counter's without `_total`).
    pub fn families(&self) -> &[String] {
        &self.names
    }

    /// Every part is registered: what the metrics endpoint serves.
    pub fn into_exposition(self) -> Arc<Exposition> {
        Arc::new(Exposition {
            registry: self.registry,
            runtime_tasks: self.runtime_tasks,
        })
    }
}

const FACADE_PREFIX: &str = "connect_facade";

/// The registry once built, rendered on each scrape.
pub struct Exposition {
    registry: Registry,
    runtime_tasks: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exposition")
    }
}

impl Exposition {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        // Read at scrape time: the runtime counts its tasks itself, so there is nothing to update
        // on the hot path.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            self.runtime_tasks.set(gauge_value(tasks));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_and_runtime_are_exposed_with_the_facade_prefix() {
        let text = MetricsRegistry::new().into_exposition().render();
        assert!(
            text.contains("connect_facade_build_info{version="),
            "{text}"
        );
        assert!(
            text.contains("# TYPE connect_facade_runtime_alive_tasks gauge"),
            "{text}"
        );
    }
}
