//! The named builders [`super::App::build`] calls, one per part, in the order a call meets them.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use super::StartupError;
use crate::{
    auth::{Callers, KeyFetchers, LiveCallers},
    config::{QuotaStoreChoice, ServeConfig},
    lifecycle::Tasks,
    metrics::MetricsRegistry,
    quota::{QuotaMetrics, stores::QuotaStores},
    replay::{MemoryReplays, RedisReplays, ReplayMetrics, Replayer},
    routes::{self, spec::RouteSpec},
    serving::{
        listener::{self, AdmissionLimits, ConnectionMetrics},
        metrics_endpoint,
        tls::{Tls, TlsFiles, TlsMetrics},
    },
    simulator::{Simulator, fixtures::Fixtures},
    store::{SharedStore, StoreMetrics},
    upstream::{StaticCredentials, UpstreamBase, UpstreamConfigError, UpstreamSettings},
};

/// Connections the metrics endpoint holds at once.
const METRICS_MAX_CONNECTIONS: usize = 32;

/// Region and credentials the embedded simulator is called with: it checks their shape, not their value.
const SIMULATOR_REGION: &str = "us-east-1";
const SIMULATOR_ACCESS_KEY_ID: &str = "AKIDCONNECTFACADESIM";
const SIMULATOR_SECRET_ACCESS_KEY: &str = "connect-facade-simulator-secret";

/// With `--simulator`, a Connect simulator on loopback for the facade to call.
pub(crate) async fn embedded_simulator(
    config: &ServeConfig,
) -> Result<Option<Simulator>, StartupError> {
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
pub(crate) fn upstream_settings(
    config: &ServeConfig,
    simulator: Option<&Simulator>,
) -> UpstreamSettings {
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
pub(crate) fn route_specs(
    config: &ServeConfig,
    base: &UpstreamBase,
) -> Result<Vec<RouteSpec>, StartupError> {
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
pub(super) async fn bind_listener(
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartupError> {
    match listener::raise_descriptor_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit (soft, raised to the hard limit)"),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open files limit"),
    }
    bind(addr).await
}

/// A listener on `addr`, and the address it bound (the port chosen for port 0).
pub(super) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// TLS on the listener, when a certificate and key are given.
pub(crate) fn tls(config: &ServeConfig, metrics: TlsMetrics) -> Result<Option<Tls>, StartupError> {
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

/// The auth file's callers, with `--auth-file`; `fetchers` fetch the issuers' keys named by URL.
pub(super) fn callers(
    config: &ServeConfig,
    fetchers: KeyFetchers,
) -> Result<Option<LiveCallers>, StartupError> {
    match &config.callers.auth_file {
        Some(path) => Ok(Some(LiveCallers::new(Callers::from_path(path)?, fetchers))),
        None => Ok(None),
    }
}

/// What lives in the store every replica may share: the quota's buckets and replay's answers, on
/// one Redis connection when `--quota-store` names one, in this process otherwise.
pub(super) struct StoreParts {
    pub quota: QuotaStores,
    pub replayer: Option<Arc<Replayer>>,
    /// The shared Redis, when there is one (the admin API shows its state).
    pub store: Option<SharedStore>,
}

impl StoreParts {
    pub(super) fn build(
        config: &ServeConfig,
        registry: &mut MetricsRegistry,
        tasks: &Tasks,
    ) -> Self {
        let store = shared_store(config, StoreMetrics::register(registry), tasks);
        let quota = quota_stores(config, store.clone(), QuotaMetrics::register(registry));
        let replay_metrics = ReplayMetrics::register(registry);
        let replayer = (!config.quota.replay_window.is_zero()).then(|| {
            let redis = store.clone().map(|store| {
                RedisReplays::new(store, config.quota.replay_window, replay_metrics.clone())
            });
            Arc::new(Replayer::new(
                MemoryReplays::new(config.quota.replay_capacity, config.quota.replay_window),
                redis,
                replay_metrics,
                tasks.clone(),
            ))
        });
        Self {
            quota,
            replayer,
            store,
        }
    }
}

/// `GET /metrics` on its own listener, bound now, served (the task) once serving starts.
pub(super) async fn metrics_endpoint(
    addr: SocketAddr,
    registry: MetricsRegistry,
    connections: ConnectionMetrics,
    handshake_timeout: Duration,
    tasks: Tasks,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), StartupError> {
    let (listener, bound) = bind(addr).await?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    // Prometheus opens one connection per scrape: a few dozen are plenty.
    let limits = AdmissionLimits {
        max_connections: METRICS_MAX_CONNECTIONS,
        handshake_timeout,
        await_first_bytes: false,
        evict_idle_after: None,
    };
    let task = metrics_endpoint::serve(
        listener,
        registry.into_exposition(),
        connections,
        limits,
        tasks,
    );
    Ok((bound, task))
}

/// The Redis every replica shares, when `--quota-store` names one: built once, for the quota and
/// the replay cache.
pub(super) fn shared_store(
    config: &ServeConfig,
    metrics: StoreMetrics,
    tasks: &Tasks,
) -> Option<SharedStore> {
    match &config.quota.quota_store {
        QuotaStoreChoice::Local => None,
        QuotaStoreChoice::Redis(address) => {
            tracing::info!(store = %address, topology = ?address.topology, prefix = %config.quota.quota_key_prefix, "the quota is shared through Redis");
            Some(SharedStore::new(
                address.clone(),
                &config.quota.quota_key_prefix,
                config.quota.quota_store_timeout,
                metrics,
                tasks.clone(),
            ))
        }
    }
}

/// Where the quota's buckets live, as `--quota-store` chose (one store per account and region).
pub(super) fn quota_stores(
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
