//! One store per AWS account and region, each with its own limits (a route's `rate_limit` and
//! `burst`), all on the one Redis connection when the quota is shared.

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;

use super::{
    QuotaLimits, QuotaStore,
    local::LocalQuota,
    redis::{RedisQuota, RedisQuotaError, connect},
    shared::SharedQuota,
};
use crate::metrics::Metrics;

/// Where the stores keep their buckets.
#[derive(Clone)]
pub struct QuotaStores {
    shared: Option<Shared>,
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
struct Shared {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// The fallback's rate as a share of each account's rate.
    fallback_share: f64,
}

impl QuotaStores {
    /// Buckets in this process.
    pub fn local(metrics: Arc<Metrics>) -> Self {
        Self {
            shared: None,
            metrics,
        }
    }

    /// Buckets in the Redis at `url`, shared by every replica; while it fails, each replica uses a
    /// local bucket at `fallback_share` of the account's rate.
    pub fn redis(
        url: &str,
        prefix: &str,
        timeout: Duration,
        fallback_share: f64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RedisQuotaError> {
        Ok(Self {
            shared: Some(Shared {
                connection: connect(url, timeout)?,
                prefix: prefix.to_owned(),
                timeout,
                fallback_share,
            }),
            metrics,
        })
    }

    /// The Redis connection, for the other state the replicas share (the replay cache).
    pub fn connection(&self) -> Option<ConnectionManager> {
        self.shared.as_ref().map(|shared| shared.connection.clone())
    }

    /// A store enforcing `limits`.
    pub fn store(&self, limits: QuotaLimits) -> Arc<dyn QuotaStore> {
        match &self.shared {
            None => Arc::new(LocalQuota::new(limits)),
            Some(shared) => {
                let rate = limits.rate_per_second;
                let fallback = LocalQuota::fallback(limits.at_rate(rate * shared.fallback_share));
                let redis =
                    RedisQuota::with_connection(shared.connection.clone(), &shared.prefix, limits);
                Arc::new(SharedQuota::new(
                    redis,
                    fallback,
                    rate,
                    shared.timeout,
                    self.metrics.clone(),
                ))
            }
        }
    }
}
