//! The command line: one typed configuration per subcommand, every flag also settable through an
//! environment variable `CONNECT_FACADE_<FLAG>`, defaults declared once, here, and shown by `--help`.
//! `serve`'s flags come in groups (one struct each, flattened, each under its own `--help`
//! heading), and the checks that span flags are here too ([`ServeConfig::check`]). The same groups
//! are the sections of the configuration file ([`file`]), layered under the environment and the
//! flags by [`load_matches`]; `config print` and `config schema` describe it ([`describe`]).

pub mod describe;
pub mod file;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};

use crate::{
    middleware::{BreakerConfig, MiddlewareConfig, RateLimitConfig, RetryConfig},
    quota::{AdaptiveConfig, QuotaLimits},
    simulator::faults::Fault,
    store::StoreAddress,
    telemetry::LogFormat,
    upstream::StaticCredentials,
};

/// A gRPC facade over Amazon Connect's CreatePersistentContactAssociation.
#[derive(Debug, Parser)]
#[command(name = "connect-facade", version, propagate_version = true)]
pub struct Cli {
    /// Log line format: json (one object per line, the default when stderr is not a terminal),
    /// text, or auto. Filter with RUST_LOG (default info).
    #[arg(long, global = true, env = "CONNECT_FACADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve amazonconnect.v1.ContactService over gRPC, with reflection and health checking.
    Serve(Box<ServeConfig>),
    /// Run the Amazon Connect simulator alone, speaking AWS's HTTP wire format.
    Simulate(SimulateConfig),
    /// Check, print or describe `serve`'s configuration (file, environment and flags) without
    /// serving.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration as `serve` would read it (FILE or --config, then the
    /// environment, then the flags) and every file it names (routes, callers, TLS, fixtures),
    /// without serving. Exits 0 when valid, 1 with every problem listed.
    Check(Box<CheckArgs>),
    /// Print the effective configuration after every layer, as YAML that --config accepts
    /// (secrets redacted).
    Print(Box<ServeConfig>),
    /// Print the JSON Schema of the configuration file, for editors to complete and check it.
    Schema(SchemaArgs),
}

/// `config schema`'s form.
#[derive(Clone, Debug, Args)]
pub struct SchemaArgs {
    /// The reference for people instead (Markdown: every section's keys, their flags, variables,
    /// defaults and meaning), as docs/CONFIGURATION.md holds it.
    #[arg(long)]
    pub markdown: bool,
}

/// `config check`'s files, given as arguments rather than through `--config`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The configuration files to check, in the order `--config` would layer them (instead of
    /// --config).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub serve: ServeConfig,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or variable clap refused (or `--help`, `--version`): clap prints and exits.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The configuration file's problems, each with its file, line and key.
    #[error(transparent)]
    File(#[from] file::FileErrors),
}

/// The command line as given, with the configuration files' values (when `--config` or `config
/// check FILE…` names them) layered between the built-in defaults and the environment: defaults <
/// files < `CONNECT_FACADE_*` < flags. The files' values become the flags' defaults, so clap
/// applies the precedence and each value goes through its flag's own parser. Returns the final
/// command (with those defaults) and what it parsed.
pub fn load_matches(args: &[OsString]) -> Result<(clap::Command, ArgMatches), LoadError> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(args)?;
    let Some((path, files)) = config_files(&matches) else {
        return Ok((command, matches));
    };
    let serve = subcommand_at(&command, &path);
    let mut settings: Vec<file::Setting> = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match file::read(file, serve) {
            // A later file overrides an earlier one's keys: a base file, then an environment's.
            Ok(read) => {
                for setting in read {
                    settings.retain(|earlier| earlier.id != setting.id);
                    settings.push(setting);
                }
            }
            Err(file::FileErrors(found)) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        return Err(file::FileErrors(problems).into());
    }
    let command = with_defaults(command, &path, &settings);
    let matches = command.clone().try_get_matches_from(args)?;
    Ok((command, matches))
}

/// The subcommand holding `serve`'s flags, by its path of names, and the files it names (none:
/// `None`).
pub fn config_files(matches: &ArgMatches) -> Option<(Vec<&'static str>, Vec<PathBuf>)> {
    let files = |m: &ArgMatches, id: &str| -> Vec<PathBuf> {
        m.get_many::<PathBuf>(id)
            .map(|files| files.cloned().collect())
            .unwrap_or_default()
    };
    let (path, files) = match matches.subcommand()? {
        ("serve", m) => (vec!["serve"], files(m, "config")),
        ("config", m) => match m.subcommand()? {
            ("check", m) => {
                let given = files(m, "files");
                let files = if given.is_empty() {
                    files(m, "config")
                } else {
                    given
                };
                (vec!["config", "check"], files)
            }
            ("print", m) => (vec!["config", "print"], files(m, "config")),
            _ => return None,
        },
        _ => return None,
    };
    (!files.is_empty()).then_some((path, files))
}

