//! Holds every attempt to the account's quota: Amazon Connect's quota is per account and region (by
//! default 2 requests per second with a burst of 5 for most operations), optionally with a sub-limit per
//! instance. Every attempt takes a slot, retries included, from the [`QuotaStore`] chosen at startup
//! (this process's buckets, or Redis shared by every replica); the layer knows only the trait.
//!
//! A call whose slot is free within its wait bound (its deadline, and the configured queue wait from
//! the call's arrival: a retry waits only for what is left of it, so no answer comes later than
//! `--max-queue-wait` plus the store's timeout and AWS's own time) waits for it, in its caller's lane ([`crate::quota::fair`]: callers share the waiting slots by weight,
//! not by arrival); otherwise it is refused at once with RESOURCE_EXHAUSTED, a RetryInfo saying when
//! a slot will be free and a QuotaFailure naming the limit, and AWS is not called.
//!
//! The account-wide rate adapts to AWS's throttling (the store's [`crate::quota::adaptive`] rule), so a
//! configured rate above the real quota settles just under it. tower's own `RateLimit` is not `Clone`,
//! cannot wait with a deadline and has no shared store, hence this small layer.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{CallFuture, KeyRateLimit, UpstreamCall};
use crate::{
    error::{CallError, RatePolicy},
    lifecycle::Tasks,
    quota::{AccountKey, Bucket, Full, QuotaLimits, QuotaStore, fair::FairQueue},
    upstream::{Association, UpstreamErrorKind},
};

/// Rate-limit knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// The buckets' limits.
    pub limits: QuotaLimits,
    /// Longest a call waits for a slot (never beyond its deadline).
    pub max_queue_wait: Duration,
}

/// What the layer shares between its clones.
struct Limiter {
    key: AccountKey,
    store: Arc<dyn QuotaStore>,
    fair: FairQueue,
    limits: QuotaLimits,
    max_queue_wait: Duration,
    metrics: KeyRateLimit,
}

impl Limiter {
    /// Takes a slot, waiting for it in the caller's lane while the deadline and the queue bound
    /// allow.
    async fn acquire(&self, call: &UpstreamCall) -> Result<(), CallError> {
        let started = Instant::now();
        let give_up_at = (call.arrived + self.max_queue_wait).min(call.deadline);
        let instance_id = call.request.instance_id();
        let caller = call.caller.name.as_deref();
        let decision = self
            .fair
            .acquire(&call.caller, instance_id, give_up_at, call.deadline)
            .await;
        match decision {
            Ok(slot) => {
                self.metrics.set_rate(slot.rate);
                if !slot.wait.is_zero() {
                    tokio::time::sleep(slot.wait).await;
                }
                let waited = slot.queued.then(|| started.elapsed());
                self.metrics.granted(waited, caller);
                Ok(())
            }
            Err(full) => {
                self.metrics.set_rate(full.rate);
                self.metrics.refused(caller);
                let (subject, description, policy) = match full.bucket {
                    Bucket::Instance => {
                        let (rate, burst) = self.limits.per_instance.unwrap_or_default();
                        let policy = RatePolicy {
                            name: "instance",
                            rate,
                            burst,
                        };
                        (
                            format!("instance:{instance_id}"),
                            self.instance_limit(),
                            policy,
                        )
                    }
                    Bucket::Share => {
                        let name = call.caller.label();
                        let policy = RatePolicy {
                            name: "caller",
                            rate: full.rate * full.share,
                            burst: 1,
                        };
                        let description = format!(
                            "caller `{name}` is over its fair share of the account's quota across \
                             the fleet: {:.2} requests/s now (weight {} of the active callers'), \
                             and no unused slot was free to lend",
                            full.rate * full.share,
                            call.caller.weight
                        );
                        (format!("caller:{name}"), description, policy)
                    }
                    Bucket::Account => {
                        let policy = RatePolicy {
                            name: "account",
                            rate: full.rate,
                            burst: self.limits.burst,
                        };
                        let subject = self.key.to_string();
                        (subject, self.account_limit(&full), policy)
                    }
                };
                tracing::debug!(%subject, wait = ?full.retry_after, "rate limited");
                Err(CallError::RateLimited {
                    subject,
                    description,
                    retry_after: Some(full.retry_after),
                    policy: Some(policy),
                })
            }
        }
    }

