//! `serve`'s flags in groups, one struct each under its own `--help` heading and configuration
//! file section; every default declared once, here.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::parse::{
    QuotaStoreChoice, duration, positive_rate, quota_store, rate_or_off, size, size_u32,
    unit_factor, window,
};

/// Where and how the server listens, its TLS, and how it stops.
#[derive(Clone, Debug, Args)]
pub struct ListeningFlags {
    /// Address to serve gRPC on. Kubernetes probes reach the pod IP, so bind all interfaces there.
    #[arg(long, env = "CONNECT_FACADE_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// PEM certificate chain to serve gRPC over TLS (with --tls-key). Plaintext when absent: fine on
    /// loopback or behind a mesh that terminates TLS, otherwise turn TLS on.
    #[arg(long, env = "CONNECT_FACADE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "CONNECT_FACADE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle for mutual TLS: callers must present a certificate it signed, or the TLS
    /// handshake is refused.
    #[arg(long, env = "CONNECT_FACADE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often every file `serve` was given is re-read (the --config files, the routes, callers
    /// and TLS files); a change is applied without a restart, all of it or, on any error, none
    /// (SIGHUP reloads at once). 0 turns the periodic check off: SIGHUP only.
    #[arg(
        long,
        env = "CONNECT_FACADE_RELOAD_INTERVAL",
        default_value = "30s",
        value_parser = duration,
        alias = "tls-reload-interval",
        alias = "routes-reload-interval"
    )]
    pub reload_interval: Duration,

    /// Browser origins allowed to call over the Connect protocol or gRPC-Web (CORS), e.g.
    /// `https://agent-tools.example.com`; repeatable, or comma-separated in the variable; `*` allows
    /// any origin. None by default: no CORS headers, so browsers on other origins are refused.
    #[arg(
        long = "cors-allow-origin",
        value_name = "CORS_ALLOW_ORIGIN",
        env = "CONNECT_FACADE_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,

    /// On SIGTERM or Ctrl-C, how long calls in flight may finish (keep it under Kubernetes'
    /// terminationGracePeriodSeconds, 30 s by default); calls still running then are answered
    /// UNAVAILABLE.
    #[arg(long, env = "CONNECT_FACADE_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

/// Which AWS the calls go to, and how long one attempt may take.
#[derive(Clone, Debug, Args)]
pub struct AwsFlags {
    /// AWS region of the Amazon Connect instance; overrides AWS_REGION and the profile's region.
    #[arg(long, env = "CONNECT_FACADE_REGION")]
    pub region: Option<String>,

    /// Amazon Connect endpoint URL; overrides AWS_ENDPOINT_URL(_CONNECT). For tests and private links.
    #[arg(long, env = "CONNECT_FACADE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// YAML file routing Connect instances to AWS accounts and regions, each with its own identity
    /// (an assumed role), quota and breaker (docs/operators/routes.md). Without it, one route from the flags.
    #[arg(long, env = "CONNECT_FACADE_ROUTES")]
    pub routes: Option<PathBuf>,

    /// Longest wait for a TCP/TLS connection to AWS.
    #[arg(long, env = "CONNECT_FACADE_CONNECT_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Longest wait for one AWS attempt, connection included.
    #[arg(long, env = "CONNECT_FACADE_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub attempt_timeout: Duration,
}

/// A call's deadline, its retries and their budget, and the circuit breaker.
#[derive(Clone, Debug, Args)]
pub struct RetryFlags {
    /// Deadline of a call whose caller sent no grpc-timeout (or Connect-Timeout-Ms), and the longest
    /// any call may take from its arrival, its request body's read included: a peer that never
    /// finishes its request holds its stream and buffers this long at most.
    #[arg(long, env = "CONNECT_FACADE_DEFAULT_DEADLINE", default_value = "10s", value_parser = duration)]
    pub default_deadline: Duration,

