//! One account and region's quota shared by every replica through Redis, and what happens when
//! Redis fails.
//!
//! - While the store answers, every attempt takes its slot from the one bucket in Redis
//!   ([`super::redis`]), and throttles adapt the one shared rate.
//! - A Redis error or a round trip past `--quota-store-timeout` takes every key to its local
//!   fallback at once ([`crate::store::SharedStore`] probes until Redis answers); a store failure
//!   never fails a call.
//! - The fallback follows the fleet: each replica heartbeats every [`HEARTBEAT_INTERVAL`] and
//!   learns how many are live, and the fallback's rate is the key's rate over that count (capped by
//!   `--quota-fallback-rate`, never below [`FALLBACK_FLOOR_SHARE`] of it), with a burst of one.
//! - Back on Redis, a replica's first slot moves the account's bucket past its last fallback slot.
//!
//! The design and the alternatives weighed: the book's "Designs" chapter (docs/building/designs.md).

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::QuotaMetrics;
use super::{
    Bucket, Full, QuotaLimits, QuotaStore, Slot, SlotRequest, StoreFuture,
    adaptive::INCREASE_INTERVAL, local::LocalQuota, redis::RedisQuota,
};
use crate::store::SharedStore;

/// How often a replica registers itself among the key's live replicas.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a registration counts: three heartbeats, so one slow round trip drops no replica.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(3);

/// The lowest fallback rate, as a share of the key's rate.
pub const FALLBACK_FLOOR_SHARE: f64 = 0.01;

/// One key's quota in Redis, with a local fallback.
#[derive(Clone)]
pub struct SharedQuota {
    inner: Arc<Inner>,
}

struct Inner {
    key: String,
    store: SharedStore,
    redis: RedisQuota,
    limits: QuotaLimits,
    /// `--quota-fallback-rate`, when set.
    fallback_cap: Option<f64>,
    /// The rate of a replica that never saw the fleet.
    unknown_fleet_rate: f64,
    /// The live replicas last counted (0: never reached Redis).
    fleet: AtomicU32,
    /// The fallback, and the outage it was built for.
    fallback: Mutex<Fallback>,
    /// When the last slot Redis granted this replica is due (reserved slots are still sent after
    /// Redis fails: the fallback's first slot comes after them).
    last_granted: Mutex<Instant>,
    /// The last outage this replica came back from.
    resumed: AtomicU64,
    /// When the last slot the fallback granted is due (Redis's first slot after the outage comes
    /// after it, and after those its waiting calls will still take).
    last_fallback_slot: Mutex<Instant>,
    /// Calls waiting for a fallback slot: the local bucket has no reservations, its waiters sleep
    /// and take their slot when they wake, even once Redis is back.
    fallback_waiting: AtomicU32,
    /// The shared rate last seen (f64 bits): at the configured rate, nothing is left to climb, so
    /// accepted attempts need no round trip.
    shared_rate: AtomicU64,
    /// When this replica last asked the shared rate to climb (it climbs once per interval at most).
    last_climb: Mutex<Option<Instant>>,
    metrics: QuotaMetrics,
}

impl SharedQuota {
    /// `key`'s quota at `limits` in `store`. `fallback_cap` is `--quota-fallback-rate`;
    /// `unknown_fleet_rate` the rate used before any fleet was seen.
    pub fn new(
        key: &str,
        store: SharedStore,
        limits: QuotaLimits,
        fallback_cap: Option<f64>,
        unknown_fleet_rate: f64,
        metrics: QuotaMetrics,
    ) -> Self {
        let redis = RedisQuota::with_connection(store.connection(), store.prefix(), limits.clone());
        let inner = Arc::new(Inner {
            key: key.to_owned(),
            redis,
            fallback_cap,
            unknown_fleet_rate,
            fleet: AtomicU32::new(0),
            fallback: Mutex::new(Fallback {
                outage: store.outages(),
                quota: Arc::new(LocalQuota::fallback(limits.clone())),
                starts_at: Instant::now(),
            }),
            last_granted: Mutex::new(Instant::now()),
            resumed: AtomicU64::new(store.outages()),
            last_fallback_slot: Mutex::new(Instant::now()),
            fallback_waiting: AtomicU32::new(0),
            shared_rate: AtomicU64::new(limits.rate_per_second.to_bits()),
            last_climb: Mutex::new(None),
            store,
            limits,
            metrics,
        });
        inner.metrics.set_fallback_rate(key, inner.fallback_rate());
        inner
            .store
            .tasks()
            .spawn_until_stopped(heartbeat(Arc::downgrade(&inner)));
        Self { inner }
    }
}

