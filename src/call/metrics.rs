//! The calls' metrics: go-grpc-prometheus's `grpc_server_*` series (with Go's code names such as
//! `InvalidArgument`), the calls in flight, the calls by protocol, and what the edge refused or
//! left out of the logs. Registered by the app when it builds the API; recorded by the gRPC and
//! Connect adapters.

use std::{
    sync::{Arc, OnceLock, atomic::AtomicI64},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use tonic::Code;

use crate::{
    metrics::{MetricsRegistry, latency_histogram},
    proto::{RPC_METHOD, SERVICE_NAME},
};

/// How many protocols `connect_facade_calls_by_protocol_total` tells apart.
pub const PROTOCOL_SLOTS: usize = 5;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

/// The calls' families, and the series every call touches.
pub struct RpcMetrics {
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge<i64, AtomicI64>,
    calls_by_protocol: Family<ProtocolLabels, Counter>,
    log_lines_suppressed: Counter,
    open_requests_refused: Counter,
    forgotten_associations: Family<OutcomeLabel, Counter>,
    series: HotSeries,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The series every call touches, resolved once: a `Family` lookup hashes every label value
/// (SipHash) and takes a read lock, four times a call (about 2,500 instructions per call under
/// callgrind, more than the counting itself). Resolved on first use, so a series still appears only
/// once something happened, as with a plain lookup.
#[derive(Default)]
struct HotSeries {
    started: OnceLock<Counter>,
    handling_seconds: OnceLock<Histogram>,
    /// By gRPC code (0 to 16).
    handled: [OnceLock<Counter>; 17],
    /// By protocol, in the order of the caller's slots (see [`RpcMetrics::protocol_call`]).
    by_protocol: [OnceLock<Counter>; PROTOCOL_SLOTS],
}

impl std::fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcMetrics")
    }
}

impl RpcMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Arc<Self> {
        let started = Family::default();
        let handled = Family::default();
        let handling_seconds =
            Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_unprefixed(
            "grpc_server_started",
            "RPCs started on the server",
            started.clone(),
        );
        registry.register_unprefixed(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC code",
            handled.clone(),
        );
        registry.register_unprefixed(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds",
            handling_seconds.clone(),
        );
        let in_flight = Gauge::default();
        let calls_by_protocol = Family::default();
        let log_lines_suppressed = Counter::default();
        let open_requests_refused = Counter::default();
        let forgotten_associations = Family::default();
        registry.register("in_flight_calls", "Calls being handled", in_flight.clone());
        registry.register(
            "forgotten_associations",
            "Associations Amazon Connect reported as already enabled that the facade did not remember, by outcome (confirmed: DescribeContact matched the call, answered OK; differs: another association, ALREADY_ASSOCIATED; unconfirmed: not asked or not answered, ALREADY_ASSOCIATED)",
            forgotten_associations.clone(),
        );
        registry.register(
            "calls_by_protocol",
            "Calls of the RPC by protocol (grpc, grpc-web, connect-json, connect-proto, other: refused with 415); the grpc_server_* series count every protocol",
            calls_by_protocol.clone(),
        );
        registry.register(
            "log_lines_suppressed",
            "Failed-call log lines left out because more came than the per-second budget",
            log_lines_suppressed.clone(),
        );
        registry.register(
            "open_requests_refused",
            "Calls refused on their headers because --max-open-requests calls were open",
            open_requests_refused.clone(),
        );
        Arc::new(Self {
            started,
            handled,
            handling_seconds,
            in_flight,
            calls_by_protocol,
            log_lines_suppressed,
            open_requests_refused,
            forgotten_associations,
            series: HotSeries::default(),
        })
    }

    fn rpc() -> RpcLabels {
        RpcLabels {
            grpc_type: "unary",
            grpc_service: SERVICE_NAME,
            grpc_method: method_name(),
        }
    }

    /// A call arrived; the guard records how it ended (CANCELLED if dropped unanswered, as when the
    /// caller goes away).
    pub(crate) fn rpc_started(self: &Arc<Self>) -> RpcGuard {
        self.series
            .started
            .get_or_init(|| self.started.get_or_create(&Self::rpc()).clone())
            .inc();
        self.in_flight.inc();
        RpcGuard {
            metrics: self.clone(),
            started: Instant::now(),
            answered: false,
        }
    }

    fn rpc_handled(&self, code: Code, elapsed: Duration) {
        self.in_flight.dec();
        let handled = || {
            self.handled
                .get_or_create(&HandledLabels {
                    grpc_type: "unary",
                    grpc_service: SERVICE_NAME,
                    grpc_method: method_name(),
                    grpc_code: go_code_name(code),
                })
                .clone()
        };
        match usize::try_from(code as i32)
            .ok()
            .and_then(|index| self.series.handled.get(index))
        {
            Some(series) => series.get_or_init(handled).inc(),
            None => handled().inc(),
        };
        self.series
            .handling_seconds
            .get_or_init(|| self.handling_seconds.get_or_create(&Self::rpc()).clone())
            .observe(elapsed.as_secs_f64());
    }

    /// A call of the RPC arrived over `protocol`; `slot` (below [`PROTOCOL_SLOTS`]) is that
    /// protocol's own, so every call after the first pays one atomic add, as the gRPC series do.
    pub fn protocol_call(&self, slot: usize, protocol: &'static str) {
        let Some(series) = self.series.by_protocol.get(slot) else {
            return;
        };
        series
            .get_or_init(|| {
                self.calls_by_protocol
                    .get_or_create(&ProtocolLabels { protocol })
                    .clone()
            })
            .inc();
    }

    /// A failed call's log line was left out (the per-second budget was spent).
    /// An association AWS reported and the facade did not remember, and what became of it.
    pub(crate) fn forgotten_association(&self, outcome: &'static str) {
        self.forgotten_associations
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn log_line_suppressed(&self) {
        self.log_lines_suppressed.inc();
    }

    /// A call refused on its headers: --max-open-requests were open.
    pub fn open_request_refused(&self) {
        self.open_requests_refused.inc();
    }
}

