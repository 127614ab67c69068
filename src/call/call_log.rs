//! Each call's one log line, bounded under floods. A failed call's line is written at `info`, with
//! the peer's address (the RPC span's `peer`); a flood of refused calls (invalid, unauthenticated,
//! rate-limited: each costs the attacker a few hundred bytes) would otherwise turn into tens of
//! megabytes of log a second, which the log pipeline and the node's disk pay for. So at most
//! [`FAILED_CALL_LINES_PER_SECOND`] failed-call lines are written a second (governor's GCRA), and
//! at most [`PEER_LINES_PER_SECOND`] of them for one peer's address (a keyed GCRA), so one flooding
//! peer cannot hide every other caller's failures; the others are counted
//! (`connect_facade_log_lines_suppressed_total`), and how many were left out is logged at most once
//! a second, and a last time at shutdown. Metrics and traces still count and time every call.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::DefaultClock};
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

/// Failed-call lines one peer's address may have written per second (with a burst as large): a
/// tenth of the budget, so it takes ten flooding addresses to crowd out everyone else.
pub const PEER_LINES_PER_SECOND: u32 = 10;

/// Peers' budgets kept at most; past it (a flood from very many addresses) only the overall budget
/// applies until the idle ones are forgotten.
const MAX_PEERS_TRACKED: usize = 10_000;

/// How often the count of lines left out is logged, at most.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

type PeerLimiter =
    RateLimiter<IpAddr, governor::state::keyed::HashMapStateStore<IpAddr>, DefaultClock>;

/// The failed-call lines' budget.
#[derive(Debug)]
pub(crate) struct FailedCallLines {
    limiter: DefaultDirectRateLimiter,
    peers: PeerLimiter,
    per_second: u32,
    suppressed: AtomicU64,
    last_report: Mutex<Instant>,
    last_sweep: Mutex<Instant>,
    metrics: Arc<RpcMetrics>,
}

impl FailedCallLines {
    pub fn new(per_second: u32, metrics: Arc<RpcMetrics>) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let per_peer =
            NonZeroU32::new(PEER_LINES_PER_SECOND.min(per_second)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            peers: RateLimiter::hashmap(Quota::per_second(per_peer)),
            per_second,
            suppressed: AtomicU64::new(0),
            last_report: Mutex::new(Instant::now()),
            last_sweep: Mutex::new(Instant::now()),
            metrics,
        }
    }

    /// Whether a failed call's line from `peer` may be written now; otherwise it is counted as
    /// left out.
    pub(crate) fn admit(&self, peer: Option<IpAddr>) -> bool {
        if self.peers.len() >= MAX_PEERS_TRACKED {
            self.forget_idle_peers();
        }
        let peer_over = peer.is_some_and(|peer| {
            self.peers.len() < MAX_PEERS_TRACKED && self.peers.check_key(&peer).is_err()
        });
        if peer_over || self.limiter.check().is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            self.metrics.log_line_suppressed();
            return false;
        }
        self.report();
        true
    }

    /// Logs the lines left out since the last report, if any: on the next line written, and at
    /// shutdown, where no later line would report them.
    pub(crate) fn flush(&self) {
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        if suppressed > 0 {
            tracing::warn!(
                target: CALL_LOG_TARGET,
                suppressed,
                per_second = self.per_second,
                "failed-call lines left out: more than the per-second budget"
            );
        }
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
        self.forget_idle_peers();
        self.flush();
    }

    /// Forgets the addresses whose budget is full again (the map stays as small as the flood), at
    /// most once a [`REPORT_INTERVAL`]: on a report, and when the map is full, since without a
    /// line left out no report comes and the per-peer budgets would stay off for good.
    fn forget_idle_peers(&self) {
        let mut last = self.last_sweep.lock();
        if last.elapsed() >= REPORT_INTERVAL {
            *last = Instant::now();
            self.peers.retain_recent();
        }
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
        let written = (0..1_000).filter(|_| lines.admit(None)).count();
        assert!((10..=12).contains(&written), "{written} written");
        assert!(lines.suppressed.load(Ordering::Relaxed) >= 988);
    }

    #[test]
    fn a_full_map_of_addresses_is_swept_so_a_flooding_peer_keeps_its_own_budget() {
        // An overall budget none of these calls reaches: no line is left out, so no report comes.
        let lines = FailedCallLines::new(
            20_000,
            RpcMetrics::register(&mut crate::metrics::MetricsRegistry::new()),
        );
        // Ten thousand addresses failing once each.
        for n in 0..MAX_PEERS_TRACKED as u32 {
            lines.admit(Some(IpAddr::from(n.to_be_bytes())));
        }
        assert_eq!(lines.peers.len(), MAX_PEERS_TRACKED);
        assert_eq!(lines.suppressed.load(Ordering::Relaxed), 0);
        // A fixed sleep: past the sweep's interval.
        std::thread::sleep(REPORT_INTERVAL + Duration::from_millis(100));
        let flooder = Some(IpAddr::from([10, 9, 9, 9]));
        let written = (0..50).filter(|_| lines.admit(flooder)).count();
        assert!(
            written <= PEER_LINES_PER_SECOND as usize + 2,
            "{written} lines: the per-peer budget applies again"
        );
    }

    #[test]
    fn a_flooding_peer_uses_its_own_share_and_leaves_the_rest_to_others() {
        let lines = FailedCallLines::new(
            100,
            RpcMetrics::register(&mut crate::metrics::MetricsRegistry::new()),
        );
        let flooder = Some(IpAddr::from([10, 0, 0, 1]));
        let written = (0..1_000).filter(|_| lines.admit(flooder)).count();
        assert!(
            (PEER_LINES_PER_SECOND as usize..=PEER_LINES_PER_SECOND as usize + 2)
                .contains(&written),
            "{written} lines for the flooding peer"
        );
        let others = (0..50)
            .filter(|n| lines.admit(Some(IpAddr::from([10, 0, 1, *n as u8]))))
            .count();
        assert_eq!(others, 50, "every other peer's failure is still written");
    }
}
