//! Startup as a value: [`App::build`] builds every part from the configuration (the AWS client, the
//! routes, the quota and replay stores, the HTTP stack, health, and the background tasks, not yet
//! started) and binds the listeners (port 0 picks a free one, which is how tests run it);
//! [`App::run_until`] serves, drains and stops, through the one [`Lifecycle`]. `main` and the tests
//! start, and stop, exactly the same thing.

mod commands;
mod http;
mod parts;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tonic_health::{ServingStatus, server::HealthReporter};

pub use commands::{check, run, runtime};
// What `connect-facade check` builds as `serve` would.
pub(crate) use http::LivePeers;
pub(crate) use parts::{embedded_simulator, route_specs, tls, upstream_settings};

use crate::{
    admin,
    api::{admission::AdmissionLayer, connect::ConnectLayer, cors},
    auth::{AuthFileError, CallerMetrics, JwksMetrics, KeyFetchers},
    call::{CallMetrics, CallService, Guards, Refusals, RpcMetrics, deadline::DefaultDeadline},
    config::ServeConfig,
    lifecycle::Lifecycle,
    metrics::MetricsRegistry,
    middleware::UpstreamMetrics,
    reload::{Live, ReloadMetrics, Reloader},
    routes::{
        RouteMetrics, RoutesError,
        router::{RouteBuilder, Router},
    },
    serving::{
        activity::Connections,
        listener::{self, ConnectionMetrics},
        readiness::{follow_breakers, set_health},
        request_buffers::ProcessBuffers,
        serve,
        tls::{TlsError, TlsMetrics},
    },
    simulator::{Simulator, fixtures::FixturesError},
    telemetry,
    upstream::{UpstreamBase, UpstreamConfigError},
};

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
    #[error("invalid flags: {0}")]
    Flags(&'static str),
    #[error(transparent)]
    Routes(#[from] RoutesError),
    #[error("invalid flags: {0}")]
    Cors(String),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// A background task built with its part, spawned when serving starts.
type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The TLS handshake of each accepted connection, with the certificate in force.
type Handshake = Box<dyn Fn(TcpStream) -> tokio_rustls::Accept<TcpStream> + Send>;

/// How long the background tasks have to end once told to stop; none holds more than a file read,
/// a scrape or a Redis round trip.
const TASKS_STOP_WITHIN: Duration = Duration::from_secs(1);

/// The facade, built and bound, ready to serve.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: http::HttpService,
    handshake: Option<Handshake>,
    health: HealthReporter,
    background: Vec<Background>,
    lifecycle: Lifecycle,
    metrics_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    /// Every metric family the parts registered, by its exported name.
    metric_families: Vec<String>,
    connection_metrics: ConnectionMetrics,
    limits: http::ConnectionLimits,
    /// The limits on peers in force, which a reload may change.
    peers: http::LivePeers,
    shutdown_grace: Duration,
    simulator: Option<Simulator>,
    /// The failed-call lines' budget, whose last count of lines left out is written at shutdown.
    refusals: Refusals,
}

impl App {
    /// Builds everything from the configuration, part by part in the order a call meets them;
    /// fails fast on anything that would fail every call.
    pub async fn build(config: ServeConfig) -> Result<Self, StartupError> {
        config.check().map_err(StartupError::Flags)?;
        let lifecycle = Lifecycle::default();
        let tasks = lifecycle.tasks();
        let mut background: Vec<Background> = Vec::new();
        let simulator = parts::embedded_simulator(&config).await?;
        let base = UpstreamBase::load(&parts::upstream_settings(&config, simulator.as_ref())).await;
        let specs = parts::route_specs(&config, &base)?;
        let (listener, local_addr) = parts::bind_listener(config.listening.listen).await?;
        // Each part registers its metrics as it is built; the endpoint serves them once all are.
        let mut registry = MetricsRegistry::new();
        let tls = parts::tls(&config, TlsMetrics::register(&mut registry))?;
        let calls = CallMetrics {
            rpc: RpcMetrics::register(&mut registry),
            callers: CallerMetrics::register(&mut registry),
        };
        let upstream_metrics = UpstreamMetrics::register(&mut registry, calls.callers.clone());
        let route_metrics = RouteMetrics::register(&mut registry);
        let connection_metrics = ConnectionMetrics::register(&mut registry);
        let shared = parts::StoreParts::build(&config, &mut registry, &tasks);
        let shared_store = shared.store.clone();
        let reload_base = base.clone();
        let builder = RouteBuilder::new(
            base,
            config.middleware(),
            shared.quota,
            upstream_metrics,
            route_metrics.clone(),
            tasks.clone(),
        );
        let router = Arc::new(Router::new(builder, &specs).await);
        for route in router.table().routes() {
            tracing::info!(route = %route.name, key = route.key.as_str(), "Amazon Connect route ready");
        }
        let router_for_reloads = router.clone();
        let live_callers = parts::callers(
            &config,
            KeyFetchers::new(tasks.clone(), JwksMetrics::register(&mut registry)),
        )?;
        let guards = Guards {
            callers: live_callers.clone(),
            replayer: shared.replayer,
        };
        let limits = http::ConnectionLimits::from(&config);
        let peers = http::LivePeers::new(&limits, config.listening.shutdown_grace);
        let default_deadline = DefaultDeadline::new(limits.default_deadline);
        let refusals = Refusals::new(calls.rpc.clone());
        let recent_refusals = refusals.recent().clone();
        let shutdown_refusals = refusals.clone();
        let admission = AdmissionLayer::new(
            refusals.clone(),
            guards.callers.clone(),
            calls.callers.clone(),
            default_deadline.clone(),
        );
        let calls = CallService::new(
            router.clone(),
            default_deadline.clone(),
            lifecycle.clone(),
            calls,
            refusals.clone(),
            guards,
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        if config.retries.readiness_follows_breaker {
            background.push(Box::pin(follow_breakers(
                health.clone(),
                move || router.every_breaker_open(),
                lifecycle.draining(),
            )));
        }
        let service = http::stack(
            cors::cors(&config.listening.cors_allow_origins).map_err(StartupError::Cors)?,
            admission,
            ConnectLayer::new(calls.clone(), refusals.clone(), limits.max_message_size),
            http::grpc_routes(calls, health_service, limits.max_message_size)?,
            (default_deadline.clone(), refusals),
        );
        let handshake = tls.as_ref().map(|tls| {
            let handshake: Handshake = Box::new(tls.handshake());
            handshake
        });
        if let Err(error) = telemetry::set_log_filter(config.telemetry.log_filter.as_deref()) {
            tracing::error!(%error, "the log filter could not be set");
        }
        let admin_parts = (
            router_for_reloads.clone(),
            shared_store,
            live_callers.clone(),
            recent_refusals,
        );
        let reloader = Reloader::new(
            config.clone(),
            specs,
            Live {
                router: router_for_reloads,
                route_metrics,
                callers: live_callers,
                tls,
                base: reload_base,
                default_deadline,
                peers: peers.clone(),
            },
            ReloadMetrics::register(&mut registry),
        );
        let in_force = reloader.view();
        background.push(Box::pin(
            reloader.run(config.listening.reload_interval, lifecycle.draining()),
        ));
        let admin_addr = match config.telemetry.admin_listen {
            Some(addr) => {
                let token = admin::token(addr, config.telemetry.admin_token_file.as_deref())?;
                let (listener, bound) = parts::bind(addr).await?;
                tracing::info!(addr = %bound, "admin API on http://{bound}/status");
                let (router, store, callers, refusals) = admin_parts;
                background.push(Box::pin(admin::serve(
                    listener,
                    admin::AdminState {
                        started: std::time::Instant::now(),
                        router,
                        store,
                        callers,
                        refusals,
                        in_force,
                        draining: lifecycle.draining(),
                        token,
                    },
                    connection_metrics.clone(),
                    config.peers.handshake_timeout,
                    tasks.clone(),
                )));
                Some(bound)
            }
            None => None,
        };
        let metric_families = registry.families().to_vec();
        let metrics_addr = match config.telemetry.metrics_listen {
            Some(addr) => {
                let (bound, endpoint) = parts::metrics_endpoint(
                    addr,
                    registry,
                    connection_metrics.clone(),
                    config.peers.handshake_timeout,
                    tasks.clone(),
                )
                .await?;
                background.push(Box::pin(endpoint));
                Some(bound)
            }
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            service,
            handshake,
            health,
            background,
            lifecycle,
            metrics_addr,
            admin_addr,
            metric_families,
            connection_metrics,
            limits,
            peers,
            shutdown_grace: config.listening.shutdown_grace,
            simulator,
            refusals: shutdown_refusals,
        })
    }

    /// The address actually bound (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the metrics endpoint, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address of the admin API, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
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

    /// Serves until `shutdown` completes, then drains the calls in flight for up to the grace
    /// period (answering those still running UNAVAILABLE after it) and stops every task.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
        let Self {
            listener,
            local_addr,
            service,
            handshake,
            health,
            background,
            lifecycle,
            connection_metrics,
            limits,
            peers,
            shutdown_grace,
            simulator,
            refusals,
            ..
        } = self;
        let tasks = lifecycle.tasks();
        for task in background {
            tasks.spawn(task);
        }
        set_health(&health, ServingStatus::Serving).await;
        tracing::info!(addr = %local_addr, "connect-facade serving gRPC");
        let settings = peers.connections();
        let buffers = ProcessBuffers::new(
            limits.max_buffered_requests,
            limits.max_open_requests,
            connection_metrics.clone(),
        );
        let stop_accepting = lifecycle.draining().cancelled_owned();
        let served = Connections::default();
        let admission = (peers.admission(), Some(served.clone()));
        let buffers = (buffers, served);
        // TLS or not, the connections are of different types, hence the box.
        let mut server: Pin<Box<dyn Future<Output = ()> + Send>> = match handshake {
            Some(handshake) => {
                let connections =
                    listener::admit(listener, "grpc", admission, connection_metrics, handshake);
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
                    listener::admit(listener, "grpc", admission, connection_metrics, |stream| {
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
        tracing::info!(grace = ?shutdown_grace, "shutting down: draining calls in flight");
        lifecycle.begin_draining();
        set_health(&health, ServingStatus::NotServing).await;
        if tokio::time::timeout(shutdown_grace, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("grace period over: answering the calls still in flight UNAVAILABLE");
            lifecycle.expire();
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut server).await;
        }
        drop(simulator);
        if !lifecycle.stop(TASKS_STOP_WITHIN).await {
            tracing::warn!(within = ?TASKS_STOP_WITHIN, "a background task did not stop in time");
        }
        // The failed-call lines left out since the last report: no later line will report them.
        refusals.flush_log();
        tracing::info!("connect-facade stopped");
        Ok(())
    }
}
