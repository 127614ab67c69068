//! The command line: one typed configuration per subcommand, every flag also settable through an
//! environment variable `CONNECT_FACADE_<FLAG>`, defaults declared once, here, and shown by `--help`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{simulator::faults::Fault, upstream::StaticCredentials};

/// A gRPC facade over Amazon Connect's CreatePersistentContactAssociation.
#[derive(Debug, Parser)]
#[command(name = "connect-facade", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve amazonconnect.v1.ContactService over gRPC, with reflection and health checking.
    Serve(ServeConfig),
    /// Run the Amazon Connect simulator alone, speaking AWS's HTTP wire format.
    Simulate(SimulateConfig),
}

fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Configuration of `connect-facade serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeConfig {
    /// Address to serve gRPC on. Kubernetes probes reach the pod IP, so bind all interfaces there.
    #[arg(long, env = "CONNECT_FACADE_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// AWS region of the Amazon Connect instance; overrides AWS_REGION and the profile's region.
    #[arg(long, env = "CONNECT_FACADE_REGION")]
    pub region: Option<String>,

    /// Amazon Connect endpoint URL; overrides AWS_ENDPOINT_URL(_CONNECT). For tests and private links.
    #[arg(long, env = "CONNECT_FACADE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// Start the embedded Connect simulator on a loopback port and call it instead of AWS (dummy
    /// credentials and region; no AWS account needed).
    #[arg(long, env = "CONNECT_FACADE_SIMULATOR")]
    pub simulator: bool,

    /// Fixtures file (YAML or JSON) for the embedded simulator; the built-in demo when absent.
    #[arg(
        long,
        env = "CONNECT_FACADE_SIMULATOR_FIXTURES",
        requires = "simulator"
    )]
    pub simulator_fixtures: Option<PathBuf>,

    /// Deadline of a call whose caller sent no grpc-timeout.
    #[arg(long, env = "CONNECT_FACADE_DEFAULT_DEADLINE", default_value = "10s", value_parser = duration)]
    pub default_deadline: Duration,

    /// Longest wait for a TCP/TLS connection to AWS.
    #[arg(long, env = "CONNECT_FACADE_CONNECT_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub connect_timeout: Duration,

    /// Longest wait for one AWS attempt, connection included.
    #[arg(long, env = "CONNECT_FACADE_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub attempt_timeout: Duration,

    /// Fixed AWS credentials instead of the default chain: set by the embedded simulator and tests,
    /// never from the command line (keys do not belong in process listings).
    #[arg(skip)]
    pub static_credentials: Option<StaticCredentials>,
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
            Command::Serve(config) => Ok(config),
            Command::Simulate(_) => unreachable!("the subcommand is serve"),
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
    fn serve_defaults_are_the_documented_ones() {
        let config = ServeConfig::from_args::<_, &str>([]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(config.default_deadline, Duration::from_secs(10));
        assert!(!config.simulator);
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
