//! What stands between a validated call and Amazon Connect: tower layers that protect callers and the
//! account's AWS quota. Assembled once by [`UpstreamStack::new`], outermost first, in request order:
//!
//! 1. load shedding over a global concurrency limit: a bound on calls in flight **or waiting**; past it a
//!    call is refused at once (RESOURCE_EXHAUSTED), so no queue is unbounded;
//! 2. [`retry`]: the one layer that retries (the SDK's own retries are off), deadline-aware and held to a
//!    retry budget; every attempt of a call reuses the call's ClientToken;
//! 3. [`circuit_breaker`]: fails fast while Amazon Connect is failing;
//! 4. [`rate_limit`]: a slot of the account's quota for every attempt (retries too), from the
//!    [`crate::quota`] store (this process's, or Redis shared by every replica), waited for only while
//!    the call's deadline allows, and shared fairly among the callers waiting
//!    ([`crate::quota::fair`]);
//! 5. a global concurrency limit on calls actually in flight to AWS;
//! 6. the SDK call itself, one attempt.
//!
//! The request type is [`UpstreamCall`], cheap to clone, because tower's retry must clone requests and
//! tonic's own HTTP request cannot be cloned.

pub(crate) mod circuit_breaker;
pub(crate) mod last_minute;
mod metrics;
pub(crate) mod rate_limit;
pub(crate) mod retry;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
};

use tokio::time::Instant;
use tower::{
    BoxError, Service, ServiceBuilder, ServiceExt, limit::GlobalConcurrencyLimitLayer,
    load_shed::LoadShedLayer, retry::RetryLayer, util::BoxCloneSyncService,
};
use tracing::Instrument;

use crate::{
    auth::CallerShare,
    domain::AssociationRequest,
    error::CallError,
    lifecycle::Tasks,
    quota::{AccountKey, QuotaStore},
    telemetry,
    upstream::{Association, ConnectUpstream},
};

pub(crate) use circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
pub(crate) use metrics::{KeyAttempts, KeyRateLimit, UpstreamMetrics};
pub(crate) use rate_limit::{RateLimitConfig, RateLimitLayer};
pub(crate) use retry::{RetryConfig, RetryPolicy};

/// One call on its way to AWS: the request, its deadline, who it is for, and a count of the
/// attempts made for it.
#[derive(Clone, Debug)]
pub struct UpstreamCall {
    pub request: Arc<AssociationRequest>,
    pub deadline: Instant,
    /// When the call reached the middleware: its attempts together wait for slots until
    /// `--max-queue-wait` after it.
    pub arrived: Instant,
    /// The caller whose share of the quota its attempts take.
    pub caller: CallerShare,
    /// Attempts that reached the SDK, counted by the innermost service alone and read by the retry
    /// policy and the call: shared by every clone of this call.
    attempts: Arc<AtomicU32>,
}

impl UpstreamCall {
    pub(crate) fn new(
        request: Arc<AssociationRequest>,
        deadline: Instant,
        caller: CallerShare,
    ) -> Self {
        Self {
            request,
            deadline,
            arrived: Instant::now(),
            caller,
            attempts: Arc::new(AtomicU32::new(0)),
        }
    }

    /// How many attempts reached the SDK so far (shared by every clone of this call).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }
}

/// Every knob of the middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct MiddlewareConfig {
    pub retry: RetryConfig,
    pub rate_limit: RateLimitConfig,
    pub breaker: BreakerConfig,
    /// Calls in flight to AWS at once.
    pub max_in_flight: usize,
    /// Calls allowed to wait (for a rate-limit token, a concurrency slot or a backoff) beyond those.
    pub max_waiting: usize,
    /// Whether an association AWS reports and the facade forgot is confirmed with DescribeContact.
    pub reconcile_associations: bool,
}

/// The assembled middleware and the SDK call, as one cloneable service.
#[derive(Clone)]
pub struct UpstreamStack {
    service: BoxCloneSyncService<UpstreamCall, Association, BoxError>,
    breaker: Arc<circuit_breaker::Breaker>,
}

impl std::fmt::Debug for UpstreamStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamStack")
    }
}

/// What every route of one AWS account and region shares: its circuit breaker and its rate limit
/// (its slot queue, its bucket and its adaptive rate), so a throttled or failing account slows only
/// its own routes.
#[derive(Clone)]
pub struct KeyGuards {
    breaker: CircuitBreakerLayer,
    rate_limit: Option<RateLimitLayer>,
    attempts: KeyAttempts,
}

impl std::fmt::Debug for KeyGuards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGuards")
            .field("breaker", &self.breaker_state())
            .field("limiter", &self.limiter())
            .finish()
    }
}

impl KeyGuards {
    /// The breaker's state in a word (see [`circuit_breaker::Breaker::state_label`]).
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.breaker().state_label()
    }

    /// How AWS answered this account's attempts over the last minute.
    pub fn last_minute(&self) -> last_minute::Outcomes {
        self.attempts.last_minute()
    }

    /// How AWS answered this account's attempts since these guards were built.
    pub fn since_start(&self) -> last_minute::Outcomes {
        self.attempts.since_start()
    }

    /// Attempts waiting now in this account's queue, by caller index.
    pub fn waiting_by_caller(&self) -> Vec<usize> {
        self.rate_limit
            .as_ref()
            .map_or_else(Vec::new, rate_limit::RateLimitLayer::waiting_by_caller)
    }

    /// What the rate limiter is doing now; `None` without one (`--rate-limit 0`).
    pub fn limiter(&self) -> Option<rate_limit::LimiterView> {
        self.rate_limit
            .as_ref()
            .map(rate_limit::RateLimitLayer::view)
    }

    /// `key` names the account and region's bucket in `quota` and its breaker.
    pub fn new(
        key: &AccountKey,
        quota: Arc<dyn QuotaStore>,
        config: &MiddlewareConfig,
        metrics: &UpstreamMetrics,
        tasks: &Tasks,
    ) -> Self {
        let breaker = CircuitBreakerLayer::new(key.as_str(), config.breaker.clone());
        metrics.follow_breaker(key.as_str(), &breaker.breaker());
        Self {
            breaker,
            rate_limit: (config.rate_limit.limits.rate_per_second > 0.0).then(|| {
                RateLimitLayer::new(
                    key,
                    quota,
                    &config.rate_limit,
                    metrics.key_rate_limit(key.as_str()),
                    tasks.clone(),
                )
            }),
            attempts: metrics.key_attempts(key.as_str()),
        }
    }
}

