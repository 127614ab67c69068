//! Prometheus metrics, served on their own plain-HTTP listener (`--metrics-listen`, `GET /metrics`,
//! [`crate::metrics_endpoint`]).
//!
//! The gRPC server metrics use go-grpc-prometheus's names and labels (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`, with Go's code names such as
//! `InvalidArgument`), so existing Grafana dashboards and alerts work unchanged. The facade's own are
//! prefixed `connect_facade_`.
//!
//! prometheus-client keeps a registry per [`Metrics`] value rather than a process-global recorder, so
//! every app (and every test) counts only its own calls.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};
use tonic::Code;

/// Latency buckets of go-grpc-prometheus (seconds), used for both histograms.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub const SERVICE: &str = "amazonconnect.v1.ContactService";
pub const METHOD: &str = "CreatePersistentContactAssociation";

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
struct AttemptLabels {
    key: String,
    outcome: String,
    aws_error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
}

/// Buckets of the quota store's round trip (seconds): a Redis nearby answers in well under a
/// millisecond, and the store's timeout is 100 ms by default.
const STORE_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric the facade exports.
pub struct Metrics {
    registry: Registry,
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge<i64, AtomicI64>,
    upstream_attempts: Family<AttemptLabels, Counter>,
    upstream_seconds: Histogram,
    retries: Counter,
    retries_refused: Family<ReasonLabels, Counter>,
    log_lines_suppressed: Counter,
    open_requests_refused: Counter,
    rate_limiter_waits: Counter,
    rate_limiter_wait_seconds: Histogram,
    rate_limiter_refusals: Family<KeyLabels, Counter>,
    rate_limit: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    breaker_open: Family<KeyLabels, Gauge<i64, AtomicI64>>,
    calls_by_caller: Family<CallerLabels, Counter>,
    caller_quota_waits: Family<CallerLabels, Counter>,
    caller_quota_slots: Family<CallerLabels, Counter>,
    caller_refusals: Family<CallerReasonLabels, Counter>,
    replays: Counter,
    coalesced: Counter,
    token_reuse_refusals: Counter,
    replay_entries: Gauge<i64, AtomicI64>,
    route_reloads: Family<OutcomeLabels, Counter>,
    routes: Gauge<i64, AtomicI64>,
    calls_by_route: Family<RouteLabels, Counter>,
    calls_by_protocol: Family<ProtocolLabels, Counter>,
    runtime_tasks: Gauge<i64, AtomicI64>,
    tls_reloads: Family<OutcomeLabels, Counter>,
    tls_expiry: Family<CertLabels, Gauge<i64, AtomicI64>>,
    quota_store_up: Family<StoreLabels, Gauge<i64, AtomicI64>>,
    open_connections: Family<ListenerLabels, Gauge<i64, AtomicI64>>,
    request_buffer_bytes: Gauge<i64, AtomicI64>,
    connections_closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ClosedLabels, Counter>,
    quota_store_errors: Counter,
    quota_fleet_replicas: Family<KeyLabels, Gauge<i64, AtomicI64>>,
    quota_fallback_rate: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    quota_store_seconds: Histogram,
    series: HotSeries,
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
    /// By protocol, in the order of the caller's slots (see [`Metrics::protocol_call`]).
    by_protocol: [OnceLock<Counter>; PROTOCOL_SLOTS],
}

/// The attempts to AWS of one account and region key. Its success series is resolved once, when
/// the key's guards are built, since every call touches it (a `Family` lookup hashes the labels and
/// takes a lock); a failure looks its series up.
#[derive(Clone)]
pub struct KeyAttempts {
    key: Arc<str>,
    ok: Counter,
    metrics: Arc<Metrics>,
}

