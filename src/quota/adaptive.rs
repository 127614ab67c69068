//! The account-wide bucket's rate adapts to what AWS actually allows (AIMD, as TCP does): each
//! ThrottlingException cuts the rate by a factor, at most once per [`DECREASE_INTERVAL`] so a burst of
//! throttles in flight counts once; every second without throttling it climbs back by a fixed step.
//!
//! To settle *under* AWS's real limit instead of sawing through it, the climb stops just below the rate
//! that was last throttled (the ceiling); only after [`CEILING_RESET`] without any throttle does it
//! probe up to the configured rate again, so a raised AWS quota is found in time.
//!
//! governor's buckets have a fixed rate, so a change builds a new bucket, started empty: a fresh full
//! burst right after a throttle would be exactly the wrong thing to send.
//!
//! This is the local store's rate. The Redis store applies the same rule, with these same constants,
//! in its scripts (`redis.rs`), so that every replica shares one rate.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;

/// governor's quota for a rate and burst.
pub fn quota(rate_per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate_per_second.max(f64::MIN_POSITIVE));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// Throttles closer together than this are one signal.
pub const DECREASE_INTERVAL: Duration = Duration::from_millis(500);
/// How often the rate may climb.
pub const INCREASE_INTERVAL: Duration = Duration::from_secs(1);
/// Quiet time after which the climb may pass the last throttled rate again.
pub const CEILING_RESET: Duration = Duration::from_secs(30);
/// The ceiling sits this fraction below the last throttled rate.
pub const CEILING_MARGIN: f64 = 0.95;

/// Adaptation knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Factor applied to the rate on a throttle (1 disables adaptation).
    pub decrease_factor: f64,
    /// Requests/s added each second without a throttle.
    pub increase_per_second: f64,
}

impl AdaptiveConfig {
    /// The lowest rate throttling may bring `configured` to: a twentieth of it, so a trickle keeps
    /// probing AWS.
    pub fn floor(&self, configured: f64) -> f64 {
        configured / 20.0
    }
}

struct State {
    limiter: Arc<DefaultDirectRateLimiter>,
    rate: f64,
    ceiling: f64,
    last_change: Instant,
    last_throttle: Option<Instant>,
}

/// The account-wide bucket, whose rate adapts.
pub struct AdaptiveBucket {
    configured: f64,
    floor: f64,
    burst: u32,
    config: AdaptiveConfig,
    state: RwLock<State>,
}

impl AdaptiveBucket {
    pub fn new(rate_per_second: f64, burst: u32, config: AdaptiveConfig) -> Self {
        Self {
            configured: rate_per_second,
            floor: config.floor(rate_per_second),
            burst,
            config,
            state: RwLock::new(State {
                limiter: Arc::new(RateLimiter::direct(quota(rate_per_second, burst))),
                rate: rate_per_second,
                ceiling: rate_per_second,
                last_change: Instant::now(),
                last_throttle: None,
            }),
        }
    }

    /// The current bucket.
    pub fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        self.state.read().limiter.clone()
    }

    /// The current rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.state.read().rate
    }

    /// Spends the burst but one slot: one call may go now, the next one interval later.
    pub fn drain(&self) {
        if let Some(spent) = NonZeroU32::new(self.burst.saturating_sub(1)) {
            let _ = self.limiter().check_n(spent);
        }
    }

    fn set_rate(&self, state: &mut State, rate: f64, now: Instant) {
        let limiter = RateLimiter::direct(quota(rate, self.burst));
        let _ = limiter.check_n(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN));
        state.limiter = Arc::new(limiter);
        state.rate = rate;
        state.last_change = now;
    }

    /// AWS answered ThrottlingException.
    pub fn on_throttled(&self) {
        self.throttled_at(Instant::now());
    }

    /// AWS answered without throttling.
    pub fn on_accepted(&self) {
        self.accepted_at(Instant::now());
    }

    /// A throttle at `now`: the clock is a parameter, so tests say when things happen.
    fn throttled_at(&self, now: Instant) {
        if self.config.decrease_factor >= 1.0 {
            return;
        }
        let mut state = self.state.write();
        if state
            .last_throttle
            .is_some_and(|at| now - at < DECREASE_INTERVAL)
        {
            return;
        }
        state.last_throttle = Some(now);
        state.ceiling = state.rate * CEILING_MARGIN;
        let rate = (state.rate * self.config.decrease_factor).max(self.floor);
        tracing::warn!(
            from = state.rate,
            to = rate,
            "AWS throttled: lowering the request rate"
        );
        self.set_rate(&mut state, rate, now);
    }

    /// An accepted call at `now`.
    fn accepted_at(&self, now: Instant) {
        {
            let state = self.state.read();
            if state.rate >= self.configured || now - state.last_change < INCREASE_INTERVAL {
                return;
            }
        }
        let mut state = self.state.write();
        if now - state.last_change < INCREASE_INTERVAL {
            return;
        }
        let quiet = state
            .last_throttle
            .is_none_or(|at| now - at >= CEILING_RESET);
        let ceiling = if quiet {
            self.configured
        } else {
            state.ceiling
        };
        let rate = (state.rate + self.config.increase_per_second).min(ceiling.max(state.rate));
        if rate > state.rate {
            tracing::debug!(from = state.rate, to = rate, "raising the request rate");
            self.set_rate(&mut state, rate, now);
        } else {
            state.last_change = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> AdaptiveBucket {
        AdaptiveBucket::new(
            10.0,
            2,
            AdaptiveConfig {
                decrease_factor: 0.5,
                increase_per_second: 1.0,
            },
        )
    }

    #[test]
    fn a_throttle_halves_the_rate_once_per_interval() {
        let bucket = bucket();
        let start = Instant::now();
        bucket.throttled_at(start);
        bucket.throttled_at(start + DECREASE_INTERVAL / 2);
        assert_eq!(bucket.rate(), 5.0);
        bucket.throttled_at(start + DECREASE_INTERVAL);
        assert_eq!(bucket.rate(), 2.5);
    }

    #[test]
    fn the_new_bucket_starts_empty() {
        let bucket = bucket();
        bucket.on_throttled();
        assert!(bucket.limiter().check().is_err());
    }

    #[test]
    fn the_rate_never_falls_below_the_floor() {
        let bucket = bucket();
        let start = Instant::now();
        for n in 0..20 {
            bucket.throttled_at(start + DECREASE_INTERVAL * n);
        }
        assert_eq!(bucket.rate(), 0.5);
    }

    #[test]
    fn the_climb_stops_below_the_last_throttled_rate() {
        let bucket = bucket();
        let start = Instant::now();
        bucket.throttled_at(start); // 10 → 5, ceiling 9.5
        for n in 1..=10 {
            bucket.accepted_at(start + INCREASE_INTERVAL * n);
        }
        assert_eq!(bucket.rate(), 9.5);
    }

    #[test]
    fn a_long_quiet_period_lets_it_climb_to_the_configured_rate() {
        let bucket = bucket();
        let start = Instant::now();
        bucket.throttled_at(start);
        let quiet = start + CEILING_RESET;
        for n in 0..10 {
            bucket.accepted_at(quiet + INCREASE_INTERVAL * n);
        }
        assert_eq!(bucket.rate(), 10.0);
    }

    #[test]
    fn a_factor_of_one_disables_adaptation() {
        let bucket = AdaptiveBucket::new(
            10.0,
            2,
            AdaptiveConfig {
                decrease_factor: 1.0,
                increase_per_second: 1.0,
            },
        );
        bucket.on_throttled();
        assert_eq!(bucket.rate(), 10.0);
    }
}
