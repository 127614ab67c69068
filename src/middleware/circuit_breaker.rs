//! A circuit breaker per region and AWS identity, as a small state machine (after linkerd2-proxy's
//! consecutive-failures breaker):
//!
//! - **closed**: calls pass; a run of `failure_threshold` failures of AWS in a row (5xx, transport)
//!   opens it; any other outcome resets the run;
//! - **open**: calls fail fast with UNAVAILABLE and a RetryInfo for the rest of the cool-down, sparing
//!   AWS and the callers' deadlines;
//! - **half-open**: after the cool-down one probe goes through (others still fail fast); its success
//!   closes the breaker, its failure opens it for another cool-down. A probe abandoned midway (its
//!   caller gave up) lets the next call probe instead.
//!
//! It sits inside the retry layer, so it counts attempts, and a retry never hammers an open circuit.
//!
//! ThrottlingException is not a failure here: a throttling AWS is up and answering, and the account's
//! quota is shared by every replica and every other application in the account. Opening the breaker
//! on throttles turned a busy quota into UNAVAILABLE for every caller (and, with readiness following
//! the breaker, into every pod leaving the Service at once); the adaptive rate limiter is the answer
//! to throttling, and the caller gets RESOURCE_EXHAUSTED with a RetryInfo.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{CallFuture, UpstreamCall};
use crate::{
    error::CallError,
    upstream::{Association, UpstreamErrorKind},
};

/// Breaker knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Retryable failures in a row that open the breaker; 0 disables it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight.
    HalfOpen,
}

impl State {
    fn summary(self) -> u8 {
        match self {
            State::Closed { failures: 0 } => CLEAN,
            State::Closed { .. } => FAILING,
            State::Open { .. } | State::HalfOpen => TRIPPED,
        }
    }
}

/// [`State`] in brief, readable without the lock.
const CLEAN: u8 = 0;
const FAILING: u8 = 1;
const TRIPPED: u8 = 2;

/// The breaker's state, shared by every clone of the service.
#[derive(Debug)]
pub struct Breaker {
    key: String,
    config: BreakerConfig,
    state: Mutex<State>,
    /// The state's summary, written with it under the lock: every call on a closed breaker is
    /// admitted, and a success on one with no failures changes nothing, so the common case reads
    /// this and takes no lock.
    summary: AtomicU8,
}

/// How a call was let through.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Normal,
    Probe,
}

impl Breaker {
    pub fn new(key: &str, config: BreakerConfig) -> Self {
        Self {
            key: key.to_owned(),
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
            summary: AtomicU8::new(CLEAN),
        }
    }

    fn set(&self, state: &mut MutexGuard<'_, State>, new: State) {
        **state = new;
        self.summary.store(new.summary(), Ordering::Release);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Whether calls are being refused right now: open and cooling down, or a probe in flight. Once
    /// the cool-down is over the next call will probe, so the breaker no longer counts as open
    /// (readiness must let that call arrive).
    pub fn is_open(&self) -> bool {
        match *self.state() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::HalfOpen => true,
        }
    }

    /// The state in a word: `closed`, `open` (refusing calls), or `half_open` (the cool-down is
    /// over and the next call probes, or a probe is in flight).
    pub fn state_label(&self) -> &'static str {
        match *self.state() {
            State::Closed { .. } => "closed",
            State::Open { until } if Instant::now() < until => "open",
            State::Open { .. } | State::HalfOpen => "half_open",
        }
    }

    /// Lets a call through, or refuses it while the breaker is open.
    pub(crate) fn admit(&self) -> Result<Admission, CallError> {
        if self.config.failure_threshold == 0 || self.summary.load(Ordering::Acquire) != TRIPPED {
            return Ok(Admission::Normal);
        }
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Ok(Admission::Normal),
            State::Open { until } if now < until => Err(CallError::CircuitOpen {
                retry_after: until - now,
            }),
            State::Open { .. } => {
                self.set(&mut state, State::HalfOpen);
                tracing::info!(key = %self.key, "circuit breaker half-open: probing Amazon Connect");
                Ok(Admission::Probe)
            }
            State::HalfOpen => Err(CallError::CircuitOpen {
                retry_after: self.config.cool_down,
            }),
        }
    }

    /// Records how an admitted call ended.
    pub(crate) fn record(&self, admission: &Admission, failed: bool) {
        if self.config.failure_threshold == 0
            || (!failed && self.summary.load(Ordering::Acquire) == CLEAN)
        {
            return;
        }
        let mut state = self.state();
        let open = State::Open {
            until: Instant::now() + self.config.cool_down,
        };
        let new = match (*state, admission, failed) {
            (State::HalfOpen, Admission::Probe, false) => {
                tracing::info!(key = %self.key, "circuit breaker closed");
                State::Closed { failures: 0 }
            }
            (State::HalfOpen, Admission::Probe, true) => {
                tracing::warn!(key = %self.key, "circuit breaker probe failed; open again");
                open
            }
            (State::Closed { failures }, _, true)
                if failures + 1 >= self.config.failure_threshold =>
            {
                tracing::warn!(key = %self.key, failures = failures + 1, cool_down = ?self.config.cool_down, "circuit breaker open");
                open
            }
            (State::Closed { failures }, _, true) => State::Closed {
                failures: failures + 1,
            },
            (State::Closed { .. }, _, false) => State::Closed { failures: 0 },
            // A call admitted before the breaker opened, finishing late: it changes nothing.
            (other, _, _) => other,
        };
        self.set(&mut state, new);
    }

    /// A probe that ended without an outcome: let the next call probe.
    fn abandon_probe(&self) {
        let mut state = self.state();
        if *state == State::HalfOpen {
            self.set(
                &mut state,
                State::Open {
                    until: Instant::now(),
                },
            );
        }
    }
}