/// The subcommand at `path` (its names from the top), whose flags a file sets.
pub fn subcommand_at<'a>(command: &'a clap::Command, path: &[&str]) -> &'a clap::Command {
    path.iter().fold(command, |command, name| {
        command
            .find_subcommand(name)
            .expect("the path names existing subcommands")
    })
}

/// The matches of the subcommand at `path`.
pub fn matches_at<'a>(matches: &'a ArgMatches, path: &[&str]) -> Option<&'a ArgMatches> {
    path.iter()
        .try_fold(matches, |matches, name| matches.subcommand_matches(name))
}

fn with_defaults(
    command: clap::Command,
    path: &[&str],
    settings: &[file::Setting],
) -> clap::Command {
    match path.split_first() {
        Some((name, rest)) => {
            command.mut_subcommand(name, |sub| with_defaults(sub, rest, settings))
        }
        None => settings.iter().fold(command, |command, setting| {
            command.mut_arg(setting.id.as_str(), |arg| {
                arg.default_values(setting.values.iter().cloned())
            })
        }),
    }
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a positive number of requests per second"
        )),
    }
}

/// A rate where 0 means "no limit".
fn rate_or_off(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate == 0.0 => Ok(rate),
        _ => positive_rate(text),
    }
}

fn unit_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor > 0.0 && factor <= 1.0 => Ok(factor),
        _ => Err(format!("`{text}` is not a factor in (0, 1]")),
    }
}

/// A size in bytes as people write it: `65536`, `64KiB`, `1 MiB` (K, M and G count in 1,024s).
fn bytes(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text)
        .map_err(|err| format!("`{text}` is not a size in bytes (e.g. 65536, 64KiB, 1MiB): {err}"))
}

fn size(text: &str) -> Result<usize, String> {
    usize::try_from(bytes(text)?).map_err(|_| format!("`{text}` is too large"))
}

fn size_u32(text: &str) -> Result<u32, String> {
    u32::try_from(bytes(text)?).map_err(|_| format!("`{text}` is over 4GiB"))
}

/// An HTTP/2 flow-control window: from the protocol's initial 65,535 bytes to its largest, 2^31 - 1.
fn window(text: &str) -> Result<u32, String> {
    match size_u32(text)? {
        window @ 65_535..=0x7fff_ffff => Ok(window),
        _ => Err(format!("`{text}` is not a window from 65535 bytes to 2GiB")),
    }
}

fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Where the quota's buckets live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaStoreChoice {
    /// In this process.
    Local,
    /// In Redis, shared by every replica (standalone, cluster or sentinel); its `Debug` and
    /// `Display` never show the password.
    Redis(StoreAddress),
}

fn quota_store(text: &str) -> Result<QuotaStoreChoice, String> {
    if text == "local" {
        return Ok(QuotaStoreChoice::Local);
    }
    text.parse()
        .map(QuotaStoreChoice::Redis)
        .map_err(|error: crate::store::address::AddressError| format!("`local`, or {error}"))
}

/// Configuration of `connect-facade serve`: its flags in groups, each under its own `--help`
/// heading (and, in issue 32's file, its own section).
#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    /// YAML configuration file: a section per heading below (simulator, listening, aws, retries,
    /// quota, callers, peers, telemetry), a key per flag, spelled as the flag. Repeatable (or
    /// comma-separated in the variable): a later file overrides an earlier one's keys, e.g. a base
    /// file, then an environment's. The environment and the flags override the files; `config
    /// print` shows the result, `config schema` the files' JSON Schema.
    #[arg(
        long,
        env = "CONNECT_FACADE_CONFIG",
        value_name = "CONFIG",
        value_delimiter = ',',
        help_heading = "Configuration file"
    )]
    pub config: Vec<PathBuf>,

    // First among the groups: the quick start's flag.
    #[command(flatten, next_help_heading = "Simulator")]
    pub simulator: SimulatorFlags,

    #[command(flatten, next_help_heading = "Listening and TLS")]
    pub listening: ListeningFlags,

    #[command(flatten, next_help_heading = "AWS and routes")]
    pub aws: AwsFlags,

    #[command(
        flatten,
        next_help_heading = "Deadlines, retries and the circuit breaker"
    )]
    pub retries: RetryFlags,

    #[command(flatten, next_help_heading = "Quota, store and replay")]
    pub quota: QuotaFlags,

    #[command(flatten, next_help_heading = "Callers")]
    pub callers: CallerFlags,

    #[command(flatten, next_help_heading = "Limits on peers and load")]
    pub peers: PeerLimits,

    #[command(flatten, next_help_heading = "Telemetry")]
    pub telemetry: TelemetryFlags,

    /// Fixed AWS credentials instead of the default chain: set by the embedded simulator and tests,
    /// never from the command line (keys do not belong in process listings).
    #[arg(skip)]
    pub static_credentials: Option<StaticCredentials>,
}

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

    /// How often the TLS files are re-read; changed files are applied to new connections without a
    /// restart (SIGHUP reloads at once). 0 turns the periodic check off.
    #[arg(long, env = "CONNECT_FACADE_TLS_RELOAD_INTERVAL", default_value = "30s", value_parser = duration)]
    pub tls_reload_interval: Duration,

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

    /// How often the routes file is re-read for a change (`0`: only on SIGHUP).
    #[arg(long, env = "CONNECT_FACADE_ROUTES_RELOAD_INTERVAL", default_value = "30s", value_parser = duration)]
    pub routes_reload_interval: Duration,

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
    /// never read). An answer cost about 550 bytes with the previous cache (docs/SCALING.md); answers come at most at the quota's rate
    /// (2/s over a 10-minute window is 1,200 per account), so 20,000 is room for 16 accounts.
    #[arg(long, env = "CONNECT_FACADE_REPLAY_CAPACITY", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub replay_capacity: u64,
}

