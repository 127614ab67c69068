//! The quota in this process: governor's GCRA buckets (lock-free for the account-wide bucket), one
//! account-wide bucket per key whose rate adapts to throttling, and optionally one bucket per
//! instance. It is the store of a single replica, and the fallback of the shared store.
//!
//! governor's `check` answers "now or not until T" and cannot reserve a future slot, so a slot
//! `wait` away is reserved by checking at the time it is due: [`LocalQuota::reserve`] waits itself
//! (inside the returned future) and answers with no further wait. Waiters are woken by their timers,
//! not in arrival order, which only matters within one replica's own bucket.

use std::{collections::HashMap, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, RateLimiter,
    clock::{Clock, DefaultClock},
};
use parking_lot::RwLock;
use tokio::time::Instant;

use super::{
    Bucket, Full, QuotaLimits, QuotaStore, Slot, SlotRequest, StoreFuture,
    adaptive::{AdaptiveBucket, quota},
};

/// Keyed buckets are pruned of idle instances past this many, so arbitrary instance ids sent by callers
/// cannot grow memory without bound.
const MAX_TRACKED_INSTANCES: usize = 10_000;

/// One key's buckets.
struct KeyBuckets {
    account: AdaptiveBucket,
    per_instance: Option<DefaultKeyedRateLimiter<String>>,
}

/// The quota held in this process.
pub struct LocalQuota {
    limits: QuotaLimits,
    keys: RwLock<HashMap<String, Arc<KeyBuckets>>>,
    clock: DefaultClock,
    /// Whether this is a shared store's fallback ([`LocalQuota::fallback`]): its account buckets
    /// start with their burst spent, and its refusals say so.
    fallback: bool,
}

impl LocalQuota {
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            keys: RwLock::new(HashMap::new()),
            clock: DefaultClock::default(),
            fallback: false,
        }
    }

    /// A shared store's fallback (built anew at each outage): its buckets start with their burst
    /// spent but one slot. The replicas were just sending at the account's rate, so AWS's bucket is
    /// as good as empty: a fresh burst on every replica at once would only be throttled.
    pub fn fallback(limits: QuotaLimits) -> Self {
        Self {
            fallback: true,
            ..Self::new(limits)
        }
    }

    /// The account-wide rate `key`'s bucket runs at now.
    pub fn rate(&self, key: &str) -> f64 {
        self.buckets(key).account.rate()
    }

    fn buckets(&self, key: &str) -> Arc<KeyBuckets> {
        if let Some(buckets) = self.keys.read().get(key) {
            return buckets.clone();
        }
        let mut keys = self.keys.write();
        keys.entry(key.to_owned())
            .or_insert_with(|| {
                let account = AdaptiveBucket::new(
                    self.limits.rate_per_second,
                    self.limits.burst,
                    self.limits.adaptive.clone(),
                );
                if self.fallback {
                    account.drain();
                }
                Arc::new(KeyBuckets {
                    account,
                    per_instance: self
                        .limits
                        .per_instance
                        .map(|(rate, burst)| RateLimiter::keyed(quota(rate, burst))),
                })
            })
            .clone()
    }

    /// Takes a slot now, or says how long until one is free.
    fn try_take(&self, buckets: &KeyBuckets, instance_id: &str) -> Result<(), (Bucket, Duration)> {
        if let Some(limiter) = &buckets.per_instance {
            if limiter.len() > MAX_TRACKED_INSTANCES {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&instance_id.to_owned()) {
                return Err((Bucket::Instance, not_until.wait_time_from(self.clock.now())));
            }
        }
        buckets
            .account
            .limiter()
            .check()
            .map_err(|not_until| (Bucket::Account, not_until.wait_time_from(self.clock.now())))
    }
}

