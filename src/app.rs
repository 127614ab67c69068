//! Startup as a value: [`App::build`] resolves the AWS client, binds the listener (port 0 picks a free
//! one, which is how tests run it) and wires the gRPC services; [`App::run_until_stopped`] serves until
//! SIGTERM or Ctrl-C. `main` and the tests start exactly the same thing.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;

use crate::{
    api::{admission::AdmissionLayer, connect::ConnectLayer, cors, expiry::ExpiryLayer, grpc},
    auth::{AuthFileError, CallerMetrics, Callers},
    call::{CallMetrics, CallService, Guards, Refusals, RpcMetrics},
    config::{Command, QuotaStoreChoice, ServeConfig, SimulateConfig},
    metrics::MetricsRegistry,
    middleware::UpstreamMetrics,
    proto,
    quota::{QuotaMetrics, stores::QuotaStores},
    replay::{MemoryReplays, RedisReplays, ReplayMetrics, Replayer},
    routes::{
        self, RouteMetrics, RoutesError,
        router::{RouteBuilder, Router},
        spec::RouteSpec,
    },
    serving::{
        lifecycle::{Drain, Shutdown, follow_breakers, set_health},
        listener::{self, AdmissionLimits, ConnectionMetrics},
        metrics_endpoint,
        request_buffers::ProcessBuffers,
        serve::{self, ConnectionSettings},
        tls::{Tls, TlsError, TlsFiles, TlsMetrics},
    },
    simulator::{
        Simulator,
        fixtures::{Fixtures, FixturesError, QuotaFixture},
    },
    store::{SharedStore, StoreMetrics},
    upstream::{StaticCredentials, UpstreamBase, UpstreamConfigError, UpstreamSettings},
};

/// Connections the metrics endpoint holds at once.
const METRICS_MAX_CONNECTIONS: usize = 32;

/// Region and credentials the embedded simulator is called with: it checks their shape, not their value.
const SIMULATOR_REGION: &str = "us-east-1";
const SIMULATOR_ACCESS_KEY_ID: &str = "AKIDCONNECTFACADESIM";
const SIMULATOR_SECRET_ACCESS_KEY: &str = "connect-facade-simulator-secret";

/// Why the service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    #[error(transparent)]
    Fixtures(#[from] FixturesError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("invalid flags: {0}")]
    Flags(&'static str),
    #[error(transparent)]
    Routes(#[from] RoutesError),
    #[error("invalid flags: {0}")]
    Cors(String),
}

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
        tls(config, TlsMetrics::register(&mut MetricsRegistry::new())).map(drop),
        callers(config).map(drop),
        cors::cors(&config.listening.cors_allow_origins)
            .map(drop)
            .map_err(StartupError::Cors),
    ]
    .into_iter()
    .filter_map(Result::err)
    .map(|err| err.to_string())
    .collect()
}

/// Runs `serve` or `simulate` to completion (`config`'s subcommands need no runtime: the binary
/// runs them itself).
pub async fn run(command: Command) -> Result<(), StartupError> {
    match command {
        Command::Config(_) => Ok(()),
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

/// The facade, built and bound, ready to serve.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    calls: CallService,
    admission: AdmissionLayer,
    refusals: Refusals,
    router: Arc<Router>,
    routes_file: Option<std::path::PathBuf>,
    routes_reload_interval: Duration,
    route_metrics: RouteMetrics,
    connection_metrics: ConnectionMetrics,
    /// Every metric family the parts registered, by its exported name.
    metric_families: Vec<String>,
    metrics_endpoint: Option<(SocketAddr, JoinHandle<()>)>,
    shutdown: Shutdown,
    drain: Drain,
    shutdown_grace: Duration,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    tls_reload_interval: Duration,
    readiness_follows_breaker: bool,
    simulator: Option<Simulator>,
    cors: Option<tower_http::cors::CorsLayer>,
}

/// Bounds on what one peer may send or hold, sized to this API.
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    /// The longest any request may take from its arrival, its body's read included.
    default_deadline: Duration,
    max_message_size: usize,
    max_concurrent_streams: u32,
    max_header_list_size: u32,
    connection_window: u32,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    max_connection_age: Duration,
    idle_timeout: Duration,
    max_connection_buffer: usize,
    max_buffered_requests: usize,
    max_open_requests: usize,
    admission: AdmissionLimits,
}

