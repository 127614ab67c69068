//! One connection to the shared store, whatever its topology: the quota's and the replay cache's
//! scripts run on a [`StoreConnection`] and never learn which Redis they talk to.
//!
//! - one node (`redis://`): a standalone Redis gets the `redis` crate's `ConnectionManager`; a
//!   Cluster node seeds a cluster connection (asked `INFO cluster` on first use);
//! - Cluster: the crate's cluster connection, routed by the keys' hash tag;
//! - Sentinel: [`SentinelMaster`] asks the sentinels for the master and forgets it on any error that
//!   says it is gone or no longer master.
//!
//! Connecting is lazy, and every round trip bounded by the store timeout. The reasoning: the book's
//! "Designs" chapter.

use std::{sync::Arc, time::Duration};

use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsMode, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use tokio::sync::OnceCell;

use super::address::{StoreAddress, Topology};

/// The connection, connected on first use.
#[derive(Clone)]
pub struct StoreConnection {
    inner: Arc<Inner>,
}

struct Inner {
    address: StoreAddress,
    timeout: Duration,
    connected: OnceCell<Connected>,
}

/// Which topology the store turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Standalone,
    Cluster,
    Sentinel,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

#[derive(Clone)]
enum Connected {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelMaster),
}

impl StoreConnection {
    /// A connection to `address`; nothing is dialled yet.
    pub fn new(address: StoreAddress, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                address,
                timeout,
                connected: OnceCell::new(),
            }),
        }
    }

    /// The topology, once connected.
    pub(crate) fn kind(&self) -> Option<Kind> {
        self.inner.connected.get().map(|connected| match connected {
            Connected::Standalone(_) => Kind::Standalone,
            Connected::Cluster(_) => Kind::Cluster,
            Connected::Sentinel(_) => Kind::Sentinel,
        })
    }

    async fn connected(&self) -> RedisResult<Connected> {
        let inner = &self.inner;
        inner
            .connected
            .get_or_try_init(|| connect(&inner.address, inner.timeout))
            .await
            .cloned()
    }
}

fn async_config(timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}

async fn connect(address: &StoreAddress, timeout: Duration) -> RedisResult<Connected> {
    let connected = match &address.topology {
        Topology::Node => {
            let client = Client::open(address.node())?;
            let mut probe = client
                .get_multiplexed_async_connection_with_config(&async_config(timeout))
                .await?;
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut probe)
                .await?;
            if info.contains("cluster_enabled:1") {
                Connected::Cluster(cluster(&address.nodes, timeout).await?)
            } else {
                Connected::Standalone(standalone(client, timeout)?)
            }
        }
        Topology::Cluster => Connected::Cluster(cluster(&address.nodes, timeout).await?),
        Topology::Sentinel { service } => {
            Connected::Sentinel(SentinelMaster::new(address, service, timeout)?)
        }
    };
    Ok(connected)
}

fn standalone(client: Client, timeout: Duration) -> RedisResult<ConnectionManager> {
    // One quick reconnection attempt per failure: the store's probe asks again each interval, and a
    // call never waits for a reconnection past its own bound.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

async fn cluster(nodes: &[String], timeout: Duration) -> RedisResult<ClusterConnection> {
    ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // A redirection or a refreshed slot map is retried at once; a node that does not answer
        // is the store's timeout's business, not a retry loop's.
        .retries(2)
        .min_retry_wait(5)
        .max_retry_wait(50)
        .build()?
        .get_async_connection()
        .await
}

/// The master of a Sentinel-monitored service, found again after a failover.
#[derive(Clone)]
struct SentinelMaster {
    sentinels: Arc<tokio::sync::Mutex<SentinelClient>>,
    master: Arc<parking_lot::Mutex<Option<MultiplexedConnection>>>,
    config: AsyncConnectionConfig,
}

impl SentinelMaster {
    fn new(address: &StoreAddress, service: &str, timeout: Duration) -> RedisResult<Self> {
        let mut sentinels = Vec::new();
        let mut master_settings = None;
        for node in &address.nodes {
            let info = node.as_str().into_connection_info()?;
            master_settings.get_or_insert_with(|| info.redis_settings().clone());
            // The URL's credentials and database are the master's, not the sentinels'.
            sentinels.push(info.set_redis_settings(Default::default()));
        }
        let mut master = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(master_settings.unwrap_or_default());
        if address.tls {
            master = master.set_tls_mode(TlsMode::Secure);
        }
        let client =
            SentinelClient::build(sentinels, service, Some(master), SentinelServerType::Master)?;
        Ok(Self {
            sentinels: Arc::new(tokio::sync::Mutex::new(client)),
            master: Arc::new(parking_lot::Mutex::new(None)),
            config: async_config(timeout),
        })
    }

    /// The master's connection, asking the sentinels for the master when there is none.
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.master.lock().clone() {
            return Ok(connection);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another request may have found the master while this one waited for the sentinels.
        if let Some(connection) = self.master.lock().clone() {
            return Ok(connection);
        }
        let connection = sentinels
            .get_async_connection_with_config(&self.config)
            .await?;
        *self.master.lock() = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets the master after an error that says it is gone or no longer master.
    fn saw<T>(&self, outcome: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &outcome
            && master_lost(error)
        {
            *self.master.lock() = None;
        }
        outcome
    }
}

fn master_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

impl ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.connected().await? {
                Connected::Standalone(mut connection) => connection.req_packed_command(cmd).await,
                Connected::Cluster(mut connection) => connection.req_packed_command(cmd).await,
                Connected::Sentinel(master) => {
                    let mut connection = master.connection().await?;
                    master.saw(connection.req_packed_command(cmd).await)
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.connected().await? {
                Connected::Standalone(mut connection) => {
                    connection
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
                Connected::Cluster(mut connection) => {
                    connection
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
                Connected::Sentinel(master) => {
                    let mut connection = master.connection().await?;
                    master.saw(
                        connection
                            .req_packed_commands(pipeline, offset, count)
                            .await,
                    )
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        match self.inner.connected.get() {
            Some(Connected::Standalone(connection)) => connection.get_db(),
            _ => 0,
        }
    }
}