/// What every route shares: the bound on calls inside the facade and on calls in flight to AWS.
#[derive(Clone, Debug)]
pub struct ProcessLimits {
    admitted: Arc<tokio::sync::Semaphore>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl ProcessLimits {
    pub fn new(config: &MiddlewareConfig) -> Self {
        Self {
            admitted: Arc::new(tokio::sync::Semaphore::new(
                config.max_in_flight + config.max_waiting,
            )),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        }
    }
}

impl UpstreamStack {
    /// One route's stack: its client, behind its account and region's `guards` and the process's
    /// `limits`.
    pub fn new(
        upstream: ConnectUpstream,
        guards: &KeyGuards,
        limits: &ProcessLimits,
        config: &MiddlewareConfig,
        metrics: &UpstreamMetrics,
    ) -> Self {
        // A layer turned off by its flag is left out, not bypassed: it then costs nothing.
        let retry = (config.retry.max_attempts > 1)
            .then(|| RetryLayer::new(RetryPolicy::new(config.retry.clone(), metrics.clone())));
        let breaker_layer = (config.breaker.failure_threshold > 0).then(|| guards.breaker.clone());
        let service = ServiceBuilder::new()
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                limits.admitted.clone(),
            ))
            .option_layer(retry)
            .option_layer(breaker_layer)
            .option_layer(guards.rate_limit.clone())
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                limits.in_flight.clone(),
            ))
            .service(SdkAttempt {
                upstream,
                attempts: guards.attempts.clone(),
            });
        Self {
            service: BoxCloneSyncService::new(service),
            breaker: guards.breaker.breaker(),
        }
    }

    /// The circuit breaker's state, for readiness.
    pub fn breaker(&self) -> Arc<circuit_breaker::Breaker> {
        self.breaker.clone()
    }

    /// Runs one call through the middleware to AWS.
    pub(crate) async fn call(&self, call: UpstreamCall) -> Result<Association, CallError> {
        self.service
            .clone()
            .oneshot(call)
            .await
            .map_err(|err| match err.downcast::<CallError>() {
                Ok(err) => *err,
                Err(err) if err.is::<tower::load_shed::error::Overloaded>() => {
                    CallError::Overloaded
                }
                // Every layer here fails with CallError or Overloaded; anything else is a bug,
                // answered as a retryable refusal rather than a lasting failure.
                Err(err) => {
                    tracing::error!(error = %err, "unexpected middleware error");
                    CallError::Overloaded
                }
            })
    }
}

/// What every middleware service answers: a boxed future, so layers compose without naming each
/// other's future types.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<Association, CallError>> + Send>>;

/// The innermost service: one SDK attempt, counted.
#[derive(Clone)]
struct SdkAttempt {
    upstream: ConnectUpstream,
    attempts: KeyAttempts,
}

impl Service<UpstreamCall> for SdkAttempt {
    type Response = Association;
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: UpstreamCall) -> Self::Future {
        let upstream = self.upstream.clone();
        let attempts = self.attempts.clone();
        let attempt = call.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        // A client span per attempt, so a trace shows each retry and the backoff between them. It is
        // for traces only (the log formatter skips it, see `telemetry`): without an exporter it is
        // disabled and costs nothing.
        let span = tracing::info_span!(
            telemetry::ATTEMPT_SPAN,
            otel.name = "Connect/CreatePersistentContactAssociation",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "aws-api",
            // As i64: trace exporters write unsigned integers as strings.
            attempt = i64::from(attempt),
            aws_request_id = tracing::field::Empty,
        );
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let outcome = upstream
                    .create_persistent_contact_association(&call.request)
                    .await;
                let elapsed = started.elapsed();
                let client_token = call.request.client_token().as_str();
                let span = tracing::Span::current();
                match &outcome {
                    Ok(association) => {
                        let aws_request_id = association.request_id.as_deref();
                        if let Some(id) = aws_request_id {
                            span.record("aws_request_id", id);
                        }
                        tracing::debug!(attempt, outcome = "ok", aws_request_id, client_token, "upstream attempt");
                        attempts.ok(elapsed);
                    }
                    Err(err) => {
                        let aws_error_code = err.aws_code.clone().unwrap_or_default();
                        let aws_request_id = err.request_id.as_deref();
                        let kind = format!("{:?}", err.kind);
                        span.record("otel.status_code", "ERROR");
                        if let Some(id) = aws_request_id {
                            span.record("aws_request_id", id);
                        }
                        // Detail: a retry's `retrying` line and the call's `rpc finished` line
                        // report a failure at `info`.
                        tracing::debug!(attempt, outcome = %kind, aws_error_code = aws_error_code.as_str(), aws_request_id, client_token, "upstream attempt");
                        attempts.failed(kind, aws_error_code, elapsed);
                    }
                }
                outcome.map_err(CallError::Upstream)
            }
            .instrument(span),
        )
    }
}