impl From<&ServeConfig> for ConnectionLimits {
    fn from(config: &ServeConfig) -> Self {
        let peers = &config.peers;
        Self {
            default_deadline: config.retries.default_deadline,
            max_message_size: peers.max_message_size,
            max_concurrent_streams: peers.max_concurrent_streams,
            max_header_list_size: peers.max_header_list_size,
            connection_window: peers.connection_window,
            keepalive_interval: peers.keepalive_interval,
            keepalive_timeout: peers.keepalive_timeout,
            max_connection_age: peers.max_connection_age,
            idle_timeout: peers.idle_timeout,
            max_connection_buffer: peers.max_connection_buffer,
            max_buffered_requests: peers.max_buffered_requests,
            max_open_requests: peers.max_open_requests as usize,
            admission: AdmissionLimits {
                max_connections: peers.max_connections as usize,
                handshake_timeout: peers.handshake_timeout,
                await_first_bytes: true,
            },
        }
    }
}

impl ConnectionLimits {
    /// What each connection is served with.
    fn connection_settings(&self, grace: Duration) -> ConnectionSettings {
        ConnectionSettings {
            max_header_list_size: self.max_header_list_size,
            max_concurrent_streams: self.max_concurrent_streams,
            connection_window: self.connection_window,
            stream_window: self.stream_window(),
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            max_connection_age: self.max_connection_age,
            grace,
            idle_timeout: self.idle_timeout,
            max_connection_buffer: self.max_connection_buffer,
        }
    }

    /// Room for the largest accepted message and its gRPC frame header, within the connection's
    /// window and HTTP/2's largest.
    fn stream_window(&self) -> u32 {
        let message = u32::try_from(self.max_message_size.saturating_add(5)).unwrap_or(u32::MAX);
        message.max(65_535).min(self.connection_window.max(65_535))
    }
}