/// The local bucket used during one outage.
struct Fallback {
    outage: u64,
    quota: Arc<LocalQuota>,
    /// Its first slot: one interval after the last slot granted (by Redis or an earlier fallback).
    starts_at: Instant,
}

/// The fallback's rate for a fleet of `live` replicas (0: unknown).
pub fn fallback_rate(rate: f64, live: u32, cap: Option<f64>, unknown_fleet_rate: f64) -> f64 {
    let floor = rate * FALLBACK_FLOOR_SHARE;
    if live == 0 {
        return unknown_fleet_rate.max(floor);
    }
    let share = rate / f64::from(live);
    cap.map_or(share, |cap| share.min(cap)).max(floor)
}

impl Inner {
    fn fallback_rate(&self) -> f64 {
        fallback_rate(
            self.limits.rate_per_second,
            self.fleet.load(Ordering::Relaxed),
            self.fallback_cap,
            self.unknown_fleet_rate,
        )
    }

    /// The fallback for the store's current outage, built at the rate of its start, and when its
    /// first slot is.
    fn fallback(&self) -> (Arc<LocalQuota>, Instant) {
        let outage = self.store.outages();
        let mut fallback = self.fallback.lock();
        if fallback.outage != outage {
            let rate = self.fallback_rate();
            let limits = QuotaLimits {
                rate_per_second: rate,
                burst: 1,
                ..self.limits.clone()
            };
            let interval = Duration::from_secs_f64(1.0 / rate);
            *fallback = Fallback {
                outage,
                quota: Arc::new(LocalQuota::fallback(limits)),
                // After the last slot granted by Redis or by an earlier fallback (a store that
                // flaps, as a cluster does while it promotes a replica, must not restart the
                // fallback's schedule).
                starts_at: ((*self.last_granted.lock()).max(*self.last_fallback_slot.lock())
                    + interval)
                    .max(Instant::now()),
            };
            self.metrics.set_fallback_rate(&self.key, rate);
            tracing::info!(key = %self.key, rate, fleet = self.fleet.load(Ordering::Relaxed), "quota fallback in force");
        }
        (fallback.quota.clone(), fallback.starts_at)
    }

    /// A slot from the fallback, none before its first.
    async fn reserve_fallback(&self, mut request: SlotRequest<'_>) -> Result<Slot, Full> {
        let (fallback, starts_at) = self.fallback();
        let now = Instant::now();
        let until_start = starts_at.saturating_duration_since(now);
        if until_start > request.max_wait {
            return Err(Full {
                bucket: Bucket::Account,
                retry_after: until_start,
                rate: fallback.rate(request.key),
                share: 1.0,
                fallback: true,
            });
        }
        if !until_start.is_zero() {
            tokio::time::sleep(until_start).await;
            request.max_wait -= until_start;
        }
        let slot = {
            let _waiting = Waiting::on(&self.fallback_waiting);
            fallback.reserve(request).await?
        };
        let due = Instant::now() + slot.wait;
        let mut last = self.last_fallback_slot.lock();
        *last = (*last).max(due);
        Ok(Slot {
            queued: slot.queued || !until_start.is_zero(),
            ..slot
        })
    }

    /// How long until the fallback's last slot, counting one interval for each call still
    /// waiting on it.
    fn fallback_drained_in(&self, now: Instant) -> Duration {
        let waiting = self.fallback_waiting.load(Ordering::Relaxed);
        let (fallback, _) = self.fallback();
        let interval = Duration::from_secs_f64(1.0 / fallback.rate(&self.key));
        (*self.last_fallback_slot.lock() + interval * waiting).saturating_duration_since(now)
    }

