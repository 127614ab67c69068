//! Each call's one log line, bounded under floods. A failed call's line is written at `info`, with
//! the peer's address (the RPC span's `peer`); a flood of refused calls (invalid, unauthenticated,
//! rate-limited: each costs the attacker a few hundred bytes) would otherwise turn into tens of
//! megabytes of log a second, which the log pipeline and the node's disk pay for. So at most
//! [`FAILED_CALL_LINES_PER_SECOND`] failed-call lines are written a second (governor's GCRA), the
//! others are counted (`connect_facade_log_lines_suppressed_total`), and how many were left out is
//! logged at most once a second. Metrics and traces still count and time every call.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use tonic::Code;

use super::CallRecord;
use super::metrics::RpcMetrics;
use crate::clip;

/// Where each call's line goes, so operators can turn it up or down on its own in `RUST_LOG`.
pub const CALL_LOG_TARGET: &str = "connect_facade::calls";

/// Failed-call lines written per second at most (with a burst as large): enough to read any
/// incident, about 50 KB/s of log at the most.
pub const FAILED_CALL_LINES_PER_SECOND: u32 = 100;

/// How often the count of lines left out is logged, at most.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The failed-call lines' budget.
#[derive(Debug)]
pub(crate) struct FailedCallLines {
    limiter: DefaultDirectRateLimiter,
    per_second: u32,
    suppressed: AtomicU64,
    last_report: Mutex<Instant>,
    metrics: Arc<RpcMetrics>,
}

impl FailedCallLines {
    pub fn new(per_second: u32, metrics: Arc<RpcMetrics>) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            per_second,
            suppressed: AtomicU64::new(0),
            last_report: Mutex::new(Instant::now()),
            metrics,
        }
    }

    /// Whether a failed call's line may be written now; otherwise it is counted as left out.
    pub(crate) fn admit(&self) -> bool {
        if self.limiter.check().is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            self.metrics.log_line_suppressed();
            return false;
        }
        self.report();
        true
    }

    /// Logs how many lines were left out since the last report, at most once a [`REPORT_INTERVAL`].
    fn report(&self) {
        if self.suppressed.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut last = self.last_report.lock();
        if last.elapsed() < REPORT_INTERVAL {
            return;
        }
        *last = Instant::now();
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            target: CALL_LOG_TARGET,
            suppressed,
            per_second = self.per_second,
            "failed-call lines left out: more than the per-second budget"
        );
    }
}

/// A call's one line: at `info` when it failed; at `debug` when it succeeded, because at the rates
/// the facade serves, a line per successful call is hundreds of gigabytes of logs a day, while
/// metrics and traces already count and time every call.
/// `RUST_LOG=info,connect_facade::calls=debug` logs every call.
pub(crate) fn write(code: Code, record: &CallRecord, latency_ms: f64) {
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: CALL_LOG_TARGET,
                $level,
                grpc_code = ?code,
                reason = record.reason.as_deref(),
                route = record.route.as_ref().map(|route| route.name.as_str()),
                attempts = i64::from(record.attempts),
                client_token = record
                    .client_token()
                    .map(|token| tracing::field::display(clip::Logged(token))),
                aws_request_id = record.aws_request_id.as_deref(),
                latency_ms,
                "rpc finished"
            )
        };
    }
    if code == Code::Ok {
        line!(tracing::Level::DEBUG);
    } else {
        line!(tracing::Level::INFO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_budget_are_counted_not_written() {
        let lines = FailedCallLines::new(
            10,
            RpcMetrics::register(&mut crate::metrics::MetricsRegistry::new()),
        );
        let written = (0..1_000).filter(|_| lines.admit()).count();
        assert!((10..=12).contains(&written), "{written} written");
        assert!(lines.suppressed.load(Ordering::Relaxed) >= 988);
    }
}