    /// Attempts per call in all, retries included (1 disables retries). Only throttling, 5xx and
    /// transport failures are retried, all with the call's one ClientToken.
    #[arg(long, env = "CONNECT_FACADE_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,

    /// First retry backoff after a 5xx or transport failure (doubles each retry, with jitter).
    #[arg(long, env = "CONNECT_FACADE_RETRY_BASE_DELAY", default_value = "100ms", value_parser = duration)]
    pub retry_base_delay: Duration,

    /// First retry backoff after ThrottlingException (longer: the quota refills slowly).
    #[arg(long, env = "CONNECT_FACADE_RETRY_THROTTLED_BASE_DELAY", default_value = "500ms", value_parser = duration)]
    pub retry_throttled_base_delay: Duration,

    /// Longest retry backoff.
    #[arg(long, env = "CONNECT_FACADE_RETRY_MAX_DELAY", default_value = "2s", value_parser = duration)]
    pub retry_max_delay: Duration,

    /// Retry budget: retries may add at most this percentage of the calls over the window.
    #[arg(long, env = "CONNECT_FACADE_RETRY_BUDGET_PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub retry_budget_percent: u32,

    /// Retry budget floor: retries per second always allowed, however few the calls.
    #[arg(
        long,
        env = "CONNECT_FACADE_RETRY_BUDGET_MIN_PER_SECOND",
        default_value_t = 1
    )]
    pub retry_budget_min_per_second: u32,

    /// Retry budget window (1s to 60s).
    #[arg(long, env = "CONNECT_FACADE_RETRY_BUDGET_WINDOW", default_value = "10s", value_parser = duration)]
    pub retry_budget_window: Duration,

    /// Retryable AWS failures in a row that open the circuit breaker (0 disables it).
    #[arg(long, env = "CONNECT_FACADE_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long an open circuit breaker fails calls fast before one probe decides.
    #[arg(long, env = "CONNECT_FACADE_BREAKER_COOL_DOWN", default_value = "5s", value_parser = duration)]
    pub breaker_cool_down: Duration,

    /// Report NOT_SERVING on health while the circuit breaker is open. Off by default: every replica
    /// calls the same AWS, so in an AWS outage every breaker opens and such a readiness probe would
    /// take every pod out of the Service at once.
    #[arg(long, env = "CONNECT_FACADE_READINESS_FOLLOWS_BREAKER")]
    pub readiness_follows_breaker: bool,
}

/// The account's quota, the store its buckets live in, and the answers remembered for replay.
#[derive(Clone, Debug, Args)]
pub struct QuotaFlags {
    /// Requests per second sent to Amazon Connect by this process (the account and region's quota;
    /// Connect's default for most operations is 2). Retries count too. 0 turns the limiter off
    /// (AWS's throttling and the retry budget alone then bound the rate).
    #[arg(long, env = "CONNECT_FACADE_RATE_LIMIT", default_value_t = 2.0, value_parser = rate_or_off)]
    pub rate_limit: f64,

    /// Requests allowed at once after a quiet period. One under Connect's burst of 5 by default: the
    /// slot held back absorbs the difference between when the facade sends and when AWS counts an
    /// arrival (a first request slowed by its TLS handshake would otherwise leave every following
    /// one at the edge of AWS's bucket, and throttled on the slightest jitter).
    #[arg(long, env = "CONNECT_FACADE_RATE_BURST", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,

    /// Optional requests per second per Connect instance, below the global rate.
    #[arg(long, env = "CONNECT_FACADE_INSTANCE_RATE_LIMIT", value_parser = positive_rate)]
    pub instance_rate_limit: Option<f64>,

    /// Burst of the per-instance rate limit.
    #[arg(long, env = "CONNECT_FACADE_INSTANCE_RATE_BURST", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub instance_rate_burst: u32,

