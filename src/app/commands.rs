//! The binary's commands on the library: the runtime `serve` and `simulate` run on, what
//! `config check` validates, and running a command to its end.

use crate::{
    api::cors,
    auth::KeyFetchers,
    config::{Command, ServeConfig, SimulateConfig},
    metrics::MetricsRegistry,
    routes,
    serving::tls::TlsMetrics,
    simulator::{
        Simulator,
        fixtures::{Fixtures, QuotaFixture},
    },
};

use super::{App, StartupError, parts};

/// The Tokio runtime the process runs on, sized to the CPUs it may use (`available_parallelism`
/// reads the affinity mask and the cgroup CPU quota, so a pod limited to one CPU counts one).
///
/// On one CPU, a current-thread runtime: a multi-thread runtime would run a single worker anyway,
/// but pay for work stealing it cannot do (atomic queues, a thread hand-off per wake-up); the
/// current-thread scheduler served the same calls with less CPU (docs/BENCHMARKS.md). Setting
/// `TOKIO_WORKER_THREADS` asks for the multi-thread runtime with that many workers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers_asked = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    let mut builder = match scheduler_for(cpus, workers_asked) {
        Scheduler::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Scheduler::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

#[derive(Debug, PartialEq, Eq)]
enum Scheduler {
    CurrentThread,
    MultiThread,
}

fn scheduler_for(cpus: usize, workers_asked: bool) -> Scheduler {
    if cpus <= 1 && !workers_asked {
        Scheduler::CurrentThread
    } else {
        Scheduler::MultiThread
    }
}

/// `config check`: everything `serve` would refuse at startup from its configuration (the checks
/// across flags, the routes, callers, TLS and fixtures files, the CORS origins), without binding a
/// port, reaching AWS or Redis, or serving; every problem, not only the first.
pub fn check(config: &ServeConfig) -> Vec<String> {
    // Each through the error `serve` would stop with, so both say the same.
    let fixtures = |path| {
        Fixtures::load(Some(path))
            .map(drop)
            .map_err(StartupError::from)
    };
    let routes = |path| {
        routes::spec::read(path)
            .map(drop)
            .map_err(StartupError::from)
    };
    [
        config.check().map_err(StartupError::Flags),
        config
            .simulator
            .fixtures
            .as_deref()
            .map_or(Ok(()), fixtures),
        config.aws.routes.as_deref().map_or(Ok(()), routes),
        parts::tls(config, TlsMetrics::register(&mut MetricsRegistry::new())).map(drop),
        parts::callers(config, KeyFetchers::default()).map(drop),
        cors::cors(&config.listening.cors_allow_origins)
            .map(drop)
            .map_err(StartupError::Cors),
    ]
    .into_iter()
    .filter_map(Result::err)
    .map(|err| err.to_string())
    .collect()
}

/// Runs `serve` or `simulate` to completion (`config`'s subcommands need no runtime, and `check`
/// answers a report rather than an error: the binary runs them itself).
pub async fn run(command: Command) -> Result<(), StartupError> {
    match command {
        Command::Config(_) | Command::Check(_) | Command::Status(_) => Ok(()),
        Command::Serve(config) => App::build(*config).await?.run_until_stopped().await,
        Command::Simulate(config) => {
            let simulator = start_simulator(&config).await?;
            println!(
                "Connect simulator listening on {}",
                simulator.endpoint_url()
            );
            simulator.run_until_stopped().await;
            Ok(())
        }
    }
}

async fn start_simulator(config: &SimulateConfig) -> Result<Simulator, StartupError> {
    let mut fixtures = Fixtures::load(config.fixtures.as_deref())?;
    fixtures.faults.extend(config.faults.iter().cloned());
    if let (Some(rate_per_second), Some(burst)) = (config.quota_rate, config.quota_burst) {
        fixtures.quota = Some(QuotaFixture {
            rate_per_second,
            burst,
        });
    }
    Simulator::start(config.listen, fixtures)
        .await
        .map_err(|source| StartupError::Bind {
            addr: config.listen,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_runs_the_current_thread_scheduler_unless_workers_are_asked_for() {
        assert_eq!(scheduler_for(1, false), Scheduler::CurrentThread);
        assert_eq!(scheduler_for(1, true), Scheduler::MultiThread);
        assert_eq!(scheduler_for(2, false), Scheduler::MultiThread);
        assert_eq!(scheduler_for(8, true), Scheduler::MultiThread);
    }
}
