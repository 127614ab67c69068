//! The account's request-rate quota, as a store of GCRA buckets that every attempt takes a slot
//! from: a slot is reserved (now or later) within the attempt's wait bound, or nothing is and the
//! answer says which bucket is full and when a slot frees up.
//!
//! Two stores implement [`QuotaStore`], chosen once at startup (`--quota-store`): [`local::LocalQuota`]
//! (governor, in this process) and [`shared::SharedQuota`] (Redis, every replica, with a local
//! fallback). Both adapt the rate to AWS's throttling ([`adaptive`]). In front of the store,
//! [`fair::FairQueue`] shares the slots among callers when they wait; the rate-limit layer knows only
//! the trait and the queue. The reasoning: the book's "Designs" chapter.

mod account_key;
pub(crate) mod adaptive;
pub(crate) mod caller_rate;
pub(crate) mod fair;
pub(crate) mod local;
mod metrics;
pub mod redis;
pub(crate) mod shared;
pub(crate) mod stores;

use std::{future::Future, pin::Pin, time::Duration};

use tokio::time::Instant;

pub use account_key::AccountKey;
pub use adaptive::AdaptiveConfig;
pub(crate) use metrics::QuotaMetrics;

/// The limits a store enforces for each quota key.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaLimits {
    /// Sustained requests per second to AWS for the account and region.
    pub rate_per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
    /// An optional sub-limit per Connect instance: (requests per second, burst).
    pub per_instance: Option<(f64, u32)>,
    /// How the account-wide rate follows AWS's throttling.
    pub adaptive: AdaptiveConfig,
}

impl QuotaLimits {
    /// The same limits at another account-wide rate (the fallback's), the burst scaled with it (at
    /// least 1): N replicas on half the rate each must not send N full bursts at once.
    pub fn at_rate(&self, rate_per_second: f64) -> Self {
        let ratio = rate_per_second / self.rate_per_second;
        Self {
            rate_per_second,
            burst: ((f64::from(self.burst) * ratio).round() as u32).max(1),
            ..self.clone()
        }
    }
}

/// One attempt asking for a slot.
#[derive(Clone, Copy, Debug)]
pub struct SlotRequest<'a> {
    /// The account and region's bucket.
    pub key: &'a str,
    pub instance_id: &'a str,
    /// The longest the attempt may wait for its slot.
    pub max_wait: Duration,
    /// The call's deadline: no round trip to a store outlasts it.
    pub deadline: Instant,
    /// Who asks, for a shared store to divide the account's rate among the callers of every
    /// replica ([`fair`]); `None` without an auth file. The local store ignores it: this
    /// replica's fair queue is all the sharing one process needs.
    pub caller: Option<CallerWeight<'a>>,
}

/// A caller as the fleet-wide shares see it.
#[derive(Clone, Copy, Debug)]
pub struct CallerWeight<'a> {
    pub name: &'a str,
    pub weight: f64,
}

/// Which bucket had no slot in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Account,
    Instance,
    /// The caller is over its fleet-wide share and no slot is free now to lend it.
    Share,
}

/// A slot, reserved: send after `wait`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    pub wait: Duration,
    /// Whether the slot was not free at once (the attempt waited, or must wait, for it).
    pub queued: bool,
    /// The account-wide rate the bucket runs at now (adapted to throttling).
    pub rate: f64,
}

/// No slot within the wait bound; nothing was reserved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Full {
    pub bucket: Bucket,
    /// When a slot will be free.
    pub retry_after: Duration,
    pub rate: f64,
    /// The caller's fleet-wide share of `rate` (0..1; 1 without sharing among callers).
    pub share: f64,
    /// Decided by a shared store's local fallback, at this replica's share of the quota.
    pub fallback: bool,
}

/// What the store methods return: boxed, so the layer can hold any store as `dyn QuotaStore`.
pub(crate) type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the quota's buckets live.
pub trait QuotaStore: Send + Sync + 'static {
    /// Reserves a slot in the account's bucket (and the instance's, with a sub-limit) within
    /// `request.max_wait`, or says when one will be free. A store never fails a call by itself.
    fn reserve<'a>(&'a self, request: SlotRequest<'a>) -> StoreFuture<'a, Result<Slot, Full>>;

    /// AWS throttled an attempt sent under `key`: lower the account-wide rate.
    fn throttled<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// AWS answered an attempt under `key` without throttling: the rate may climb back.
    fn accepted<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_rate_scales_the_burst_down_but_never_to_zero() {
        let limits = QuotaLimits {
            rate_per_second: 2.0,
            burst: 4,
            per_instance: None,
            adaptive: AdaptiveConfig {
                decrease_factor: 0.7,
                increase_per_second: 0.1,
            },
        };
        assert_eq!(limits.at_rate(1.0).burst, 2);
        assert_eq!(limits.at_rate(0.1).burst, 1);
        assert_eq!(limits.at_rate(1.0).rate_per_second, 1.0);
    }
}
