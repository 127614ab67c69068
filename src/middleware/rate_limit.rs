//! A token bucket in front of Amazon Connect, whose quota is per account and region (by default 2
//! requests per second with a burst of 5 for most operations). One bucket per region and AWS identity,
//! optionally with a sub-limit per instance. Every attempt draws a token, retries included.
//!
//! A call that finds no token waits for one only while its deadline allows and for at most the
//! configured queue wait; otherwise it is refused at once with RESOURCE_EXHAUSTED, a RetryInfo saying
//! when a token will be free and a QuotaFailure naming the limit, and AWS is not called.
//!
//! The account-wide rate adapts to AWS's throttling ([`super::adaptive`]), so a configured rate above
//! the real quota settles just under it.
//!
//! governor provides the buckets (GCRA, lock-free for the shared bucket); tower's own `RateLimit` is not
//! `Clone` and cannot wait with a deadline, hence this small layer.

use std::{
    num::NonZeroU32,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{
    CallFuture, UpstreamCall,
    adaptive::{AdaptiveBucket, AdaptiveConfig},
};
use crate::{
    metrics::Metrics,
    status::CallError,
    upstream::{Association, UpstreamErrorKind},
};

/// Keyed buckets are pruned of idle instances past this many, so arbitrary instance ids sent by callers
/// cannot grow memory without bound.
const MAX_TRACKED_INSTANCES: usize = 10_000;

/// Rate-limit knobs.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// Sustained requests per second to AWS for the whole process (account and region).
    pub rate_per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
    /// Optional sustained rate per Connect instance, below the global one.
    pub instance_rate_per_second: Option<f64>,
    /// Burst of the per-instance limit.
    pub instance_burst: u32,
    /// Longest a call waits for a token (never beyond its deadline).
    pub max_queue_wait: Duration,
    /// How the account-wide rate follows AWS's throttling.
    pub adaptive: AdaptiveConfig,
}

pub(super) fn quota(rate_per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rate_per_second.max(f64::MIN_POSITIVE));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// The buckets and how to explain a refusal.
struct Buckets {
    key: String,
    global: AdaptiveBucket,
    global_description: String,
    per_instance: Option<(DefaultKeyedRateLimiter<String>, String)>,
    max_queue_wait: Duration,
    clock: DefaultClock,
    metrics: Arc<Metrics>,
}

/// No token now: which limit, and how long until one is free.
struct Refusal {
    subject: String,
    description: String,
    wait: Duration,
}

impl Buckets {
    fn try_acquire(&self, instance_id: &str) -> Result<(), Refusal> {
        if let Some((limiter, description)) = &self.per_instance {
            if limiter.len() > MAX_TRACKED_INSTANCES {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&instance_id.to_owned()) {
                return Err(Refusal {
                    subject: format!("instance:{instance_id}"),
                    description: description.clone(),
                    wait: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        self.global.limiter().check().map_err(|not_until| Refusal {
            subject: format!("region:{}", self.key),
            description: format!(
                "{} (now {:.2}/s after AWS throttling)",
                self.global_description,
                self.global.rate()
            ),
            wait: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// AWS answered without throttling: the adaptive rate may climb.
    fn accepted(&self) {
        self.global.on_accepted();
        self.metrics.set_rate_limit(&self.key, self.global.rate());
    }

    /// Takes a token, waiting while the deadline and the queue bound allow.
    async fn acquire(&self, call: &UpstreamCall) -> Result<(), CallError> {
        let started = Instant::now();
        let give_up_at = (started + self.max_queue_wait).min(call.deadline);
        loop {
            let refusal = match self.try_acquire(call.request.instance_id()) {
                Ok(()) => {
                    if started.elapsed() > Duration::ZERO {
                        self.metrics.rate_limiter_waited(started.elapsed());
                    }
                    return Ok(());
                }
                Err(refusal) => refusal,
            };
            if Instant::now() + refusal.wait > give_up_at {
                tracing::debug!(subject = %refusal.subject, wait = ?refusal.wait, "rate limited");
                self.metrics.rate_limiter_refused();
                return Err(CallError::RateLimited {
                    subject: refusal.subject,
                    description: refusal.description,
                    retry_after: Some(refusal.wait),
                });
            }
            tokio::time::sleep(refusal.wait).await;
        }
    }
}

/// Adds the rate limit in front of a service.
#[derive(Clone)]
pub struct RateLimitLayer {
    buckets: Arc<Buckets>,
}

impl RateLimitLayer {
    /// `key` names the shared bucket (region and AWS identity).
    pub fn new(key: &str, config: &RateLimitConfig, metrics: Arc<Metrics>) -> Self {
        metrics.set_rate_limit(key, config.rate_per_second);
        let per_instance = config.instance_rate_per_second.map(|rate| {
            (
                RateLimiter::keyed(quota(rate, config.instance_burst)),
                format!(
                    "the facade sends at most {rate} requests/s (burst {}) per Connect instance",
                    config.instance_burst
                ),
            )
        });
        Self {
            buckets: Arc::new(Buckets {
                key: key.to_owned(),
                global: AdaptiveBucket::new(
                    config.rate_per_second,
                    config.burst,
                    config.adaptive.clone(),
                ),
                global_description: format!(
                    "the facade sends at most {} requests/s (burst {}) to Amazon Connect for this \
                     account and region",
                    config.rate_per_second, config.burst
                ),
                per_instance,
                max_queue_wait: config.max_queue_wait,
                clock: DefaultClock::default(),
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            buckets: self.buckets.clone(),
        }
    }
}

/// The rate-limited service.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    buckets: Arc<Buckets>,
}

impl<S> Service<UpstreamCall> for RateLimit<S>
where
    S: Service<UpstreamCall, Response = Association, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Association;
    type Error = CallError;
    type Future = CallFuture;

    /// Always ready: waiting for the inner service happens inside the call, after a token is taken,
    /// so that the outer overload bound counts waiting calls instead of shedding them.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: UpstreamCall) -> Self::Future {
        let buckets = self.buckets.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            buckets.acquire(&call).await?;
            let outcome = inner.oneshot(call).await;
            match &outcome {
                Err(CallError::Upstream(e)) if e.kind == UpstreamErrorKind::Throttling => {
                    buckets.global.on_throttled();
                    buckets
                        .metrics
                        .set_rate_limit(&buckets.key, buckets.global.rate());
                }
                Err(CallError::Upstream(e)) if e.answered_by_aws() => buckets.accepted(),
                Ok(_) => buckets.accepted(),
                Err(_) => {}
            }
            outcome
        })
    }
}
