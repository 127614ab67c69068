//! The shared quota's metrics, per account and region key: the replicas last seen in the fleet,
//! and the rate this replica would send while the store fails. Registered by the app; recorded by
//! [`super::shared::SharedQuota`] (a local quota has neither).

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::metrics::{family::Family, gauge::Gauge};

use crate::metrics::{KeyLabels, MetricsRegistry};

/// The quota's families; a clone records into the same series.
#[derive(Clone, Debug)]
pub struct QuotaMetrics {
    fleet_replicas: Family<KeyLabels, Gauge<i64, AtomicI64>>,
    fallback_rate: Family<KeyLabels, Gauge<f64, AtomicU64>>,
}

impl QuotaMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            fleet_replicas: Family::default(),
            fallback_rate: Family::default(),
        };
        registry.register(
            "quota_fleet_replicas",
            "Replicas last seen registered in the shared quota store for the key (this one included); the fallback divides the key's rate by it",
            metrics.fleet_replicas.clone(),
        );
        registry.register(
            "quota_fallback_rate_per_second",
            "Requests/s this replica sends for the key while the shared quota store fails: the rate in force on the fallback, or the one it would take now",
            metrics.fallback_rate.clone(),
        );
        metrics
    }

    pub fn set_fleet_replicas(&self, key: &str, replicas: u32) {
        self.fleet_replicas
            .get_or_create(&KeyLabels::new(key))
            .set(i64::from(replicas));
    }

    pub fn set_fallback_rate(&self, key: &str, rate: f64) {
        self.fallback_rate
            .get_or_create(&KeyLabels::new(key))
            .set(rate);
    }
}
