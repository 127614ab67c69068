//! The upstream's metrics: attempts to Amazon Connect by outcome, their latency, retries made and
//! refused, the rate limiter's waits, refusals and rate, and the breaker's state, per account and
//! region key. Registered when the app builds the routes; recorded by the layers of each route's
//! stack.

use super::last_minute::{LastMinute, Outcome, Outcomes};
use std::{
    sync::{Arc, Weak, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{
        MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge,
        histogram::Histogram,
    },
};

use super::circuit_breaker::Breaker;
use crate::{
    auth::{CallerMetrics, CallerRefusal},
    metrics::{KeyLabels, MetricsRegistry, latency_histogram},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    key: String,
    outcome: String,
    aws_error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The upstream's families; a clone records into the same series. One `Arc`, because a clone is
/// made for every attempt (tower's retry clones its policy, and each attempt its counters).
#[derive(Clone, Debug)]
pub struct UpstreamMetrics(Arc<Families>);

#[derive(Debug)]
pub struct Families {
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: Histogram,
    retries: Counter,
    retries_refused: Family<ReasonLabels, Counter>,
    waits: Counter,
    wait_seconds: Histogram,
    refusals: Family<KeyLabels, Counter>,
    rate: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    breaker_open: Family<KeyLabels, BreakerOpen>,
    /// The callers' series, which the rate limiter records what the quota gave or refused into.
    callers: CallerMetrics,
}

impl UpstreamMetrics {
    pub fn register(registry: &mut MetricsRegistry, callers: CallerMetrics) -> Self {
        let metrics = Families {
            attempts: Family::default(),
            attempt_seconds: latency_histogram(),
            retries: Counter::default(),
            retries_refused: Family::default(),
            waits: Counter::default(),
            wait_seconds: latency_histogram(),
            refusals: Family::default(),
            rate: Family::default(),
            breaker_open: Family::default(),
            callers,
        };
        registry.register(
            "upstream_attempts",
            "Attempts sent to Amazon Connect, by outcome and AWS error code",
            metrics.attempts.clone(),
        );
        registry.register(
            "upstream_attempt_seconds",
            "Latency of one attempt to Amazon Connect, in seconds",
            metrics.attempt_seconds.clone(),
        );
        registry.register(
            "retries",
            "Retries sent to Amazon Connect",
            metrics.retries.clone(),
        );
        registry.register(
            "retries_refused",
            "Retryable failures not retried, by reason (budget, deadline, attempts, queue_wait)",
            metrics.retries_refused.clone(),
        );
        registry.register(
            "rate_limiter_waits",
            "Calls that waited for a rate-limit token",
            metrics.waits.clone(),
        );
        registry.register(
            "rate_limiter_wait_seconds",
            "Time calls waited for a rate-limit token, in seconds",
            metrics.wait_seconds.clone(),
        );
        registry.register(
            "rate_limiter_refusals",
            "Calls refused because no rate-limit token was free in time",
            metrics.refusals.clone(),
        );
        registry.register(
            "rate_limit_per_second",
            "Current (adaptive) request rate allowed to Amazon Connect, per region/identity key",
            metrics.rate.clone(),
        );
        registry.register(
            "circuit_breaker_open",
            "1 while the circuit breaker refuses calls, per region/identity key",
            metrics.breaker_open.clone(),
        );
        Self(Arc::new(metrics))
    }

    /// The attempt counters of one account and region `key` (see [`KeyAttempts`]).
    pub fn key_attempts(&self, key: &str) -> KeyAttempts {
        let ok = self
            .attempts
            .get_or_create(&AttemptLabels {
                key: key.to_owned(),
                outcome: "ok".to_owned(),
                aws_error_code: String::new(),
            })
            .clone();
        KeyAttempts {
            key: key.into(),
            ok,
            metrics: self.clone(),
            last_minute: Arc::default(),
        }
    }

    /// The rate limiter's series of one account and region `key` (see [`KeyRateLimit`]).
    pub fn key_rate_limit(&self, key: &str) -> KeyRateLimit {
        let key = KeyLabels::new(key);
        KeyRateLimit {
            rate: self.rate.get_or_create(&key).clone(),
            key,
            metrics: self.clone(),
        }
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    /// A retryable failure was returned unretried.
    pub fn retry_refused(&self, reason: &'static str) {
        self.retries_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Exports `breaker`'s state under `key` from now on (a route reload's new breaker replaces
    /// the old one's).
    pub fn follow_breaker(&self, key: &str, breaker: &Arc<Breaker>) {
        self.breaker_open
            .get_or_create(&KeyLabels::new(key))
            .follow(breaker);
    }
}

/// A breaker's state as a gauge, 1 while it refuses calls, read from the breaker itself at each
/// scrape: exact whenever it is read (its cool-down ends with no event), and written by nobody.
#[derive(Debug, Default)]
pub(crate) struct BreakerOpen(parking_lot::Mutex<Weak<Breaker>>);

impl BreakerOpen {
    fn follow(&self, breaker: &Arc<Breaker>) {
        *self.0.lock() = Arc::downgrade(breaker);
    }
}

impl TypedMetric for BreakerOpen {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for BreakerOpen {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let open = self
            .0
            .lock()
            .upgrade()
            .is_some_and(|breaker| breaker.is_open());
        encoder.encode_gauge(&i64::from(open))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The attempts to AWS of one account and region key. Its success series is resolved once, when
/// the key's guards are built, since every call touches it (a `Family` lookup hashes the labels and
/// takes a lock); a failure looks its series up.
#[derive(Clone, Debug)]
pub struct KeyAttempts {
    key: Arc<str>,
    ok: Counter,
    metrics: UpstreamMetrics,
    /// The last minute's attempts, for the admin API.
    last_minute: Arc<LastMinute>,
}

impl std::ops::Deref for UpstreamMetrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

impl KeyAttempts {
    /// The attempts of the last minute, by outcome.
    pub fn last_minute(&self) -> Outcomes {
        self.last_minute.totals()
    }

    /// Every attempt since startup, by outcome.
    pub fn since_start(&self) -> Outcomes {
        self.last_minute.since_start()
    }

    /// One attempt succeeded.
    pub fn ok(&self, elapsed: Duration) {
        self.ok.inc();
        self.last_minute.record(Outcome::Ok);
        self.metrics.attempt_seconds.observe(elapsed.as_secs_f64());
    }

    /// One attempt failed (`outcome` is the failure kind).
    pub fn failed(&self, outcome: String, aws_error_code: String, elapsed: Duration) {
        self.last_minute.record(if outcome == "Throttling" {
            Outcome::Throttled
        } else {
            Outcome::Failed
        });
        self.metrics
            .attempts
            .get_or_create(&AttemptLabels {
                key: self.key.to_string(),
                outcome,
                aws_error_code,
            })
            .inc();
        self.metrics.attempt_seconds.observe(elapsed.as_secs_f64());
    }
}

/// The rate limiter's series of one account and region key; its rate gauge, set on every slot, is
/// resolved once.
#[derive(Clone, Debug)]
pub struct KeyRateLimit {
    key: KeyLabels,
    rate: Gauge<f64, AtomicU64>,
    metrics: UpstreamMetrics,
}

impl KeyRateLimit {
    /// The rate in force for the key (adapted to AWS's throttling).
    pub(crate) fn set_rate(&self, rate: f64) {
        self.rate.set(rate);
    }

    /// The rate last set.
    pub(crate) fn rate(&self) -> f64 {
        self.rate.get()
    }

    /// An attempt got its slot, `waited` for it in the queue or not.
    pub(crate) fn granted(&self, waited: Option<Duration>, caller: Option<&str>) {
        if let Some(waited) = waited {
            self.metrics.waits.inc();
            self.metrics.wait_seconds.observe(waited.as_secs_f64());
            self.metrics.callers.waited(caller);
        }
        self.metrics.callers.slot_granted(caller);
    }

    /// No slot within the attempt's wait bound.
    pub(crate) fn refused(&self, caller: Option<&str>) {
        self.metrics.refusals.get_or_create(&self.key).inc();
        self.metrics.callers.refused(caller, CallerRefusal::Quota);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CallerMetrics;

    #[test]
    fn a_key_counts_its_successes_on_one_series_and_each_failure_on_its_own() {
        let mut registry = MetricsRegistry::new();
        let callers = CallerMetrics::register(&mut registry);
        let metrics = UpstreamMetrics::register(&mut registry, callers);
        let exposition = registry.into_exposition();
        assert!(!exposition.render().contains("outcome=\"ok\""));
        let attempts = metrics.key_attempts("us-east-1");
        for _ in 0..3 {
            attempts.ok(Duration::from_millis(1));
        }
        attempts.failed(
            "Throttling".to_owned(),
            "ThrottlingException".to_owned(),
            Duration::ZERO,
        );
        let text = exposition.render();
        assert!(
            text.contains(
                "upstream_attempts_total{key=\"us-east-1\",outcome=\"ok\",aws_error_code=\"\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "key=\"us-east-1\",outcome=\"Throttling\",aws_error_code=\"ThrottlingException\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("connect_facade_upstream_attempt_seconds_count 4"),
            "{text}"
        );
    }
}
