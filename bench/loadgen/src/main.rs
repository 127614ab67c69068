//! `loadgen`: drives connect-facade benchmarks (see scripts/bench.sh and docs/BENCHMARKS.md).
//!
//! - `loadgen run`: calls CreatePersistentContactAssociation over gRPC (the facade, the bare tonic
//!   server, the Python alternative) or with aws-sdk-connect straight to a simulator, closed-loop at
//!   a concurrency or open-loop at a fixed rate, for a duration; prints throughput, latency
//!   percentiles (HDR histogram) and errors by code, and writes JSON.
//! - `loadgen bare-server`: a tonic server whose handler answers at once (the gRPC hop alone).
//! - `loadgen frame`: writes one gRPC-framed request, for h2load.

mod bare;
mod load;
mod pacer;
mod report;
mod target;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(version, about = "Load generator for connect-facade benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run load against a target and report.
    Run(Box<RunArgs>),
    /// Serve ContactService with a handler that answers at once.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: SocketAddr,
    },
    /// Write one gRPC-framed request (5-byte prefix + protobuf), for h2load's --data.
    Frame {
        #[arg(long)]
        out: PathBuf,
    },
}

/// What is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// A gRPC server of the contract (the facade, the bare server, the Python alternative).
    Grpc,
    /// aws-sdk-connect straight to a Connect endpoint (the simulator): no gRPC hop.
    Sdk,
    /// The facade over the Connect protocol, JSON (h2c).
    ConnectJson,
    /// The facade over the Connect protocol, binary (h2c).
    ConnectProto,
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "grpc")]
    pub target: TargetKind,
    /// gRPC server URL (several, comma-separated, to spread the calls over replicas), or the
    /// Connect endpoint URL for `--target sdk`.
    #[arg(long)]
    pub url: String,
    /// Open loop: calls per second, sent on schedule whatever the answers' latency.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: calls in flight at all times (each worker calls again as soon as answered).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Measured time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Closed loop: stop after this many calls instead of at the end of --duration (fixed work, for
    /// instruction counts under callgrind).
    #[arg(long, requires = "concurrency")]
    pub calls: Option<u64>,
    /// Unmeasured time first (connections, pools, caches).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// HTTP/2 connections for gRPC targets (calls are spread round-robin); one connection
    /// serialises on its socket. Default: the concurrency, at most 8 (8 in open loop).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Open loop: what times the sends. Tokio's timer ticks once a millisecond, so above 1,000/s
    /// it sends in groups; a timerfd (Linux) spaces them as scheduled.
    #[arg(long, value_enum, default_value = "timerfd")]
    pub pacing: pacer::Pacing,
    /// Open loop: calls allowed in flight before new ones are counted as dropped.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label for the report (e.g. "facade").
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// gRPC: the client token each call sends (none: the server generates one, as most callers do;
    /// unique: a fresh UUID per call; repeat: the same token every time).
    #[arg(long, value_enum, default_value = "none")]
    pub tokens: target::TokenMode,
    /// gRPC: call as this caller (`authorization: Bearer TOKEN`).
    #[arg(long)]
    pub bearer: Option<String>,
    /// gRPC: each call's deadline (grpc-timeout); none by default.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// gRPC: a call answered DEADLINE_EXCEEDED is sent once more for the same association, with the
    /// same token (or none, with --tokens none), as a client that retries after a timeout does; the
    /// second answer is the call's.
    #[arg(long)]
    pub retry_after_timeout: bool,
    /// gRPC: the Connect instance called (the benchmark fixtures' instance by default).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// gRPC over TLS (https:// URLs): the PEM certificate the servers are trusted by.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => load::run(*args).await,
            Command::BareServer { listen } => bare::serve(listen).await,
            Command::Frame { out } => std::fs::write(&out, target::framed_request())
                .map_err(|err| format!("cannot write {}: {err}", out.display())),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::FAILURE
        }
    }
}
