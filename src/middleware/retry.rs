//! The one retry layer: tower's `Retry` with this policy.
//!
//! - Only what may succeed on a second try is retried: ThrottlingException, InternalServiceException
//!   and other 5xx, and transport failures (refused, reset, attempt timeout). Never another 4xx.
//! - Backoff is exponential with "equal jitter" (half fixed, half random), so callers that failed
//!   together do not retry together; throttling starts from a longer base than transient errors,
//!   because the quota refills slowly.
//! - Deadline-aware: no backoff is started that would end past the call's deadline; the last error is
//!   returned instead, while the caller can still use it.
//! - Budgeted (tower's `TpsBudget`): retries may add at most a set share of the calls over a sliding
//!   window, plus a small floor, so a failing AWS sees little more than its normal load.
//! - Bounded wait: a retry's slot must come within what is left of the call's `--max-queue-wait`;
//!   when it cannot, the caller gets the AWS failure that was being retried, not a quota refusal
//!   for an attempt it never asked for.
//! - Every attempt reuses the call's ClientToken, so a retry of an applied but unanswered call is
//!   replayed by AWS, not applied twice.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::time::Instant;
use tower::{
    retry::{
        Policy,
        budget::{Budget, TpsBudget},
    },
    util::rng::{HasherRng, Rng},
};

use super::{UpstreamCall, UpstreamMetrics};
use crate::{
    error::CallError,
    upstream::{Association, UpstreamErrorKind},
};

/// Retry knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// First backoff after a transient failure (5xx, transport).
    pub base_delay: Duration,
    /// First backoff after ThrottlingException.
    pub throttled_base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
    /// Retries allowed as a share of calls over the budget window (0.2 = 20%).
    pub budget_ratio: f32,
    /// Retries per second always allowed, however few the calls.
    pub budget_min_per_second: u32,
    /// The budget's sliding window.
    pub budget_window: Duration,
}

/// Whether a failure may succeed if tried again.
pub fn is_retryable(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Upstream(e) if matches!(
            e.kind,
            UpstreamErrorKind::Throttling
                | UpstreamErrorKind::ServiceUnavailable
                | UpstreamErrorKind::Transport
        )
    )
}