impl App {
    /// Builds everything from the configuration, part by part in the order a call meets them;
    /// fails fast on anything that would fail every call.
    pub async fn build(config: ServeConfig) -> Result<Self, StartupError> {
        config.check().map_err(StartupError::Flags)?;
        let simulator = embedded_simulator(&config).await?;
        let base = UpstreamBase::load(&upstream_settings(&config, simulator.as_ref())).await;
        let specs = route_specs(&config, &base)?;
        let (listener, local_addr) = bind_listener(config.listening.listen).await?;
        // Each part registers its metrics as it is built; the endpoint serves them once all are.
        let mut registry = MetricsRegistry::new();
        let tls = tls(&config, TlsMetrics::register(&mut registry))?;
        let calls = CallMetrics {
            rpc: RpcMetrics::register(&mut registry),
            callers: CallerMetrics::register(&mut registry),
        };
        let upstream_metrics = UpstreamMetrics::register(&mut registry, calls.callers.clone());
        let route_metrics = RouteMetrics::register(&mut registry);
        let connection_metrics = ConnectionMetrics::register(&mut registry);
        let store = SharedParts::build(&config, &mut registry);
        let builder = RouteBuilder::new(
            base,
            config.middleware(),
            store.quota,
            upstream_metrics.clone(),
            route_metrics.clone(),
        );
        let router = Arc::new(Router::new(builder, &specs).await);
        for route in router.table().routes() {
            tracing::info!(route = %route.name, key = %route.key, "Amazon Connect route ready");
        }
        let guards = Guards {
            callers: callers(&config)?,
            replayer: store.replayer,
        };
        let refusals = Refusals::new(calls.rpc.clone());
        let admission = AdmissionLayer::new(
            refusals.clone(),
            guards.callers.clone(),
            config.retries.default_deadline,
        );
        let metric_families = registry.families().to_vec();
        let shutdown = Shutdown::default();
        let metrics_endpoint = match config.telemetry.metrics_listen {
            Some(addr) => Some(
                start_metrics_endpoint(
                    addr,
                    registry,
                    connection_metrics.clone(),
                    config.peers.handshake_timeout,
                    shutdown.stopped.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let drain = Drain::default();
        Ok(Self {
            listener,
            local_addr,
            calls: CallService::new(
                router.clone(),
                config.retries.default_deadline,
                drain.clone(),
                calls,
                refusals.clone(),
                guards,
            ),
            admission,
            refusals,
            route_metrics,
            connection_metrics,
            metric_families,
            metrics_endpoint,
            shutdown,
            router,
            routes_file: config.aws.routes.clone(),
            routes_reload_interval: config.aws.routes_reload_interval,
            drain,
            shutdown_grace: config.listening.shutdown_grace,
            tls,
            tls_reload_interval: config.listening.tls_reload_interval,
            readiness_follows_breaker: config.retries.readiness_follows_breaker,
            cors: cors::cors(&config.listening.cors_allow_origins).map_err(StartupError::Cors)?,
            limits: ConnectionLimits::from(&config),
            simulator,
        })
    }

    /// The address actually bound (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the metrics endpoint, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint.as_ref().map(|(addr, _)| *addr)
    }

    /// Every metric family exported (a counter's name without `_total`): names that the
    /// dashboard, the alert rules and `scripts/monitoring.py` depend on.
    pub fn metric_families(&self) -> &[String] {
        &self.metric_families
    }

    /// The embedded simulator, when serving with `--simulator`.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        self.run_until(crate::signals::shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then drains (see [`crate::serving::lifecycle`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&health_reporter, ServingStatus::Serving).await;
        let draining = self.shutdown.draining.clone();
        let router = self.router.clone();
        let readiness = self.readiness_follows_breaker.then(|| {
            follow_breakers(
                health_reporter.clone(),
                move || router.every_breaker_open(),
                draining.clone(),
            )
        });
        let route_reloads = self.routes_file.clone().map(|path| {
            routes::reload_on_change(
                self.router.clone(),
                path,
                self.routes_reload_interval,
                self.route_metrics.clone(),
                draining.clone(),
            )
        });
        tracing::info!(addr = %self.local_addr, "connect-facade serving gRPC");
        let limits = self.limits;
        let connect = ConnectLayer::new(self.calls.clone(), self.refusals, limits.max_message_size);
        let cors = self.cors;
        let routes = grpc_routes(self.calls, health_service, limits.max_message_size)?;
        // The HTTP stack, outermost first.
        let service = ServiceBuilder::new()
            .option_layer(cors)
            .layer(self.admission)
            // Outside the Connect edge, which reads a body: no request outlives its deadline,
            // however little of it has arrived.
            .layer(ExpiryLayer::new(limits.default_deadline))
            .layer(connect)
            .layer(GrpcWebLayer::new())
            .service(routes);
        let settings = limits.connection_settings(self.shutdown_grace);
        let buffers = ProcessBuffers::new(
            limits.max_buffered_requests,
            limits.max_open_requests,
            self.connection_metrics.clone(),
        );
        let stop_accepting = draining.clone().cancelled_owned();
        let admission = limits.admission;
        let metrics = self.connection_metrics;
        // TLS or not, the connections are of different types, hence the box.
        let mut reloads = None;
        let mut server: Pin<Box<dyn Future<Output = ()> + Send>> = match self.tls {
            Some(tls) => {
                let connections =
                    listener::admit(self.listener, "grpc", admission, metrics, tls.handshake());
                reloads = Some(tls.reload_on_change(self.tls_reload_interval, draining.clone()));
                Box::pin(serve::serve(
                    connections,
                    service,
                    settings,
                    buffers,
                    stop_accepting,
                ))
            }
            None => {
                let connections =
                    listener::admit(self.listener, "grpc", admission, metrics, |stream| {
                        std::future::ready(Ok(stream))
                    });
                Box::pin(serve::serve(
                    connections,
                    service,
                    settings,
                    buffers,
                    stop_accepting,
                ))
            }
        };

        tokio::select! {
            () = &mut server => return Ok(()),
            () = shutdown => {}
        }
        tracing::info!(grace = ?self.shutdown_grace, "shutting down: draining calls in flight");
        draining.cancel();
        if let Some(readiness) = readiness {
            let _ = readiness.await;
        }
        set_health(&health_reporter, ServingStatus::NotServing).await;
        if tokio::time::timeout(self.shutdown_grace, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("grace period over: answering the calls still in flight UNAVAILABLE");
            self.drain.expire();
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut server).await;
        }
        drop(self.simulator);
        self.shutdown.stopped.cancel();
        wait_for_tasks([
            reloads,
            route_reloads,
            self.metrics_endpoint.map(|(_, task)| task),
        ])
        .await;
        tracing::info!("connect-facade stopped");
        Ok(())
    }
}