/// Who may call, and their shares of the quota.
#[derive(Clone, Debug, Args)]
pub struct CallerFlags {
    /// YAML file of the callers allowed to call and the instances each may use (bearer-token SHA-256
    /// or mTLS subject); everyone may call when absent. Reflection and health stay open.
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

    /// Connections open at once on the gRPC listener, handshakes included; past it a new connection
    /// is closed at once, so its client retries, elsewhere behind a Service.
    #[arg(long, env = "CONNECT_FACADE_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

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

impl QuotaFlags {
    /// The rate of the local bucket used while the shared store fails.
    pub fn fallback_rate(&self) -> f64 {
        self.quota_fallback_rate.unwrap_or(self.rate_limit / 2.0)
    }
}

/// Configuration of `connect-facade simulate`.
#[derive(Clone, Debug, Args)]
pub struct SimulateConfig {
    /// Address to serve the simulated Amazon Connect API on.
    #[arg(long, env = "CONNECT_FACADE_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Fixtures file (YAML or JSON): instances, contacts, faults, quota; the built-in demo when absent.
    #[arg(long, env = "CONNECT_FACADE_FIXTURES")]
    pub fixtures: Option<PathBuf>,

    /// A fault rule added to the fixtures' own, as comma-separated key=value pairs, e.g.
    /// `kind=error,code=ThrottlingException,times=2,instance_id=ID`; kinds: error (code, status,
    /// message), latency (millis), unparseable, drop_connection, drop_after_apply. Repeatable; in the
    /// environment variable, separate rules with `;`.
    #[arg(long = "fault", env = "CONNECT_FACADE_FAULT", value_delimiter = ';')]
    pub faults: Vec<Fault>,

    /// Account request-rate quota in requests per second (answered with ThrottlingException past it);
    /// overrides the fixtures' quota. Amazon Connect's default for most operations is 2.
    #[arg(long, env = "CONNECT_FACADE_QUOTA_RATE", requires = "quota_burst")]
    pub quota_rate: Option<f64>,

    /// Burst allowed by the quota (Amazon Connect's default: 5).
    #[arg(long, env = "CONNECT_FACADE_QUOTA_BURST", requires = "quota_rate")]
    pub quota_burst: Option<u32>,
}

impl ServeConfig {
    /// The middleware's settings.
    pub fn middleware(&self) -> MiddlewareConfig {
        MiddlewareConfig {
            retry: RetryConfig {
                max_attempts: self.retries.max_attempts,
                base_delay: self.retries.retry_base_delay,
                throttled_base_delay: self.retries.retry_throttled_base_delay,
                max_delay: self.retries.retry_max_delay,
                budget_ratio: self.retries.retry_budget_percent as f32 / 100.0,
                budget_min_per_second: self.retries.retry_budget_min_per_second,
                budget_window: self.retries.retry_budget_window,
            },
            rate_limit: RateLimitConfig {
                limits: self.quota_limits(),
                max_queue_wait: self.quota.max_queue_wait,
            },
            breaker: BreakerConfig {
                failure_threshold: self.retries.breaker_failures,
                cool_down: self.retries.breaker_cool_down,
            },
            max_in_flight: self.peers.max_in_flight as usize,
            max_waiting: self.peers.max_waiting as usize,
        }
    }

    /// The quota's limits per account and region.
    pub fn quota_limits(&self) -> QuotaLimits {
        QuotaLimits {
            rate_per_second: self.quota.rate_limit,
            burst: self.quota.rate_burst,
            per_instance: self
                .quota
                .instance_rate_limit
                .map(|rate| (rate, self.quota.instance_rate_burst)),
            adaptive: AdaptiveConfig {
                decrease_factor: self.quota.adaptive_decrease,
                increase_per_second: self.quota.adaptive_increase,
            },
        }
    }

