//! The command line: one typed configuration per subcommand, every flag also settable through an
//! environment variable `CONNECT_FACADE_<FLAG>`, defaults declared once, here, and shown by `--help`.
//! `serve`'s flags come in groups (one struct each, flattened, each under its own `--help`
//! heading, in [`groups`]), and the checks that span flags are [`ServeConfig::check`]. The same
//! groups are the sections of the configuration file ([`file`]), layered under the environment and
//! the flags by [`load_matches`]; `config print` and `config schema` describe it ([`describe`]).
//! Each flag's value is read by its parser in [`parse`].

pub mod describe;
pub mod file;
mod groups;
mod load;
mod parse;
mod serve;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

pub use groups::{
    AwsFlags, CallerFlags, ListeningFlags, PeerLimits, QuotaFlags, RetryFlags, SimulatorFlags,
    TelemetryFlags,
};
pub use load::{LoadError, config_files, load_matches, matches_at, subcommand_at};
pub use parse::QuotaStoreChoice;
pub use serve::ServeConfig;

use crate::{simulator::faults::Fault, telemetry::LogFormat};

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
    /// Check, before the first call, that `serve` with this configuration can do its job: the
    /// files, the region, the credentials, who AWS says the facade is, the clock, each route's role
    /// and permission on its instances, the quota store and its scripts, the TLS certificate's
    /// expiry and the callers' instances. One line per check; exits 0 when no error is found (a
    /// warning does not fail it), 1 otherwise. Changes nothing an operator would notice.
    Check(Box<PreflightArgs>),
    /// Show one replica's state from its admin API (--admin-listen): the routes with their rate
    /// in force, queue and breaker, the quota store, the callers and the last refusals. Exits 1
    /// when the replica is not serving (draining, or no answer).
    Status(StatusArgs),
}

/// `status`'s flags.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// The replica's admin API (its --admin-listen address; through `kubectl port-forward` for
    /// a pod).
    #[arg(
        long,
        env = "CONNECT_FACADE_ADMIN_URL",
        default_value = "http://127.0.0.1:9901"
    )]
    pub url: String,

    /// A file holding the admin API's bearer token (the replica's --admin-token-file).
    #[arg(long, env = "CONNECT_FACADE_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Refresh every --interval until interrupted, instead of showing it once.
    #[arg(long)]
    pub watch: bool,

    /// How often --watch refreshes.
    #[arg(long, default_value = "1s", value_parser = parse::duration)]
    pub interval: std::time::Duration,
}

/// `check`'s own flags, beside `serve`'s.
#[derive(Clone, Debug, Args)]
pub struct PreflightArgs {
    /// How to answer: text (one line per check, with the fix under a failure) or json
    /// (`{"ok", "checks": [{"name", "ok", "severity", "message", "fix", "link", "seconds"}]}`).
    #[arg(long, value_enum, default_value_t = PreflightOutput::Text)]
    pub output: PreflightOutput,

    /// An instance to probe for its route's permission (repeatable), beyond those the routes and
    /// the callers name; a route that serves `*` has no instance to probe otherwise.
    #[arg(long = "instance", value_name = "INSTANCE_ID")]
    pub instances: Vec<String>,

    /// The longest any one network step (AWS, STS, Redis) may take.
    #[arg(long, default_value = "5s", value_parser = parse::duration)]
    pub step_timeout: std::time::Duration,

    #[command(flatten)]
    pub serve: ServeConfig,
}

/// `check --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PreflightOutput {
    Text,
    Json,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

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
