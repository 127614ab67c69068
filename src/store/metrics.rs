//! The shared store's metrics: whether Redis answers, its round trips and their failures.
//! Registered by the app whether or not a store is configured; the `store="redis"` series appears
//! only once a store is built, so that a store-down alert never fires on a replica without one.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};

use crate::metrics::MetricsRegistry;

/// Buckets of the store's round trip (seconds): a Redis nearby answers in well under a
/// millisecond, and the store's timeout is 100 ms by default.
const ROUND_TRIP_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

/// The store's families; a clone records into the same series.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    up: Family<StoreLabels, Gauge<i64, AtomicI64>>,
    errors: Counter,
    round_trip_seconds: Histogram,
}

impl StoreMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            up: Family::default(),
            errors: Counter::default(),
            round_trip_seconds: Histogram::new(ROUND_TRIP_BUCKETS),
        };
        registry.register(
            "quota_store_up",
            "1 while the shared quota store (Redis) answers, 0 while this replica uses its fallback bucket (with --quota-store redis:// only)",
            metrics.up.clone(),
        );
        registry.register(
            "quota_store_errors",
            "Quota store round trips that failed or timed out",
            metrics.errors.clone(),
        );
        registry.register(
            "quota_store_round_trip_seconds",
            "Round trips to the quota store (Redis), in seconds",
            metrics.round_trip_seconds.clone(),
        );
        metrics
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up
            .get_or_create(&StoreLabels { store: "redis" })
            .set(i64::from(up));
    }

    pub(crate) fn error(&self) {
        self.errors.inc();
    }

    pub(crate) fn round_trip(&self, elapsed: std::time::Duration) {
        self.round_trip_seconds.observe(elapsed.as_secs_f64());
    }
}