    fn saw_rate(&self, rate: f64) {
        self.shared_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Whether this accepted attempt should ask the shared rate to climb.
    fn climb_due(&self) -> bool {
        if f64::from_bits(self.shared_rate.load(Ordering::Relaxed)) >= self.limits.rate_per_second {
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

/// Counts a call among the waiting while it lives (a cancelled call stops counting too).
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registers this replica for the key every [`HEARTBEAT_INTERVAL`] while the store answers, for as
/// long as the key's quota is in use.
async fn heartbeat(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let store = &inner.store;
        let registered = inner
            .redis
            .register(&inner.key, store.replica_id(), REGISTRATION_TTL);
        if let Some(live) = store.ask(store.timeout(), registered).await {
            inner.fleet.store(live.max(1), Ordering::Relaxed);
            inner.metrics.set_fleet_replicas(&inner.key, live);
            if store.is_up() {
                inner
                    .metrics
                    .set_fallback_rate(&inner.key, inner.fallback_rate());
            }
        }
    }
}

impl QuotaStore for SharedQuota {
    fn reserve<'a>(&'a self, request: SlotRequest<'a>) -> StoreFuture<'a, Result<Slot, Full>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut request = request;
            let started = Instant::now();
            let bound = request.deadline.saturating_duration_since(started);
            let outage = inner.store.outages();
            let resuming = inner.resumed.load(Ordering::Relaxed) != outage
                && inner.fallback.lock().outage == outage;
            let resume_after = resuming.then(|| inner.fallback_drained_in(started));
            let reserved = inner.redis.reserve_at(request, None, resume_after);
            if let Some(decision) = inner.store.ask(bound, reserved).await {
                if resuming {
                    inner.resumed.store(outage, Ordering::Relaxed);
                }
                let rate = match &decision {
                    Ok(slot) => slot.rate,
                    Err(full) => full.rate,
                };
                inner.saw_rate(rate);
                if let Ok(slot) = &decision {
                    let due = Instant::now() + slot.wait;
                    let mut last = inner.last_granted.lock();
                    *last = (*last).max(due);
                }
                return decision;
            }
            // Redis failed this call, or is down: the fallback gets what is left of its wait.
            request.max_wait = request.max_wait.saturating_sub(started.elapsed());
            inner.reserve_fallback(request).await
        })
    }

    /// Sent in the background: the call already has AWS's answer, and a slow Redis must not hold it
    /// (nor turn it into DEADLINE_EXCEEDED).
    fn throttled<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        let tasks = inner.store.tasks().clone();
        tasks.spawn(async move {
            let store = &inner.store;
            if let Some(rate) = store
                .ask(store.timeout(), inner.redis.throttled(&key))
                .await
            {
                inner.saw_rate(rate);
                return;
            }
            inner.fallback().0.throttled(&key).await;
        });
        Box::pin(std::future::ready(()))
    }

    /// Asks the shared rate to climb at most once per interval, and only while it is below the
    /// configured rate, so most accepted attempts cost no round trip; sent in the background.
    fn accepted<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        let inner = &self.inner;
        if !inner.store.is_up() {
            let (fallback, _) = inner.fallback();
            let key = key.to_owned();
            return Box::pin(async move { fallback.accepted(&key).await });
        }
        if inner.climb_due() {
            let inner = inner.clone();
            let key = key.to_owned();
            let tasks = inner.store.tasks().clone();
            tasks.spawn(async move {
                let store = &inner.store;
                if let Some(rate) = store.ask(store.timeout(), inner.redis.accepted(&key)).await {
                    inner.saw_rate(rate);
                }
            });
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_divides_the_rate_by_the_fleet_under_the_cap_and_above_the_floor() {
        // Two per second over four replicas.
        assert_eq!(fallback_rate(2.0, 4, None, 1.0), 0.5);
        assert_eq!(
            fallback_rate(2.0, 1, None, 1.0),
            2.0,
            "alone, the whole rate"
        );
        assert_eq!(
            fallback_rate(2.0, 1, Some(0.8), 1.0),
            0.8,
            "the flag caps it"
        );
        assert_eq!(
            fallback_rate(2.0, 4, Some(0.8), 1.0),
            0.5,
            "a cap above the share"
        );
        assert_eq!(fallback_rate(2.0, 0, None, 1.0), 1.0, "never saw the fleet");
        assert_eq!(fallback_rate(2.0, 1_000, None, 1.0), 0.02, "the floor");
    }
}
