//! Each caller's own `max_rate` (auth file): calls per second past which its calls are refused at
//! once with CALLER_RATE_LIMITED, whatever the quota has left, so one service cannot spend the
//! account's quota past what it was given. governor's GCRA, one bucket per caller with a limit; the
//! burst is one second of the rate (at least 1 call).
//!
//! The limit is per replica, as Envoy's local rate limit is: with N replicas a caller can reach N
//! times its `max_rate` at most, while the account-wide quota (shared through Redis) still holds
//! every replica together.

use std::{collections::HashMap, time::Duration};

use governor::{
    DefaultDirectRateLimiter, RateLimiter,
    clock::{Clock, DefaultClock},
};

use super::adaptive::quota;
use crate::auth::CallerShare;

/// The callers' own limits, by their index (stable across reloads, so not always their position).
pub(crate) struct CallerRates {
    buckets: HashMap<usize, DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl std::fmt::Debug for CallerRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerRates")
            .field("limited", &self.buckets.len())
            .finish()
    }
}

impl CallerRates {
    pub fn new(shares: &[CallerShare]) -> Self {
        let buckets = shares
            .iter()
            .filter_map(|share| {
                let rate = share.max_rate?;
                let burst = rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
                Some((share.index, RateLimiter::direct(quota(rate, burst))))
            })
            .collect();
        Self {
            buckets,
            clock: DefaultClock::default(),
        }
    }

    /// Whether any caller has a limit.
    pub fn any(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// Takes one call from `caller`'s own bucket, or says when the next one is allowed.
    pub(crate) fn check(&self, caller: &CallerShare) -> Result<(), Duration> {
        let Some(bucket) = self.buckets.get(&caller.index) else {
            return Ok(());
        };
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_limited_caller_is_refused_past_its_burst() {
        let shares = [
            CallerShare {
                index: 0,
                max_rate: Some(2.0),
                ..CallerShare::anonymous()
            },
            CallerShare {
                index: 1,
                ..CallerShare::anonymous()
            },
        ];
        let rates = CallerRates::new(&shares);
        assert!(rates.any());
        assert!(rates.check(&shares[0]).is_ok());
        assert!(rates.check(&shares[0]).is_ok());
        let wait = rates.check(&shares[0]).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        for _ in 0..100 {
            assert!(rates.check(&shares[1]).is_ok());
        }
    }
}