impl KeyAttempts {
    /// One attempt succeeded.
    pub fn ok(&self, elapsed: Duration) {
        self.ok.inc();
        self.metrics.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    /// One attempt failed (`outcome` is the failure kind).
    pub fn failed(&self, outcome: String, aws_error_code: String, elapsed: Duration) {
        self.metrics
            .upstream_attempts
            .get_or_create(&AttemptLabels {
                key: self.key.to_string(),
                outcome,
                aws_error_code,
            })
            .inc();
        self.metrics.upstream_seconds.observe(elapsed.as_secs_f64());
    }
}

/// How many protocols `connect_facade_calls_by_protocol_total` tells apart.
pub const PROTOCOL_SLOTS: usize = 5;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    caller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerReasonLabels {
    caller: String,
    reason: &'static str,
}

/// Why a caller's call was refused before AWS, for `connect_facade_caller_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerRefusal {
    /// The account's quota had no slot within the call's wait bound (RATE_LIMITED).
    Quota,
    /// The caller's own `max_rate` (CALLER_RATE_LIMITED).
    CallerRate,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let started = Family::default();
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            started.clone(),
        );
        let handled = Family::default();
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC code",
            handled.clone(),
        );
        let handling_seconds =
            Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds",
            handling_seconds.clone(),
        );
        let sub = registry.sub_registry_with_prefix("connect_facade");
        let in_flight = Gauge::default();
        sub.register("in_flight_calls", "Calls being handled", in_flight.clone());
        let upstream_attempts = Family::default();
        sub.register(
            "upstream_attempts",
            "Attempts sent to Amazon Connect, by outcome and AWS error code",
            upstream_attempts.clone(),
        );
        let upstream_seconds = histogram();
        sub.register(
            "upstream_attempt_seconds",
            "Latency of one attempt to Amazon Connect, in seconds",
            upstream_seconds.clone(),
        );
        let retries = Counter::default();
        sub.register("retries", "Retries sent to Amazon Connect", retries.clone());
        let retries_refused = Family::default();
        sub.register(
            "retries_refused",
            "Retryable failures not retried, by reason (budget, deadline, attempts, queue_wait)",
            retries_refused.clone(),
        );
        let log_lines_suppressed = Counter::default();
        sub.register(
            "log_lines_suppressed",
            "Failed-call log lines left out because more came than the per-second budget",
            log_lines_suppressed.clone(),
        );
        let open_requests_refused = Counter::default();
        sub.register(
            "open_requests_refused",
            "Calls refused on their headers because --max-open-requests calls were open",
            open_requests_refused.clone(),
        );
        let rate_limiter_waits = Counter::default();
        sub.register(
            "rate_limiter_waits",
            "Calls that waited for a rate-limit token",
            rate_limiter_waits.clone(),
        );
        let rate_limiter_wait_seconds = histogram();
        sub.register(
            "rate_limiter_wait_seconds",
            "Time calls waited for a rate-limit token, in seconds",
            rate_limiter_wait_seconds.clone(),
        );
        let rate_limiter_refusals = Family::default();
        sub.register(
            "rate_limiter_refusals",
            "Calls refused because no rate-limit token was free in time",
            rate_limiter_refusals.clone(),
        );
        let rate_limit = Family::default();
        sub.register(
            "rate_limit_per_second",
            "Current (adaptive) request rate allowed to Amazon Connect, per region/identity key",
            rate_limit.clone(),
        );
        let breaker_open = Family::default();
        sub.register(
            "circuit_breaker_open",
            "1 while the circuit breaker refuses calls, per region/identity key",
            breaker_open.clone(),
        );
        let calls_by_caller = Family::default();
        sub.register(
            "caller_calls",
            "Calls by authorized caller (with --auth-file)",
            calls_by_caller.clone(),
        );
        let caller_quota_waits = Family::default();
        sub.register(
            "caller_quota_waits",
            "Attempts that waited for a slot of the quota, by caller (with --auth-file)",
            caller_quota_waits.clone(),
        );
        let caller_quota_slots = Family::default();
        sub.register(
            "caller_quota_slots",
            "Slots of the quota given to a caller's attempts (let through to Amazon Connect), by caller (with --auth-file)",
            caller_quota_slots.clone(),
        );
        let caller_refusals = Family::default();
        sub.register(
            "caller_refusals",
            "Calls refused before Amazon Connect, by caller (with --auth-file) and reason (quota: no slot of the account's quota in time; caller_rate: over the caller's own max_rate)",
            caller_refusals.clone(),
        );
        let replays = Counter::default();
        sub.register(
            "replays",
            "Calls answered from the replay cache (same client_token and fields as an answered call): no AWS call, no quota slot",
            replays.clone(),
        );
        let coalesced = Counter::default();
        sub.register(
            "coalesced_calls",
            "Calls that shared the answer of an identical call in flight (same client_token and fields) instead of calling AWS",
            coalesced.clone(),
        );
        let token_reuse_refusals = Counter::default();
        sub.register(
            "client_token_reuse_refusals",
            "Calls refused because their client_token was used with other fields (CLIENT_TOKEN_REUSED)",
            token_reuse_refusals.clone(),
        );
        let replay_entries = Gauge::default();
        sub.register(
            "replay_cache_entries",
            "Answers held by this replica's in-memory replay cache (0 with the Redis store, which holds them)",
            replay_entries.clone(),
        );
        let route_reloads = Family::default();
        sub.register(
            "routes_reloads",
            "Reloads of the routes file (SIGHUP or a changed file), by result (ok, error: the previous routes stay)",
            route_reloads.clone(),
        );
        let routes = Gauge::default();
        sub.register("routes", "Routes in use", routes.clone());
        let calls_by_route = Family::default();
        sub.register(
            "route_calls",
            "Calls by route (its name in the routes file; default without one)",
            calls_by_route.clone(),
        );
        let calls_by_protocol = Family::default();
        sub.register(
            "calls_by_protocol",
            "Calls of the RPC by protocol (grpc, grpc-web, connect-json, connect-proto, other: refused with 415); the grpc_server_* series count every protocol",
            calls_by_protocol.clone(),
        );
        let runtime_tasks = Gauge::default();
        sub.register(
            "runtime_alive_tasks",
            "Tokio tasks alive in the process; under a steady load it must stay flat (a rise is a leak)",
            runtime_tasks.clone(),
        );
        let tls_reloads = Family::default();
        sub.register(
            "tls_reloads",
            "TLS certificate reloads (SIGHUP or changed files), by result (ok, error)",
            tls_reloads.clone(),
        );
        let tls_expiry = Family::default();
        sub.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate served over TLS (seconds since the epoch), by file; alert well before it",
            tls_expiry.clone(),
        );
        let quota_store_up = Family::default();
        sub.register(
            "quota_store_up",
            "1 while the shared quota store (Redis) answers, 0 while this replica uses its fallback bucket (with --quota-store redis:// only)",
            quota_store_up.clone(),
        );
        let quota_store_errors = Counter::default();
        sub.register(
            "quota_store_errors",
            "Quota store round trips that failed or timed out",
            quota_store_errors.clone(),
        );
        let quota_fleet_replicas = Family::default();
        sub.register(
            "quota_fleet_replicas",
            "Replicas last seen registered in the shared quota store for the key (this one included); the fallback divides the key's rate by it",
            quota_fleet_replicas.clone(),
        );
        let quota_fallback_rate = Family::default();
        sub.register(
            "quota_fallback_rate_per_second",
            "Requests/s this replica sends for the key while the shared quota store fails: the rate in force on the fallback, or the one it would take now",
            quota_fallback_rate.clone(),
        );
        let quota_store_seconds = Histogram::new(STORE_BUCKETS);
        sub.register(
            "quota_store_round_trip_seconds",
            "Round trips to the quota store (Redis), in seconds",
            quota_store_seconds.clone(),
        );
        let request_buffer_bytes = Gauge::<i64, AtomicI64>::default();
        sub.register(
            "request_buffer_bytes",
            "Request body bytes held for calls not yet answered, over every connection",
            request_buffer_bytes.clone(),
        );
        let open_connections = Family::default();
        sub.register(
            "open_connections",
            "Connections open now, handshakes included, by listener (grpc, metrics)",
            open_connections.clone(),
        );
        let connections_closed = Family::default();
        sub.register(
            "connections_closed",
            "Connections closed by the facade before they were served, by listener and reason (cap: over --max-connections; handshake_timeout; handshake_failed)",
            connections_closed.clone(),
        );
        let accept_errors = Family::default();
        sub.register(
            "accept_errors",
            "Failed accepts, by listener and reason (descriptors: out of file descriptors or socket memory; connection: the peer's own failure)",
            accept_errors.clone(),
        );
        sub.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            started,
            handled,
            handling_seconds,
            in_flight,
            upstream_attempts,
            upstream_seconds,
            retries,
            retries_refused,
            log_lines_suppressed,
            open_requests_refused,
            rate_limiter_waits,
            rate_limiter_wait_seconds,
            rate_limiter_refusals,
            rate_limit,
            breaker_open,
            calls_by_caller,
            caller_quota_waits,
            caller_quota_slots,
            caller_refusals,
            replays,
            coalesced,
            token_reuse_refusals,
            replay_entries,
            route_reloads,
            routes,
            calls_by_route,
            calls_by_protocol,
            runtime_tasks,
            tls_reloads,
            tls_expiry,
            quota_store_up,
            open_connections,
            request_buffer_bytes,
            connections_closed,
            accept_errors,
            quota_store_errors,
            quota_fleet_replicas,
            quota_fallback_rate,
            quota_store_seconds,
            series: HotSeries::default(),
        }
    }

    /// An authorized caller made a call.
    pub fn caller_call(&self, caller: &str) {
        self.calls_by_caller
            .get_or_create(&CallerLabels {
                caller: caller.to_owned(),
            })
            .inc();
    }

    fn rpc() -> RpcLabels {
        RpcLabels {
            grpc_type: "unary",
            grpc_service: SERVICE,
            grpc_method: METHOD,
        }
    }

    /// A call arrived; the guard records how it ended (CANCELLED if dropped unanswered, as when the
    /// caller goes away).
    pub fn rpc_started(self: &Arc<Self>) -> RpcGuard {
        self.series
            .started
            .get_or_init(|| self.started.get_or_create(&Self::rpc()).clone())
            .inc();
        self.in_flight.inc();
        RpcGuard {
            metrics: self.clone(),
            started: std::time::Instant::now(),
            answered: false,
        }
    }

    fn rpc_handled(&self, code: Code, elapsed: Duration) {
        self.in_flight.dec();
        let handled = || {
            self.handled
                .get_or_create(&HandledLabels {
                    grpc_type: "unary",
                    grpc_service: SERVICE,
                    grpc_method: METHOD,
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

    /// The attempt counters of one account and region `key` (see [`KeyAttempts`]).
    pub fn key_attempts(self: &Arc<Self>, key: &str) -> KeyAttempts {
        let ok = self
            .upstream_attempts
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
        }
    }

    pub fn retry(&self) {
        self.retries.inc();
    }

    /// A failed call's log line was left out (the per-second budget was spent).
    /// A call refused on its headers: --max-open-requests were open.
    pub fn open_request_refused(&self) {
        self.open_requests_refused.inc();
    }

    pub fn log_line_suppressed(&self) {
        self.log_lines_suppressed.inc();
    }

    /// A retryable failure was returned unretried.
    pub fn retry_refused(&self, reason: &'static str) {
        self.retries_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn rate_limiter_waited(&self, waited: Duration, caller: Option<&str>) {
        self.rate_limiter_waits.inc();
        self.rate_limiter_wait_seconds.observe(waited.as_secs_f64());
        if let Some(caller) = caller {
            self.caller_quota_waits
                .get_or_create(&caller_labels(caller))
                .inc();
        }
    }

    pub fn rate_limiter_refused(&self, key: &str, caller: Option<&str>) {
        self.rate_limiter_refusals
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
            })
            .inc();
        self.caller_refused(caller, CallerRefusal::Quota);
    }

    /// A caller's attempt got its slot of the quota (metrics per caller with an auth file only).
    pub fn caller_slot_granted(&self, caller: Option<&str>) {
        if let Some(caller) = caller {
            self.caller_quota_slots
                .get_or_create(&caller_labels(caller))
                .inc();
        }
    }

    pub fn caller_refused(&self, caller: Option<&str>, why: CallerRefusal) {
        if let Some(caller) = caller {
            let reason = match why {
                CallerRefusal::Quota => "quota",
                CallerRefusal::CallerRate => "caller_rate",
            };
            self.caller_refusals
                .get_or_create(&CallerReasonLabels {
                    caller: caller.to_owned(),
                    reason,
                })
                .inc();
        }
    }

    pub fn replayed(&self) {
        self.replays.inc();
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn client_token_reused(&self) {
        self.token_reuse_refusals.inc();
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

    /// A reload of the routes file, and the routes in use after it.
    pub fn routes_reloaded(&self, ok: bool, routes: usize) {
        self.route_reloads
            .get_or_create(&OutcomeLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.set_routes(routes);
    }

    pub fn set_routes(&self, routes: usize) {
        self.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
    }

    /// The counter of `route`'s calls, held by the route so a call pays one atomic add.
    pub fn route_calls(&self, route: &str) -> Counter {
        self.calls_by_route
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .clone()
    }

    pub fn set_replay_entries(&self, entries: u64) {
        self.replay_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    pub fn set_rate_limit(&self, key: &str, rate: f64) {
        self.rate_limit
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
            })
            .set(rate);
    }

    pub fn set_breaker_open(&self, key: &str, open: bool) {
        self.breaker_open
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
            })
            .set(i64::from(open));
    }

    pub fn tls_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&OutcomeLabels { result })
            .inc();
    }

    /// Present only with TLS on, so that an expiry alert never fires on a plaintext server.
    pub fn set_tls_certificate_expiry(&self, cert: &str, not_after: i64) {
        self.tls_expiry
            .get_or_create(&CertLabels {
                cert: cert.to_owned(),
            })
            .set(not_after);
    }

    /// Present only with a shared store, so that a store-down alert never fires on a local one.
    pub fn set_quota_store_up(&self, up: bool) {
        self.quota_store_up
            .get_or_create(&StoreLabels { store: "redis" })
            .set(i64::from(up));
    }

    pub fn quota_store_error(&self) {
        self.quota_store_errors.inc();
    }

    pub fn set_quota_fleet_replicas(&self, key: &str, replicas: u32) {
        self.quota_fleet_replicas
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
            })
            .set(i64::from(replicas));
    }

    pub fn set_quota_fallback_rate(&self, key: &str, rate: f64) {
        self.quota_fallback_rate
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
            })
            .set(rate);
    }

    pub fn quota_store_round_trip(&self, elapsed: Duration) {
        self.quota_store_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn set_request_buffer_bytes(&self, bytes: usize) {
        self.request_buffer_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn set_open_connections(&self, listener: &'static str, open: usize) {
        self.open_connections
            .get_or_create(&ListenerLabels { listener })
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn connection_closed(&self, listener: &'static str, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }

    pub fn accept_error(&self, listener: &'static str, reason: &'static str) {
        self.accept_errors
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        // Read at scrape time: the runtime counts its tasks itself, so there is nothing to update
        // on the hot path.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Records one call's end exactly once.
pub struct RpcGuard {
    metrics: Arc<Metrics>,
    started: std::time::Instant,
    answered: bool,
}

impl RpcGuard {
    /// The call was answered with `code`.
    pub fn answered(mut self, code: Code) {
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

fn caller_labels(caller: &str) -> CallerLabels {
    CallerLabels {
        caller: caller.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPC: &str = r#"grpc_type="unary",grpc_service="amazonconnect.v1.ContactService",grpc_method="CreatePersistentContactAssociation""#;

    #[test]
    fn the_exposition_uses_go_grpc_prometheus_names() {
        let metrics = Arc::new(Metrics::new());
        metrics.rpc_started().answered(Code::InvalidArgument);
        drop(metrics.rpc_started());
        let text = metrics.render();
        assert!(
            text.contains(&format!("grpc_server_started_total{{{RPC}}} 2")),
            "{text}"
        );
        assert!(text.contains("grpc_code=\"InvalidArgument\"} 1"), "{text}");
        assert!(
            text.contains("grpc_server_handling_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("connect_facade_build_info{version="),
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
        let metrics = Arc::new(Metrics::new());
        let before = metrics.render();
        assert!(!before.contains("grpc_code=\"OK\""), "{before}");
        assert!(!before.contains("outcome=\"ok\""), "{before}");
        let attempts = metrics.key_attempts("us-east-1");
        for _ in 0..3 {
            metrics.rpc_started().answered(Code::Ok);
            attempts.ok(Duration::from_millis(1));
        }
        metrics.rpc_started().answered(Code::Unauthenticated);
        attempts.failed(
            "Throttling".to_owned(),
            "ThrottlingException".to_owned(),
            Duration::ZERO,
        );
        let text = metrics.render();
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
    }
}
