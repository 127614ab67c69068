//! One store per AWS account and region, each with its own limits (a route's `rate_limit` and
//! `burst`), all on the process's one shared store when the quota is shared.

use std::sync::Arc;

use super::QuotaMetrics;
use super::{QuotaLimits, QuotaStore, local::LocalQuota, shared::SharedQuota};
use crate::store::SharedStore;

/// Where the stores keep their buckets.
#[derive(Clone)]
pub struct QuotaStores {
    shared: Option<OnStore>,
}

/// What each key's quota on the shared store is built with.
#[derive(Clone)]
struct OnStore {
    store: SharedStore,
    /// `--quota-fallback-rate` as a share of `--rate-limit` (so a route at another rate scales it):
    /// the cap of the fleet's share.
    cap_share: Option<f64>,
    /// The fallback's rate before the fleet is known, as a share of each key's rate
    /// (`--quota-fallback-rate`, or half: two replicas is the base deployment).
    unknown_fleet_share: f64,
    metrics: QuotaMetrics,
}

impl QuotaStores {
    /// Buckets in this process.
    pub fn local() -> Self {
        Self { shared: None }
    }

    /// Buckets in the shared `store`; while it fails, each replica uses a local bucket at its share
    /// of the fleet ([`SharedQuota`]).
    pub fn shared(
        store: SharedStore,
        cap_share: Option<f64>,
        unknown_fleet_share: f64,
        metrics: QuotaMetrics,
    ) -> Self {
        Self {
            shared: Some(OnStore {
                store,
                cap_share,
                unknown_fleet_share,
                metrics,
            }),
        }
    }

    /// The store for `key`, enforcing `limits`.
    pub fn store(&self, key: &str, limits: QuotaLimits) -> Arc<dyn QuotaStore> {
        match &self.shared {
            None => Arc::new(LocalQuota::new(limits)),
            Some(shared) => {
                let rate = limits.rate_per_second;
                Arc::new(SharedQuota::new(
                    key,
                    shared.store.clone(),
                    limits,
                    shared.cap_share.map(|share| rate * share),
                    rate * shared.unknown_fleet_share,
                    shared.metrics.clone(),
                ))
            }
        }
    }
}