    /// The checks that span flags (each flag's own value is checked as it is parsed).
    pub fn check(&self) -> Result<(), &'static str> {
        let quota = &self.quota;
        if quota.rate_limit == 0.0 && quota.instance_rate_limit.is_some() {
            return Err(
                "--instance-rate-limit needs the account-wide limiter (--rate-limit above 0)",
            );
        }
        if quota.rate_limit == 0.0 && quota.quota_store != QuotaStoreChoice::Local {
            return Err("--quota-store shares the account-wide limiter: set --rate-limit above 0");
        }
        // clap checks `requires` on the command line only; a file's values arrive as defaults.
        let listening = &self.listening;
        if listening.tls_cert.is_some() != listening.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together");
        }
        if listening.tls_client_ca.is_some() && listening.tls_cert.is_none() {
            return Err("--tls-client-ca needs --tls-cert and --tls-key");
        }
        if self.simulator.fixtures.is_some() && !self.simulator.enabled {
            return Err("--simulator-fixtures needs --simulator");
        }
        Ok(())
    }

    /// The `serve` configuration from command-line style arguments (no program name, no subcommand),
    /// with every default applied: how tests and embedders build one.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let full = ["connect-facade".into(), "serve".into()]
            .into_iter()
            .chain(args.into_iter().map(Into::into));
        match Cli::try_parse_from(full)?.command {
            Command::Serve(config) => Ok(*config),
            _ => unreachable!("the subcommand is serve"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_serve_flag_sits_under_a_heading_and_names_its_value_after_itself() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let mut flags = 0;
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version" | "log-format") {
                continue;
            }
            flags += 1;
            assert!(
                arg.get_help_heading().is_some(),
                "--{long} is under no heading"
            );
            if !arg.get_action().takes_values() {
                continue;
            }
            let expected = long.to_uppercase().replace('-', "_");
            for name in arg.get_value_names().unwrap_or_default() {
                assert_eq!(name.as_str(), expected, "--{long}'s value name");
            }
        }
        assert!(flags > 50, "{flags} flags");
    }

    #[test]
    fn flags_that_need_the_account_limiter_are_refused_without_it() {
        let check = |args: &[&str]| ServeConfig::from_args(args).unwrap().check();
        assert!(check(&["--rate-limit", "0"]).is_ok());
        let error = check(&["--rate-limit", "0", "--instance-rate-limit", "1"]).unwrap_err();
        assert!(error.contains("--instance-rate-limit"), "{error}");
        let error = check(&["--rate-limit", "0", "--quota-store", "redis://r:6379"]).unwrap_err();
        assert!(error.contains("--quota-store"), "{error}");
    }

    #[test]
    fn serve_defaults_are_the_documented_ones() {
        let config = ServeConfig::from_args::<_, &str>([]).unwrap();
        assert_eq!(config.listening.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(config.retries.default_deadline, Duration::from_secs(10));
        assert!(!config.simulator.enabled);
    }

    #[test]
    fn the_quota_store_is_local_or_a_redis_url_whose_password_never_shows() {
        let local = ServeConfig::from_args::<_, &str>([]).unwrap();
        assert_eq!(local.quota.quota_store, QuotaStoreChoice::Local);
        assert_eq!(local.quota.fallback_rate(), 1.0, "half the default 2/s");
        let redis =
            ServeConfig::from_args(["--quota-store", "rediss://app:s3cret@cache:6380/2"]).unwrap();
        assert_eq!(
            redis.quota.quota_store,
            QuotaStoreChoice::Redis("rediss://app:s3cret@cache:6380/2".parse().unwrap())
        );
        let shown = format!("{redis:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("@cache:6380/2"), "{shown}");
        let error = ServeConfig::from_args(["--quota-store", "memcached://x"]).unwrap_err();
        assert!(error.to_string().contains("redis://"), "{error}");
        let sentinel = ServeConfig::from_args([
            "--quota-store",
            "redis+sentinel://s1:26379,s2:26379/mymaster",
        ])
        .unwrap();
        assert!(
            matches!(sentinel.quota.quota_store, QuotaStoreChoice::Redis(a) if a.nodes.len() == 2)
        );
    }

    #[test]
    fn faults_parse_from_repeated_flags() {
        let cli = Cli::try_parse_from([
            "connect-facade",
            "simulate",
            "--fault",
            "kind=latency,millis=10",
            "--fault",
            "kind=unparseable",
        ])
        .unwrap();
        let Command::Simulate(config) = cli.command else {
            panic!("simulate expected")
        };
        assert_eq!(config.faults.len(), 2);
    }
}