/// The method's own name, the label go-grpc-prometheus gives it.
fn method_name() -> &'static str {
    RPC_METHOD
        .rsplit_once('/')
        .map_or(RPC_METHOD, |(_, method)| method)
}

/// Records one call's end exactly once.
pub struct RpcGuard {
    metrics: Arc<RpcMetrics>,
    started: Instant,
    answered: bool,
}

impl RpcGuard {
    /// The call was answered with `code`.
    pub(crate) fn answered(mut self, code: Code) {
        self.answered = true;
        self.metrics.rpc_handled(code, self.started.elapsed());
    }
}

impl Drop for RpcGuard {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .rpc_handled(Code::Cancelled, self.started.elapsed());
        }
    }
}

/// go-grpc-prometheus's label value for a code (Go's `codes.Code.String()`).
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPC: &str = r#"grpc_type="unary",grpc_service="amazonconnect.v1.ContactService",grpc_method="CreatePersistentContactAssociation""#;

    fn registered() -> (Arc<RpcMetrics>, Arc<crate::metrics::Exposition>) {
        let mut registry = MetricsRegistry::new();
        let metrics = RpcMetrics::register(&mut registry);
        (metrics, registry.into_exposition())
    }

    #[test]
    fn the_exposition_uses_go_grpc_prometheus_names() {
        let (metrics, exposition) = registered();
        metrics.rpc_started().answered(Code::InvalidArgument);
        drop(metrics.rpc_started());
        let text = exposition.render();
        assert!(
            text.contains(&format!("grpc_server_started_total{{{RPC}}} 2")),
            "{text}"
        );
        assert!(text.contains("grpc_code=\"InvalidArgument\"} 1"), "{text}");
        assert!(
            text.contains("grpc_server_handling_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("connect_facade_in_flight_calls 0"), "{text}");
        assert!(
            text.contains("grpc_code=\"Canceled\"} 1"),
            "a dropped call counts as cancelled: {text}"
        );
    }

    #[test]
    fn cached_series_count_like_their_family_and_appear_only_once_used() {
        let (metrics, exposition) = registered();
        let before = exposition.render();
        assert!(!before.contains("grpc_code=\"OK\""), "{before}");
        for _ in 0..3 {
            metrics.rpc_started().answered(Code::Ok);
        }
        metrics.rpc_started().answered(Code::Unauthenticated);
        let text = exposition.render();
        assert!(text.contains("grpc_code=\"OK\"} 3"), "{text}");
        assert!(text.contains("grpc_code=\"Unauthenticated\"} 1"), "{text}");
        assert!(
            text.contains(&format!("grpc_server_started_total{{{RPC}}} 4")),
            "{text}"
        );
        assert!(
            text.contains(&format!("grpc_server_handling_seconds_count{{{RPC}}} 4")),
            "{text}"
        );
    }
}
