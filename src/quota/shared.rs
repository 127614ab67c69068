//! The quota shared by every replica through Redis, and what happens when Redis fails.
//!
//! - While Redis answers, every attempt takes its slot from the one bucket in Redis
//!   ([`super::redis`]), and throttles adapt the one shared rate.
//! - A Redis error or a round trip past `--quota-store-timeout` (never past the call's deadline)
//!   never fails a call: the attempt takes its slot from a local bucket at `--quota-fallback-rate`
//!   instead, and so do the attempts after it. The fallback's rate is a share of the account's quota
//!   (half by default, as two replicas is the base deployment), so the replicas together stay near
//!   the quota while they cannot coordinate; AWS's throttling and the adaptive rate absorb the rest.
//! - Meanwhile one probe asks Redis every [`PROBE_INTERVAL`]; when it answers, attempts go back to
//!   the shared bucket. Each transition is logged once and shows in `connect_facade_quota_store_up`.
//!
//! Falling back rather than failing is envoyproxy/ratelimit's default too (`failure_mode_deny=false`);
//! unlike it, a bounded round trip keeps a slow Redis from holding calls (its issue #462).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    Full, QuotaStore, Slot, SlotRequest, StoreFuture,
    adaptive::INCREASE_INTERVAL,
    local::LocalQuota,
    redis::{RedisQuota, RedisQuotaError},
};
use crate::metrics::Metrics;

/// How often a replica on its fallback asks Redis again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Redis, with a local fallback.
#[derive(Clone)]
pub struct SharedQuota {
    inner: Arc<Inner>,
}

struct Inner {
    redis: RedisQuota,
    fallback: LocalQuota,
    timeout: Duration,
    configured_rate: f64,
    up: AtomicBool,
    /// The shared rate last seen (f64 bits): at the configured rate, nothing is left to climb, so
    /// accepted attempts need no round trip.
    shared_rate: AtomicU64,
    /// When this replica last asked the shared rate to climb (it climbs once per interval at most).
    last_climb: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl SharedQuota {
    /// `fallback` holds the buckets used while Redis fails.
    pub fn new(
        redis: RedisQuota,
        fallback: LocalQuota,
        configured_rate: f64,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_quota_store_up(true);
        Self {
            inner: Arc::new(Inner {
                redis,
                fallback,
                timeout,
                configured_rate,
                up: AtomicBool::new(true),
                shared_rate: AtomicU64::new(configured_rate.to_bits()),
                last_climb: Mutex::new(None),
                metrics,
            }),
        }
    }

    /// Whether attempts take their slots from Redis right now.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Runs one Redis operation within `bound`, timing it; an error or a timeout takes the replica
    /// to its fallback.
    async fn ask<T>(
        self: &Arc<Self>,
        bound: Duration,
        operation: impl Future<Output = Result<T, RedisQuotaError>>,
    ) -> Option<T> {
        let started = Instant::now();
        let limit = bound.min(self.timeout);
        let outcome = tokio::time::timeout(limit, operation).await;
        self.metrics.quota_store_round_trip(started.elapsed());
        let error = match outcome {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(error)) => error.to_string(),
            // The call's deadline ran out before the store's timeout: nothing is known of Redis.
            Err(_) if limit < self.timeout => return None,
            Err(_) => format!("no answer within {limit:?}"),
        };
        self.metrics.quota_store_error();
        if self.up.swap(false, Ordering::AcqRel) {
            self.fallback.drain();
            tracing::warn!(%error, "quota store failed: using the local fallback bucket until Redis answers");
            self.metrics.set_quota_store_up(false);
            tokio::spawn(probe(self.clone()));
        }
        None
    }

    fn saw_rate(&self, rate: f64) {
        self.shared_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Whether this accepted attempt should ask the shared rate to climb.
    fn climb_due(&self) -> bool {
        if f64::from_bits(self.shared_rate.load(Ordering::Relaxed)) >= self.configured_rate {
            return false;
        }
        let mut last = self.last_climb.lock();
        let now = Instant::now();
        if last.is_some_and(|at| now - at < INCREASE_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Asks Redis every [`PROBE_INTERVAL`] until it answers, then puts the replica back on it.
async fn probe(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let started = Instant::now();
        let answered = tokio::time::timeout(inner.timeout, inner.redis.ping()).await;
        inner.metrics.quota_store_round_trip(started.elapsed());
        if matches!(answered, Ok(Ok(()))) {
            inner.up.store(true, Ordering::Release);
            inner.metrics.set_quota_store_up(true);
            tracing::info!("quota store answers again: sharing the quota through Redis");
            return;
        }
        inner.metrics.quota_store_error();
    }
}

impl QuotaStore for SharedQuota {
    fn reserve<'a>(&'a self, request: SlotRequest<'a>) -> StoreFuture<'a, Result<Slot, Full>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut request = request;
            if self.is_up() {
                let started = Instant::now();
                let bound = request.deadline.saturating_duration_since(started);
                if let Some(decision) = inner.ask(bound, inner.redis.reserve(request)).await {
                    let rate = match &decision {
                        Ok(slot) => slot.rate,
                        Err(full) => full.rate,
                    };
                    inner.saw_rate(rate);
                    return decision;
                }
                // Redis failed this call: the fallback gets what is left of its wait.
                request.max_wait = request.max_wait.saturating_sub(started.elapsed());
            }
            inner.fallback.reserve(request).await
        })
    }

    /// Sent in the background: the call already has AWS's answer, and a slow Redis must not hold it
    /// (nor turn it into DEADLINE_EXCEEDED).
    fn throttled<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            if inner.up.load(Ordering::Acquire)
                && let Some(rate) = inner.ask(inner.timeout, inner.redis.throttled(&key)).await
            {
                inner.saw_rate(rate);
                return;
            }
            inner.fallback.throttled(&key).await;
        });
        Box::pin(std::future::ready(()))
    }

    /// Asks the shared rate to climb at most once per interval, and only while it is below the
    /// configured rate, so most accepted attempts cost no round trip; sent in the background.
    fn accepted<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        let inner = &self.inner;
        if !self.is_up() {
            return inner.fallback.accepted(key);
        }
        if inner.climb_due() {
            let inner = inner.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                if let Some(rate) = inner.ask(inner.timeout, inner.redis.accepted(&key)).await {
                    inner.saw_rate(rate);
                }
            });
        }
        Box::pin(std::future::ready(()))
    }
}
