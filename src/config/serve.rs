//! `serve`'s configuration: its flag groups flattened into one value, what the parts are built
//! from, and the checks that span flags.

use std::path::PathBuf;

use clap::{Args, Parser};

use super::{
    AwsFlags, CallerFlags, Cli, Command, ListeningFlags, PeerLimits, QuotaFlags, QuotaStoreChoice,
    RetryFlags, SimulatorFlags, TelemetryFlags,
};
use crate::{
    middleware::{BreakerConfig, MiddlewareConfig, RateLimitConfig, RetryConfig},
    quota::{AdaptiveConfig, QuotaLimits},
    upstream::StaticCredentials,
};

/// Configuration of `connect-facade serve`: its flags in groups, each under its own `--help`
/// heading and in its own section of the configuration file.
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

    /// The command line `serve` was started with (the binary's name first), which a reload reads
    /// again, with the --config files, as at startup. Empty: the configuration was built in code
    /// (tests), and a reload re-reads only the files it names.
    #[arg(skip)]
    pub command_line: Vec<std::ffi::OsString>,
}

impl QuotaFlags {
    /// The rate of the local bucket used while the shared store fails.
    pub fn fallback_rate(&self) -> f64 {
        self.quota_fallback_rate.unwrap_or(self.rate_limit / 2.0)
    }
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
            reconcile_associations: self.quota.reconcile_associations,
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