/// Records a probe as abandoned if its future is dropped before it records an outcome.
struct ProbeGuard {
    breaker: Arc<Breaker>,
    armed: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.abandon_probe();
        }
    }
}

/// Whether an outcome says Amazon Connect is failing: a 5xx or no answer at all. Throttling is not
/// (see the module doc).
fn is_aws_failure(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Upstream(e) if matches!(
            e.kind,
            UpstreamErrorKind::ServiceUnavailable | UpstreamErrorKind::Transport
        )
    )
}

/// Adds the breaker in front of a service.
#[derive(Clone)]
pub(crate) struct CircuitBreakerLayer {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerLayer {
    pub fn new(key: &str, config: BreakerConfig) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(key, config)),
        }
    }

    /// The shared state, for readiness and the breaker's metric.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// The guarded service.
#[derive(Clone)]
pub(crate) struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> Service<UpstreamCall> for CircuitBreaker<S>
where
    S: Service<UpstreamCall, Response = Association, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Association;
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: UpstreamCall) -> Self::Future {
        let breaker = self.breaker.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let admission = breaker.admit()?;
            let mut guard = ProbeGuard {
                breaker: breaker.clone(),
                armed: admission == Admission::Probe,
            };
            let outcome = inner.oneshot(call).await;
            // Only what AWS answered, or a failure to reach it, says anything about its health
            // (not a refusal by a layer inside this one).
            let decisive = matches!(outcome, Ok(_) | Err(CallError::Upstream(_)));
            if decisive {
                guard.armed = false;
                breaker.record(
                    &admission,
                    outcome.as_ref().err().is_some_and(is_aws_failure),
                );
            }
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_secs(5),
            },
        )
    }

    fn fail(breaker: &Breaker, times: u32) {
        for _ in 0..times {
            let admission = breaker.admit().expect("admitted");
            breaker.record(&admission, true);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_of_failures_opens_it_and_calls_fail_fast() {
        let breaker = breaker();
        fail(&breaker, 2);
        assert!(!breaker.is_open());
        fail(&breaker, 1);
        assert!(breaker.is_open());
        let Err(CallError::CircuitOpen { retry_after }) = breaker.admit() else {
            panic!("fails fast")
        };
        assert_eq!(retry_after, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_run() {
        let breaker = breaker();
        fail(&breaker, 2);
        let admission = breaker.admit().unwrap();
        breaker.record(&admission, false);
        fail(&breaker, 2);
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_one_probe_decides() {
        let breaker = breaker();
        fail(&breaker, 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!breaker.is_open(), "ready to probe");
        let probe = breaker.admit().unwrap();
        assert_eq!(probe, Admission::Probe);
        assert!(breaker.is_open(), "probing");
        assert!(breaker.admit().is_err(), "only one probe at a time");
        breaker.record(&probe, false);
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit().unwrap(), Admission::Normal);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_for_another_cool_down() {
        let breaker = breaker();
        fail(&breaker, 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.admit().unwrap();
        breaker.record(&probe, true);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(breaker.admit().is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.admit().unwrap(), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_call_probe() {
        let breaker = Arc::new(breaker());
        fail(&breaker, 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = breaker.admit().unwrap();
        drop(ProbeGuard {
            breaker: breaker.clone(),
            armed: probe == Admission::Probe,
        });
        assert_eq!(breaker.admit().unwrap(), Admission::Probe);
    }

    fn upstream(kind: UpstreamErrorKind) -> CallError {
        CallError::Upstream(crate::upstream::UpstreamError {
            kind,
            aws_code: None,
            message: String::new(),
            request_id: None,
        })
    }

    #[test]
    fn only_5xx_and_transport_failures_count_throttling_does_not() {
        assert!(is_aws_failure(&upstream(
            UpstreamErrorKind::ServiceUnavailable
        )));
        assert!(is_aws_failure(&upstream(UpstreamErrorKind::Transport)));
        assert!(!is_aws_failure(&upstream(UpstreamErrorKind::Throttling)));
        assert!(!is_aws_failure(&upstream(UpstreamErrorKind::AccessDenied)));
    }

    #[test]
    fn a_zero_threshold_disables_it() {
        let breaker = Breaker::new(
            "off",
            BreakerConfig {
                failure_threshold: 0,
                cool_down: Duration::from_secs(5),
            },
        );
        fail(&breaker, 100);
        assert!(!breaker.is_open());
    }
}