    /// Longest a call waits for a slot of the quota (never beyond its deadline); past it, or when
    /// the calls fair order puts before it cannot be served by then, the call is refused with
    /// RESOURCE_EXHAUSTED. At 2 requests/s, 3 s holds 6 slots: room for callers' weights to count
    /// and for a quiet caller's turn to come while another floods.
    #[arg(long, env = "CONNECT_FACADE_MAX_QUEUE_WAIT", default_value = "3s", value_parser = duration)]
    pub max_queue_wait: Duration,

    /// Factor applied to the request rate on each ThrottlingException from AWS (1 disables
    /// adaptation), so a rate set above the real quota settles just under it.
    #[arg(long, env = "CONNECT_FACADE_ADAPTIVE_DECREASE", default_value_t = 0.7, value_parser = unit_factor)]
    pub adaptive_decrease: f64,

    /// Requests/s the rate climbs back by each second without throttling.
    #[arg(long, env = "CONNECT_FACADE_ADAPTIVE_INCREASE", default_value_t = 0.1, value_parser = positive_rate)]
    pub adaptive_increase: f64,

    /// Where the quota's buckets live: `local` (this process) or a Redis shared by every replica, so
    /// that together they send at most --rate-limit to AWS: `redis://[USER:PASS@]HOST:PORT[/DB]` (a
    /// standalone Redis or any node of a Redis Cluster), `redis+cluster://HOST:PORT[,HOST:PORT…]`
    /// (cluster seeds), `redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE` (the master of SERVICE,
    /// through its sentinels); `rediss…` for TLS.
    #[arg(long, env = "CONNECT_FACADE_QUOTA_STORE", default_value = "local", value_parser = quota_store)]
    pub quota_store: QuotaStoreChoice,

    /// Prefix of the quota's Redis keys. Deployments for different AWS accounts sharing one Redis need
    /// different prefixes (the key is the region).
    #[arg(
        long,
        env = "CONNECT_FACADE_QUOTA_KEY_PREFIX",
        default_value = "connect-facade"
    )]
    pub quota_key_prefix: String,

    /// Longest round trip to the quota store (never beyond a call's deadline); past it, or on any
    /// Redis error, the replica uses its fallback bucket until Redis answers again.
    #[arg(long, env = "CONNECT_FACADE_QUOTA_STORE_TIMEOUT", default_value = "100ms", value_parser = duration)]
    pub quota_store_timeout: Duration,

    /// Most requests per second this replica sends while the shared quota store fails. The fallback
    /// takes the rate divided by the replicas last seen live in Redis, capped by this; a replica that
    /// never reached Redis uses this (default: half of --rate-limit, two replicas being the base
    /// deployment).
    #[arg(long, env = "CONNECT_FACADE_QUOTA_FALLBACK_RATE", value_parser = positive_rate)]
    pub quota_fallback_rate: Option<f64>,

    /// How long a successful answer is replayed for a call with the same client_token and fields
    /// (no AWS call, no quota slot); 0 turns replay and coalescing off.
    #[arg(long, env = "CONNECT_FACADE_REPLAY_WINDOW", default_value = "10m", value_parser = duration)]
    pub replay_window: Duration,

    /// Answers held by the in-memory replay cache at most (S3-FIFO: answers read again outlive those
    /// never read). Answers come at most at the quota's rate (2/s over a 10-minute window is 1,200
    /// per account), so 20,000 is room for 16 accounts.
    #[arg(long, env = "CONNECT_FACADE_REPLAY_CAPACITY", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub replay_capacity: u64,

    /// When Amazon Connect refuses an association as already enabled and the facade does not
    /// remember it (its store forgot), ask AWS which chat the contact continues (DescribeContact):
    /// the one this call asks for is answered OK and remembered again; another is
    /// FAILED_PRECONDITION (ALREADY_ASSOCIATED) naming it. Off by default: it needs
    /// connect:DescribeContact (deploy/iam-policy-reconcile.json) beyond the one action the facade
    /// otherwise needs.
    #[arg(long, env = "CONNECT_FACADE_RECONCILE_ASSOCIATIONS")]
    pub reconcile_associations: bool,
}