impl QuotaStore for LocalQuota {
    fn reserve<'a>(&'a self, request: SlotRequest<'a>) -> StoreFuture<'a, Result<Slot, Full>> {
        Box::pin(async move {
            let buckets = self.buckets(request.key);
            let started = Instant::now();
            let give_up_at = started + request.max_wait;
            let mut queued = false;
            loop {
                let (bucket, wait) = match self.try_take(&buckets, request.instance_id) {
                    Ok(()) => {
                        return Ok(Slot {
                            wait: Duration::ZERO,
                            queued,
                            rate: buckets.account.rate(),
                        });
                    }
                    Err(full) => full,
                };
                if Instant::now() + wait > give_up_at {
                    return Err(Full {
                        bucket,
                        retry_after: wait,
                        rate: buckets.account.rate(),
                        share: 1.0,
                        fallback: self.fallback,
                    });
                }
                tokio::time::sleep(wait).await;
                queued = true;
            }
        })
    }

    fn throttled<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.buckets(key).account.on_throttled();
        Box::pin(std::future::ready(()))
    }

    fn accepted<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.buckets(key).account.on_accepted();
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::AdaptiveConfig;

    fn store(rate: f64, burst: u32, per_instance: Option<(f64, u32)>) -> LocalQuota {
        LocalQuota::new(QuotaLimits {
            rate_per_second: rate,
            burst,
            per_instance,
            adaptive: AdaptiveConfig {
                decrease_factor: 0.5,
                increase_per_second: 0.1,
            },
        })
    }

    fn request(instance_id: &str, max_wait: Duration) -> SlotRequest<'_> {
        SlotRequest {
            key: "us-east-1",
            instance_id,
            max_wait,
            deadline: Instant::now() + Duration::from_secs(10),
            caller: None,
        }
    }

    #[tokio::test]
    async fn the_burst_is_free_then_a_slot_past_the_wait_bound_is_refused_with_its_time() {
        let store = store(2.0, 3, None);
        for _ in 0..3 {
            let slot = store.reserve(request("i", Duration::ZERO)).await.unwrap();
            assert_eq!(slot.wait, Duration::ZERO);
            assert!(!slot.queued, "a free slot is not a wait");
        }
        let full = store
            .reserve(request("i", Duration::from_millis(100)))
            .await
            .unwrap_err();
        assert_eq!(full.bucket, Bucket::Account);
        assert!(full.retry_after > Duration::from_millis(400), "{full:?}");
        assert!(full.retry_after <= Duration::from_millis(500), "{full:?}");
    }

    #[tokio::test]
    async fn a_slot_within_the_wait_bound_is_waited_for() {
        let store = store(20.0, 1, None);
        store.reserve(request("i", Duration::ZERO)).await.unwrap();
        let started = std::time::Instant::now();
        let slot = store
            .reserve(request("i", Duration::from_millis(200)))
            .await
            .unwrap();
        assert!(slot.queued);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
    }

    #[tokio::test]
    async fn an_instance_sub_limit_refuses_that_instance_only() {
        let store = store(100.0, 100, Some((1.0, 1)));
        store.reserve(request("a", Duration::ZERO)).await.unwrap();
        let full = store
            .reserve(request("a", Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!(full.bucket, Bucket::Instance);
        store.reserve(request("b", Duration::ZERO)).await.unwrap();
    }

    #[tokio::test]
    async fn keys_have_buckets_of_their_own() {
        let store = store(1.0, 1, None);
        let on = |key| SlotRequest {
            key,
            ..request("i", Duration::ZERO)
        };
        store.reserve(on("us-east-1")).await.unwrap();
        assert!(store.reserve(on("us-east-1")).await.is_err());
        store.reserve(on("eu-west-2")).await.unwrap();
    }

    // governor's clock is the real one, so this one uses real (short) times.
    #[tokio::test]
    async fn a_fallback_starts_with_one_slot_of_its_burst() {
        async fn one_slot(store: &LocalQuota) {
            store.reserve(request("i", Duration::ZERO)).await.unwrap();
            let full = store
                .reserve(request("i", Duration::ZERO))
                .await
                .unwrap_err();
            assert!(full.fallback, "{full:?}");
            assert!(full.retry_after > Duration::from_millis(40), "{full:?}");
        }
        let fallback = LocalQuota::fallback(store(20.0, 3, None).limits);
        one_slot(&fallback).await;
    }

    #[tokio::test]
    async fn a_throttle_lowers_the_rate_the_slots_report() {
        let store = store(10.0, 10, None);
        store.throttled("us-east-1").await;
        let slot = store
            .reserve(request("i", Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!(slot.rate, 5.0);
    }
}