/// The gRPC services: health, reflection (both versions) and the RPC through its adapter.
fn grpc_routes(
    calls: CallService,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    max_message_size: usize,
) -> Result<Routes, StartupError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    // grpcurl 1.8 speaks only v1alpha reflection, buf curl only v1: serve both.
    Ok(Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(grpc::service(calls, max_message_size)))
}

/// Waits for background tasks already told to stop; none holds more than a file read or a scrape.
async fn wait_for_tasks<const N: usize>(tasks: [Option<JoinHandle<()>>; N]) {
    for task in tasks.into_iter().flatten() {
        if tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .is_err()
        {
            tracing::warn!("a background task did not stop within 1 s");
        }
    }
}

/// With `--simulator`, a Connect simulator on loopback for the facade to call.
async fn embedded_simulator(config: &ServeConfig) -> Result<Option<Simulator>, StartupError> {
    if !config.simulator.enabled {
        return Ok(None);
    }
    let fixtures = Fixtures::load(config.simulator.fixtures.as_deref())?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let simulator = Simulator::start(loopback, fixtures)
        .await
        .map_err(|source| StartupError::Bind {
            addr: loopback,
            source,
        })?;
    Ok(Some(simulator))
}

/// Where and as whom the facade calls AWS: the embedded simulator, or the flags and the default
/// credential chain.
fn upstream_settings(config: &ServeConfig, simulator: Option<&Simulator>) -> UpstreamSettings {
    match simulator {
        Some(simulator) => UpstreamSettings {
            region: Some(
                config
                    .aws
                    .region
                    .clone()
                    .unwrap_or_else(|| SIMULATOR_REGION.to_owned()),
            ),
            endpoint_url: Some(simulator.endpoint_url()),
            static_credentials: Some(StaticCredentials {
                access_key_id: SIMULATOR_ACCESS_KEY_ID.to_owned(),
                secret_access_key: SIMULATOR_SECRET_ACCESS_KEY.to_owned(),
            }),
            connect_timeout: config.aws.connect_timeout,
            attempt_timeout: config.aws.attempt_timeout,
        },
        None => UpstreamSettings {
            region: config.aws.region.clone(),
            endpoint_url: config.aws.endpoint_url.clone(),
            static_credentials: config.static_credentials.clone(),
            connect_timeout: config.aws.connect_timeout,
            attempt_timeout: config.aws.attempt_timeout,
        },
    }
}

/// The routes file's routes, or without one a single route from the flags.
fn route_specs(config: &ServeConfig, base: &UpstreamBase) -> Result<Vec<RouteSpec>, StartupError> {
    Ok(match &config.aws.routes {
        Some(path) => routes::spec::read(path)?,
        None => vec![RouteSpec {
            name: "default".to_owned(),
            instances: vec!["*".to_owned()],
            region: base.region().ok_or(UpstreamConfigError::NoRegion)?,
            role_arn: None,
            external_id: None,
            endpoint_url: None,
            rate_limit: None,
            burst: None,
        }],
    })
}