/// Who may call, and their shares of the quota.
#[derive(Clone, Debug, Args)]
pub struct CallerFlags {
    /// YAML file of the callers allowed to call and the instances each may use (a JWT of a
    /// configured issuer such as a projected service account token, a SPIFFE ID or subject of a
    /// client certificate, or a static token's SHA-256); everyone may call when absent. Reflection
    /// and health stay open.
    #[arg(long, env = "CONNECT_FACADE_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
}

/// Bounds on what callers and their connections may hold: calls, streams, buffers and time.
#[derive(Clone, Debug, Args)]
pub struct PeerLimits {
    /// Calls in flight to Amazon Connect at once.
    #[arg(long, env = "CONNECT_FACADE_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Calls allowed to wait (for a token, a slot or a backoff) beyond those in flight; past it calls
    /// are refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CONNECT_FACADE_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: u32,

    /// Calls open at once on the gRPC port, over every connection, from their headers to their
    /// answer (bodies still arriving included); past it a new call is answered RESOURCE_EXHAUSTED
    /// (reason OVERLOADED) before its body is read. Bounds what streams left unfinished by peers
    /// hold beyond their data (about 15 KiB each): 256 per connection times 1,000 connections
    /// would be 3.7 GiB.
    #[arg(long, env = "CONNECT_FACADE_MAX_OPEN_REQUESTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_open_requests: u32,

    /// Largest request message accepted, in bytes or e.g. `64KiB` (a valid request is under 2 KiB); larger ones are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CONNECT_FACADE_MAX_MESSAGE_SIZE", default_value = "64KiB", value_parser = size)]
    pub max_message_size: usize,

    /// HTTP/2 streams (concurrent calls) allowed per connection.
    #[arg(
        long,
        env = "CONNECT_FACADE_MAX_CONCURRENT_STREAMS",
        default_value_t = 256
    )]
    pub max_concurrent_streams: u32,

    /// Largest HTTP/2 header list (metadata) accepted per call, in bytes.
    #[arg(long, env = "CONNECT_FACADE_MAX_HEADER_LIST_SIZE", default_value = "16KiB", value_parser = size_u32)]
    pub max_header_list_size: u32,

    /// HTTP/2 flow-control window of a connection, in bytes: the most request data one peer can
    /// make the facade buffer before it reads it (hyper's default is 1 MiB, so 1,000 connections
    /// could hold 1 GiB). A stream's window is the largest message plus its 5-byte frame header,
    /// so a request of any accepted size arrives in one go.
    #[arg(long, env = "CONNECT_FACADE_CONNECTION_WINDOW", default_value = "256KiB", value_parser = window)]
    pub connection_window: u32,

    /// Request bytes one connection's unanswered calls may hold (a valid request is under 2 KiB;
    /// 256 concurrent ones under 512 KiB); past it the connection is reset.
    #[arg(long, env = "CONNECT_FACADE_MAX_CONNECTION_BUFFER", default_value = "1MiB", value_parser = size)]
    pub max_connection_buffer: usize,

    /// Request bytes every connection's unanswered calls may hold together; past it the connection
    /// that brings more is reset. With the connection windows, it sizes the pod's memory limit.
    #[arg(long, env = "CONNECT_FACADE_MAX_BUFFERED_REQUESTS", default_value = "32MiB", value_parser = size)]
    pub max_buffered_requests: usize,

    /// Connections open at once on the gRPC listener, handshakes included; past it the connection
    /// idle the longest (see --evict-idle-after) is told to close (GOAWAY) to make room, or, none
    /// being idle, the new connection is closed at once, so its client retries, elsewhere behind a
    /// Service.
    #[arg(long, env = "CONNECT_FACADE_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// At --max-connections, a connection with no call for at least this long may be closed
    /// (GOAWAY) to admit a new one, the one idle the longest first: idle peers that only answer
    /// PINGs cannot hold every place. `0` turns it off.
    #[arg(long, env = "CONNECT_FACADE_EVICT_IDLE_AFTER", default_value = "1s", value_parser = duration)]
    pub evict_idle_after: Duration,

    /// Longest a new connection may take to finish its TLS handshake and send its first bytes (the
    /// HTTP/2 preface); past it, it is closed. Also the metrics endpoint's deadline for a request's
    /// headers.
    #[arg(long, env = "CONNECT_FACADE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// Interval of HTTP/2 keepalive pings, which find dead peers and close their connections.
    #[arg(long, env = "CONNECT_FACADE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "CONNECT_FACADE_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub keepalive_timeout: Duration,

    /// Close a connection (HTTP/2 GOAWAY) that has had no call in flight this long, as grpc-go's
    /// MaxConnectionIdle does: an idle peer, even one answering keepalive PINGs, does not hold a
    /// connection slot until --max-connection-age. Clients reconnect on their next call.
    #[arg(long, env = "CONNECT_FACADE_IDLE_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Close connections older than this (after a GOAWAY and a grace period), so long-lived
    /// HTTP/2 connections rebalance across replicas behind kube-proxy. Together with keepalive it
    /// bounds how long any connection, idle or not, is held.
    #[arg(long, env = "CONNECT_FACADE_MAX_CONNECTION_AGE", default_value = "30m", value_parser = duration)]
    pub max_connection_age: Duration,
}