/// The policy tower's `Retry` consults after each attempt.
#[derive(Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
    metrics: UpstreamMetrics,
    budget: Arc<TpsBudget>,
    rng: HasherRng,
    /// The AWS failure a pending retry follows: when the retry cannot get a slot within what is
    /// left of the call's wait, the caller gets this answer (what AWS said), not the quota's
    /// refusal. tower's `Retry` clones its policy for every call, so this is the call's own.
    retried_failure: Option<CallError>,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig, metrics: UpstreamMetrics) -> Self {
        let budget = TpsBudget::new(
            config
                .budget_window
                .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            config.budget_min_per_second,
            config.budget_ratio.clamp(0.0, 10.0),
        );
        Self {
            config,
            metrics,
            budget: Arc::new(budget),
            rng: HasherRng::default(),
            retried_failure: None,
        }
    }

    /// The backoff before attempt `attempts + 1`: exponential from the base for this failure,
    /// capped, with equal jitter.
    pub fn backoff(&mut self, throttled: bool, attempts: u32) -> Duration {
        let base = if throttled {
            self.config.throttled_base_delay
        } else {
            self.config.base_delay
        };
        let exponent = attempts.saturating_sub(1).min(16);
        let ceiling = base
            .saturating_mul(1 << exponent)
            .min(self.config.max_delay);
        let half = ceiling / 2;
        half + half.mul_f64(self.rng.next_f64())
    }
}

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Policy<UpstreamCall, Association, CallError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        call: &mut UpstreamCall,
        result: &mut Result<Association, CallError>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        if matches!(error, CallError::RateLimited { .. })
            && let Some(failure) = self.retried_failure.take()
        {
            self.metrics.retry_refused("queue_wait");
            *result = Err(failure);
            return None;
        }
        if !is_retryable(error) {
            return None;
        }
        let attempts = call.attempts();
        if attempts >= self.config.max_attempts {
            self.metrics.retry_refused("attempts");
            return None;
        }
        let throttled =
            matches!(error, CallError::Upstream(e) if e.kind == UpstreamErrorKind::Throttling);
        let delay = self.backoff(throttled, attempts);
        if Instant::now() + delay >= call.deadline {
            tracing::debug!(
                attempts,
                ?delay,
                "no retry: the backoff would pass the deadline"
            );
            self.metrics.retry_refused("deadline");
            return None;
        }
        if !self.budget.withdraw() {
            tracing::warn!(attempts, "no retry: the retry budget is spent");
            self.metrics.retry_refused("budget");
            return None;
        }
        self.metrics.retry();
        // The one line a failed attempt gets at `info`: what failed, and what happens next.
        let (aws_error_code, aws_request_id) = match error {
            CallError::Upstream(e) => (e.aws_code.as_deref(), e.request_id.as_deref()),
            _ => (None, None),
        };
        tracing::info!(
            attempts,
            backoff_ms = delay.as_millis() as u64,
            throttled,
            error = %error,
            aws_error_code,
            aws_request_id,
            client_token = call.request.client_token().as_str(),
            "retrying"
        );
        self.retried_failure = Some(error.clone());
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, call: &UpstreamCall) -> Option<UpstreamCall> {
        // tower clones before each attempt; the first one is where a call enters the budget.
        if call.attempts() == 0 {
            self.budget.deposit();
        }
        Some(call.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unregistered() -> UpstreamMetrics {
        let mut registry = crate::metrics::MetricsRegistry::new();
        let callers = crate::auth::CallerMetrics::register(&mut registry);
        UpstreamMetrics::register(&mut registry, callers)
    }
    use crate::upstream::UpstreamError;

    fn config() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            throttled_base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 1,
            budget_window: Duration::from_secs(10),
        }
    }

    fn failure(kind: UpstreamErrorKind) -> CallError {
        CallError::Upstream(UpstreamError {
            kind,
            aws_code: None,
            message: String::new(),
            request_id: None,
        })
    }

    #[test]
    fn only_throttling_5xx_and_transport_failures_are_retryable() {
        use UpstreamErrorKind::*;
        for kind in [Throttling, ServiceUnavailable, Transport] {
            assert!(is_retryable(&failure(kind)), "{kind:?}");
        }
        for kind in [
            InvalidParameter,
            InvalidRequest,
            ResourceNotFound,
            AccessDenied,
            Credentials,
            InvalidResponse,
            Unrecognized,
        ] {
            assert!(!is_retryable(&failure(kind)), "{kind:?}");
        }
        assert!(!is_retryable(&CallError::Overloaded));
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let mut policy = RetryPolicy::new(config(), unregistered());
        for _ in 0..100 {
            let first = policy.backoff(false, 1);
            assert!((25..=50).contains(&first.as_millis()), "{first:?}");
            let second = policy.backoff(false, 2);
            assert!((50..=100).contains(&second.as_millis()), "{second:?}");
            let throttled = policy.backoff(true, 1);
            assert!(
                (250..=500).contains(&throttled.as_millis()),
                "{throttled:?}"
            );
            let capped = policy.backoff(true, 12);
            assert!((1000..=2000).contains(&capped.as_millis()), "{capped:?}");
        }
    }

    #[tokio::test]
    async fn a_retry_refused_a_slot_returns_the_aws_failure_it_was_retrying() {
        use crate::{
            auth::CallerShare,
            domain::{AssociationRequest, RehydrationType, UnvalidatedRequest},
        };
        let request = AssociationRequest::parse(UnvalidatedRequest {
            instance_id: "instance".into(),
            initial_contact_id: "new-chat".into(),
            rehydration_type: Some(RehydrationType::FromSegment),
            source_contact_id: "C2".into(),
            client_token: String::new(),
        })
        .unwrap();
        let mut call = UpstreamCall::new(
            Arc::new(request),
            Instant::now() + Duration::from_secs(30),
            CallerShare::anonymous(),
        );
        let mut policy = RetryPolicy::new(config(), unregistered());
        let mut throttled = Err(failure(UpstreamErrorKind::Throttling));
        call.attempts.store(1, std::sync::atomic::Ordering::Relaxed);
        assert!(policy.retry(&mut call, &mut throttled).is_some());

        let mut refused = Err(CallError::RateLimited {
            subject: "region:us-east-1".into(),
            description: String::new(),
            retry_after: None,
            policy: None,
        });
        assert!(policy.retry(&mut call, &mut refused).is_none());
        assert!(
            matches!(&refused, Err(CallError::Upstream(e)) if e.kind == UpstreamErrorKind::Throttling),
            "{refused:?}"
        );
    }
}