/// The gRPC listener, with the descriptors it may need.
async fn bind_listener(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    match listener::raise_descriptor_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit (soft, raised to the hard limit)"),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open files limit"),
    }
    bind(addr).await
}

/// A listener on `addr`, and the address it bound (the port chosen for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// TLS on the listener, when a certificate and key are given.
fn tls(config: &ServeConfig, metrics: TlsMetrics) -> Result<Option<Tls>, StartupError> {
    let listening = &config.listening;
    match (&listening.tls_cert, &listening.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(Tls::load(
            TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: listening.tls_client_ca.clone(),
            },
            metrics,
        )?)),
        _ => Ok(None),
    }
}

/// The auth file's callers, with `--auth-file`.
fn callers(config: &ServeConfig) -> Result<Option<Arc<Callers>>, StartupError> {
    match &config.callers.auth_file {
        Some(path) => Ok(Some(Arc::new(Callers::from_path(path)?))),
        None => Ok(None),
    }
}

/// What lives in the store every replica may share: the quota's buckets and replay's answers, on
/// one Redis connection when `--quota-store` names one, in this process otherwise.
struct SharedParts {
    quota: QuotaStores,
    replayer: Option<Arc<Replayer>>,
}

impl SharedParts {
    fn build(config: &ServeConfig, registry: &mut MetricsRegistry) -> Self {
        let store = shared_store(config, StoreMetrics::register(registry));
        let quota = quota_stores(config, store.clone(), QuotaMetrics::register(registry));
        let replay_metrics = ReplayMetrics::register(registry);
        let replayer = (!config.quota.replay_window.is_zero()).then(|| {
            let redis = store.map(|store| {
                RedisReplays::new(store, config.quota.replay_window, replay_metrics.clone())
            });
            Arc::new(Replayer::new(
                MemoryReplays::new(config.quota.replay_capacity, config.quota.replay_window),
                redis,
                replay_metrics,
            ))
        });
        Self { quota, replayer }
    }
}

/// `GET /metrics` on its own listener, serving every part's metrics until `stop`.
async fn start_metrics_endpoint(
    addr: SocketAddr,
    registry: MetricsRegistry,
    connections: ConnectionMetrics,
    handshake_timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), StartupError> {
    let (listener, bound) = bind(addr).await?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    // Prometheus opens one connection per scrape: a few dozen are plenty.
    let limits = AdmissionLimits {
        max_connections: METRICS_MAX_CONNECTIONS,
        handshake_timeout,
        await_first_bytes: false,
    };
    let task = metrics_endpoint::serve(
        listener,
        registry.into_exposition(),
        connections,
        limits,
        stop,
    );
    Ok((bound, task))
}

/// The Redis every replica shares, when `--quota-store` names one: built once, for the quota and
/// the replay cache.
fn shared_store(config: &ServeConfig, metrics: StoreMetrics) -> Option<SharedStore> {
    match &config.quota.quota_store {
        QuotaStoreChoice::Local => None,
        QuotaStoreChoice::Redis(address) => {
            tracing::info!(store = %address, topology = ?address.topology, prefix = %config.quota.quota_key_prefix, "the quota is shared through Redis");
            Some(SharedStore::new(
                address.clone(),
                &config.quota.quota_key_prefix,
                config.quota.quota_store_timeout,
                metrics,
            ))
        }
    }
}

/// Where the quota's buckets live, as `--quota-store` chose (one store per account and region).
fn quota_stores(
    config: &ServeConfig,
    store: Option<SharedStore>,
    metrics: QuotaMetrics,
) -> QuotaStores {
    match store {
        None => QuotaStores::local(),
        Some(store) => QuotaStores::shared(
            store,
            config
                .quota
                .quota_fallback_rate
                .map(|rate| rate / config.quota.rate_limit),
            config.quota.fallback_rate() / config.quota.rate_limit,
            metrics,
        ),
    }
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