/// Metrics (logs and traces are configured by RUST_LOG, --log-format and OTEL_* variables).
#[derive(Clone, Debug, Args)]
pub struct TelemetryFlags {
    /// Serve Prometheus metrics on this address (plain HTTP, GET /metrics); off when absent.
    #[arg(long, env = "CONNECT_FACADE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Which log lines are written, as RUST_LOG directives (`info`, `warn`,
    /// `connect_facade=debug,info`…); overrides RUST_LOG, and a reload changes it live (set it in
    /// a --config file, then SIGHUP). RUST_LOG, else `info`, when absent.
    #[arg(long, env = "CONNECT_FACADE_LOG_FILTER", value_parser = log_filter)]
    pub log_filter: Option<String>,

    /// Serve the admin API on this address (GET /status, /config and /logging, POST /logging:
    /// docs/operators/admin.md); off when absent. Open on a loopback address (reach it through
    /// `kubectl port-forward`); any other address needs --admin-token-file.
    #[arg(long, env = "CONNECT_FACADE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// A file holding the bearer token every admin API request must carry (`authorization: Bearer
    /// <token>`); required when --admin-listen is not a loopback address.
    #[arg(long, env = "CONNECT_FACADE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// A `--log-filter` that tracing can use, kept as written.
fn log_filter(text: &str) -> Result<String, String> {
    crate::telemetry::parse_log_filter(text)
        .map(|_| text.to_owned())
        .map_err(|error| error.to_string())
}

/// The embedded Connect simulator, for trying the facade without an AWS account.
#[derive(Clone, Debug, Args)]
pub struct SimulatorFlags {
    /// Start the embedded Connect simulator on a loopback port and call it instead of AWS (dummy
    /// credentials and region; no AWS account needed).
    #[arg(id = "simulator", long = "simulator", env = "CONNECT_FACADE_SIMULATOR")]
    pub enabled: bool,

    /// Fixtures file (YAML or JSON) for the embedded simulator; the built-in demo when absent.
    #[arg(
        id = "simulator_fixtures",
        long = "simulator-fixtures",
        value_name = "SIMULATOR_FIXTURES",
        env = "CONNECT_FACADE_SIMULATOR_FIXTURES",
        requires = "simulator"
    )]
    pub fixtures: Option<PathBuf>,
}
