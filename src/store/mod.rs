//! The Redis every replica shares (`--quota-store redis://…`): built once, handed to the quota and
//! the replay cache, neither of which knows which topology it talks to ([`address`],
//! [`connection`]).
//!
//! [`SharedStore`] also owns the store's health, one state for the whole process:
//!
//! - Every round trip goes through [`SharedStore::ask`], bounded by `--quota-store-timeout` and the
//!   call's deadline. An error or a timeout marks the store **down**: from then on `ask` answers at
//!   once, without a round trip, and the quota and replay use their local fallbacks. A hung Redis (a
//!   node that accepts connections and never answers) therefore costs one timeout, not one per call.
//! - While down, one probe asks Redis every [`PROBE_INTERVAL`] for a real answer (`PING`, within the
//!   timeout; a TCP connection is not enough), never a call. When it answers, the store is **up**
//!   again: the change is logged once and shows in `connect_facade_quota_store_up`. After a Sentinel
//!   or cluster failover the probe's own request finds the new master, so the replica is back within
//!   an interval of the new master answering.
//! - A deadline that runs out before the store's timeout says nothing of Redis: not counted.

pub(crate) mod address;
pub(crate) mod connection;
mod metrics;

use std::{
    fmt::Display,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::lifecycle::Tasks;
pub use address::StoreAddress;
pub(crate) use connection::StoreConnection;

pub(crate) use metrics::StoreMetrics;

/// How often a replica whose store is down asks it again.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The shared Redis and whether it answers.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

struct Inner {
    address: StoreAddress,
    connection: StoreConnection,
    prefix: String,
    timeout: Duration,
    /// This process among the replicas registered in the store.
    replica_id: String,
    up: AtomicBool,
    /// How many times the store went down: a fallback built for an earlier outage is stale.
    outages: AtomicU64,
    /// The last answered round trip, in microseconds (0: none yet).
    last_round_trip: AtomicU64,
    metrics: StoreMetrics,
    tasks: Tasks,
}

impl SharedStore {
    /// The store at `address`, its keys under `prefix`; nothing is dialled until the first use.
    pub fn new(
        address: StoreAddress,
        prefix: &str,
        timeout: Duration,
        metrics: StoreMetrics,
        tasks: Tasks,
    ) -> Self {
        metrics.set_up(true);
        Self {
            inner: Arc::new(Inner {
                connection: StoreConnection::new(address.clone(), timeout),
                address,
                prefix: prefix.to_owned(),
                timeout,
                replica_id: uuid::Uuid::new_v4().to_string(),
                up: AtomicBool::new(true),
                outages: AtomicU64::new(0),
                last_round_trip: AtomicU64::new(0),
                metrics,
                tasks,
            }),
        }
    }

    /// The lifecycle's tasks, for the background work of the store's users (heartbeats, notes).
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// A handle on the connection, for scripts.
    pub(crate) fn connection(&self) -> StoreConnection {
        self.inner.connection.clone()
    }

    /// The prefix of every key.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The longest round trip.
    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Where the store is (its `Display` redacts the password).
    pub fn address(&self) -> &StoreAddress {
        &self.inner.address
    }

    /// The topology found when connecting (`None` before the first round trip).
    pub fn topology(&self) -> Option<&'static str> {
        self.inner.connection.kind().map(connection::Kind::as_str)
    }

    /// The last answered round trip (`None` before the first).
    pub fn last_round_trip(&self) -> Option<Duration> {
        let micros = self.inner.last_round_trip.load(Ordering::Relaxed);
        (micros > 0).then(|| Duration::from_micros(micros))
    }

    /// This replica's name in the fleet registry.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// Whether round trips are being made.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// How many times the store has gone down since startup.
    pub fn outages(&self) -> u64 {
        self.inner.outages.load(Ordering::Acquire)
    }

    /// Runs one round trip within `bound` (and the store's timeout), unless the store is down.
    /// `None` when it is down, fails, or does not answer in time (which takes it down).
    pub(crate) async fn ask<T, E: Display>(
        &self,
        bound: Duration,
        operation: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        if !self.is_up() {
            return None;
        }
        let inner = &self.inner;
        let limit = bound.min(inner.timeout);
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, operation).await;
        let elapsed = started.elapsed();
        inner.metrics.round_trip(elapsed);
        let error = match outcome {
            Ok(Ok(answer)) => {
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                inner.last_round_trip.store(micros, Ordering::Relaxed);
                return Some(answer);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) if limit < inner.timeout => return None,
            Err(_) => format!("no answer within {limit:?}"),
        };
        self.failed(&error);
        None
    }

    fn failed(&self, error: &str) {
        let inner = &self.inner;
        inner.metrics.error();
        if inner.up.swap(false, Ordering::AcqRel) {
            inner.outages.fetch_add(1, Ordering::AcqRel);
            inner.metrics.set_up(false);
            tracing::warn!(
                store = %inner.address,
                %error,
                "quota store failed: the quota and replay use this replica's fallback until Redis answers"
            );
            inner.tasks.spawn_until_stopped(probe(self.clone()));
        }
    }
}

/// Asks Redis every [`PROBE_INTERVAL`] until it answers, then puts the replica back on it.
async fn probe(store: SharedStore) {
    let inner = &store.inner;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let started = Instant::now();
        let mut connection = inner.connection.clone();
        let answered = tokio::time::timeout(
            inner.timeout,
            redis::cmd("PING").query_async::<redis::Value>(&mut connection),
        )
        .await;
        inner.metrics.round_trip(started.elapsed());
        if matches!(answered, Ok(Ok(_))) {
            inner.up.store(true, Ordering::Release);
            inner.metrics.set_up(true);
            tracing::info!(
                store = %inner.address,
                topology = inner.connection.kind().map_or("unknown", |kind| kind.as_str()),
                "quota store answers again: sharing the quota through Redis"
            );
            return;
        }
        inner.metrics.error();
    }
}