    fn account_limit(&self, full: &Full) -> String {
        let limits = &self.limits;
        let mut description = format!(
            "the facade sends at most {} requests/s (burst {}) to Amazon Connect for this account and \
             region",
            limits.rate_per_second, limits.burst
        );
        let rate = full.rate;
        if full.fallback {
            description.push_str(&format!(
                " (now {rate:.2}/s from this replica: the quota store the replicas share is \
                 unreachable)"
            ));
        } else if rate < limits.rate_per_second {
            description.push_str(&format!(" (now {rate:.2}/s after AWS throttling)"));
        }
        description
    }

    fn instance_limit(&self) -> String {
        let (rate, burst) = self.limits.per_instance.unwrap_or_default();
        format!("the facade sends at most {rate} requests/s (burst {burst}) per Connect instance")
    }
}

/// Adds the rate limit in front of a service.
#[derive(Clone)]
pub(crate) struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

/// What the limiter of one account and region is doing now, for the admin API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimiterView {
    /// The rate in force (the configured one, or lower once AWS throttled).
    pub rate_per_second: f64,
    pub burst: u32,
    /// Attempts waiting in the fair queue for their slot.
    pub waiting: usize,
    /// How long an attempt arriving now would wait for its slot.
    pub predicted_wait: Duration,
}

impl RateLimitLayer {
    /// What the limiter is doing now.
    pub fn view(&self) -> LimiterView {
        let limiter = &self.limiter;
        LimiterView {
            rate_per_second: limiter.metrics.rate(),
            burst: limiter.limits.burst,
            waiting: limiter.fair.waiting(),
            predicted_wait: limiter.fair.predicted_wait(),
        }
    }

    /// Attempts waiting now, by caller index.
    pub fn waiting_by_caller(&self) -> Vec<usize> {
        self.limiter.fair.waiting_by_caller()
    }

    /// `key` names the account and region's bucket in `store`.
    pub fn new(
        key: &AccountKey,
        store: Arc<dyn QuotaStore>,
        config: &RateLimitConfig,
        metrics: KeyRateLimit,
        tasks: Tasks,
    ) -> Self {
        metrics.set_rate(config.limits.rate_per_second);
        Self {
            limiter: Arc::new(Limiter {
                key: key.clone(),
                fair: FairQueue::new(
                    key.as_str(),
                    store.clone(),
                    config.limits.rate_per_second,
                    tasks,
                ),
                store,
                limits: config.limits.clone(),
                max_queue_wait: config.max_queue_wait,
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
            limiter: self.limiter.clone(),
        }
    }
}

/// The rate-limited service.
#[derive(Clone)]
pub(crate) struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> Service<UpstreamCall> for RateLimit<S>
where
    S: Service<UpstreamCall, Response = Association, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Association;
    type Error = CallError;
    type Future = CallFuture;

    /// Always ready: waiting for the inner service happens inside the call, after a slot is taken,
    /// so that the outer overload bound counts waiting calls instead of shedding them.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: UpstreamCall) -> Self::Future {
        let limiter = self.limiter.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            limiter.acquire(&call).await?;
            let outcome = inner.oneshot(call).await;
            match &outcome {
                Err(CallError::Upstream(e)) if e.kind == UpstreamErrorKind::Throttling => {
                    limiter.store.throttled(limiter.key.as_str()).await;
                }
                Err(CallError::Upstream(e)) if e.answered_by_aws() => {
                    limiter.store.accepted(limiter.key.as_str()).await;
                }
                Ok(_) => limiter.store.accepted(limiter.key.as_str()).await,
                Err(_) => {}
            }
            outcome
        })
    }
}
