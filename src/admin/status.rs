//! `GET /status`: what an operator asks of a running replica, read from the parts themselves: the
//! routes with their rate in force, queue, breaker and the last minute's attempts, the quota store,
//! the fleet as Redis knows it (the one Redis round trip), the callers, and the last refusals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::AdminState;
use crate::{
    call::recent::RecentRefusal,
    middleware::last_minute::Outcomes,
    quota::{self, shared::REGISTRATION_TTL},
    store::SharedStore,
};

/// The answer, as JSON.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: f64,
    /// `false` once the replica is draining (SIGTERM): it finishes its calls and stops.
    pub serving: bool,
    /// The hash of the files in force (`connect_facade_config_info{hash}`).
    pub config_hash: String,
    pub routes: Vec<RouteStatus>,
    pub store: StoreStatus,
    /// The replicas registered in Redis for the first route's account, this one included; `null`
    /// without Redis, or while it does not answer.
    pub fleet: Option<Vec<ReplicaStatus>>,
    pub callers: Vec<CallerStatus>,
    /// The last refused or failed calls, newest first.
    pub refusals: Vec<RecentRefusal>,
}

/// One route and the guards of its account and region.
#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub name: String,
    /// The account and region its quota, breaker and queue belong to.
    pub account_key: String,
    pub region: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// The rate in force (the configured one, or lower after AWS throttled); `null` without a
    /// rate limiter.
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    /// Attempts waiting for their slot now.
    pub waiting: usize,
    /// How long an attempt arriving now would wait for its slot, in milliseconds.
    pub predicted_wait_ms: Option<f64>,
    /// AWS's answers to this account's attempts over the last minute.
    pub last_minute: Outcomes,
    /// Every attempt since startup (or since a reload changed the middleware), for rates drawn
    /// from two looks.
    pub attempts: Outcomes,
}

/// A replica as Redis knows it.
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    pub replica: String,
    /// Whether it is the one answering.
    pub this: bool,
    /// How long ago it last registered (it does every second while Redis answers it).
    pub seconds_ago: f64,
    /// Registered within the last three heartbeats; a replica on its fallback stops
    /// registering, and drops out of the set once its registration expires.
    pub live: bool,
}

/// The quota store.
#[derive(Debug, Serialize)]
pub struct StoreStatus {
    /// `local` (in this process) or `redis`.
    pub kind: &'static str,
    /// The Redis URL, its password redacted.
    pub address: Option<String>,
    /// `standalone`, `cluster` or `sentinel`, once connected.
    pub topology: Option<&'static str>,
    /// Whether Redis answers; `false` while this replica is on its local fallback.
    pub up: bool,
    /// How many times the store went down since startup.
    pub outages: u64,
    /// The last answered round trip, in milliseconds.
    pub round_trip_ms: Option<f64>,
}

/// A caller of the auth file in force.
#[derive(Debug, Serialize)]
pub struct CallerStatus {
    pub name: String,
    pub weight: f64,
    pub max_rate: Option<f64>,
    pub instances: Vec<String>,
    /// Its attempts waiting for a slot now, over every account.
    pub waiting: usize,
    /// The share of the quota fair order gives it now (its weight over the waiting callers'),
    /// `null` while it has nothing waiting.
    pub share: Option<f64>,
}

impl Status {
    pub(super) async fn of(state: &AdminState) -> Self {
        let table = state.router.table();
        let mut waiting_by_caller: Vec<usize> = Vec::new();
        let routes = table
            .routes()
            .iter()
            .map(|route| {
                let limiter = route.guards.limiter();
                for (index, waiting) in route.guards.waiting_by_caller().into_iter().enumerate() {
                    if waiting_by_caller.len() <= index {
                        waiting_by_caller.resize(index + 1, 0);
                    }
                    waiting_by_caller[index] += waiting;
                }
                RouteStatus {
                    name: route.name.clone(),
                    account_key: route.key.as_str().to_owned(),
                    region: route.region.clone(),
                    breaker: route.guards.breaker_state(),
                    rate_per_second: limiter.map(|l| l.rate_per_second),
                    burst: limiter.map(|l| l.burst),
                    waiting: limiter.map_or(0, |l| l.waiting),
                    predicted_wait_ms: limiter.map(|l| l.predicted_wait.as_secs_f64() * 1000.0),
                    last_minute: route.guards.last_minute(),
                    attempts: route.guards.since_start(),
                }
            })
            .collect();
        let fleet = match (&state.store, table.routes().first()) {
            (Some(store), Some(route)) => fleet(store, route.key.as_str()).await,
            _ => None,
        };
        let store = match &state.store {
            None => StoreStatus {
                kind: "local",
                address: None,
                topology: None,
                up: true,
                outages: 0,
                round_trip_ms: None,
            },
            Some(store) => StoreStatus {
                kind: "redis",
                address: Some(store.address().to_string()),
                topology: store.topology(),
                up: store.is_up(),
                outages: store.outages(),
                round_trip_ms: store
                    .last_round_trip()
                    .map(|trip| trip.as_secs_f64() * 1000.0),
            },
        };
        let callers = state.callers.as_ref().map_or_else(Vec::new, |live| {
            let set = live.current();
            let shares = set.callers.shares();
            let waiting = |index: usize| waiting_by_caller.get(index).copied().unwrap_or(0);
            let waiting_weights: f64 = shares
                .iter()
                .filter(|share| waiting(share.index) > 0)
                .map(|share| share.weight)
                .sum();
            set.callers
                .instances()
                .zip(shares)
                .map(|((name, instances), share)| CallerStatus {
                    name: name.to_owned(),
                    weight: share.weight,
                    max_rate: share.max_rate,
                    instances: instances.to_vec(),
                    waiting: waiting(share.index),
                    share: (waiting(share.index) > 0).then(|| share.weight / waiting_weights),
                })
                .collect()
        });
        Self {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: state.started.elapsed().as_secs_f64(),
            serving: !state.draining.is_cancelled(),
            config_hash: state.in_force.load().hash.clone(),
            routes,
            store,
            fleet,
            callers,
            refusals: state.refusals.newest_first(),
        }
    }
}

/// The replicas registered for `key`, in one round trip within the store's timeout; `None` when
/// Redis does not answer (the store is then shown down).
async fn fleet(store: &SharedStore, key: &str) -> Option<Vec<ReplicaStatus>> {
    let mut connection = store.connection();
    let prefix = store.prefix().to_owned();
    let registered = store
        .ask(store.timeout(), async move {
            quota::redis::replicas(&mut connection, &prefix, key).await
        })
        .await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |now| now.as_secs_f64() * 1000.0);
    Some(
        registered
            .into_iter()
            .map(|(replica, at_ms)| {
                let ago = Duration::from_secs_f64(((now_ms - at_ms) / 1000.0).max(0.0));
                ReplicaStatus {
                    this: replica == store.replica_id(),
                    replica,
                    seconds_ago: ago.as_secs_f64(),
                    live: ago < REGISTRATION_TTL,
                }
            })
            .collect(),
    )
}
