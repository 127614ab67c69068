//! `GET /status`: what an operator asks of a running replica, read from the parts themselves
//! (never a Redis round trip): the routes with their rate in force, queue and breaker, the quota
//! store, the callers, and the last refusals.

use serde::Serialize;

use super::AdminState;
use crate::call::recent::RecentRefusal;

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
}

/// A caller of the auth file in force.
#[derive(Debug, Serialize)]
pub struct CallerStatus {
    pub name: String,
    pub weight: f64,
    pub max_rate: Option<f64>,
    pub instances: Vec<String>,
}

impl Status {
    pub(super) fn of(state: &AdminState) -> Self {
        let routes = state
            .router
            .table()
            .routes()
            .iter()
            .map(|route| {
                let limiter = route.guards.limiter();
                RouteStatus {
                    name: route.name.clone(),
                    account_key: route.key.as_str().to_owned(),
                    region: route.region.clone(),
                    breaker: route.guards.breaker_state(),
                    rate_per_second: limiter.map(|l| l.rate_per_second),
                    burst: limiter.map(|l| l.burst),
                    waiting: limiter.map_or(0, |l| l.waiting),
                }
            })
            .collect();
        let store = match &state.store {
            None => StoreStatus {
                kind: "local",
                address: None,
                topology: None,
                up: true,
                outages: 0,
            },
            Some(store) => StoreStatus {
                kind: "redis",
                address: Some(store.address().to_string()),
                topology: store.topology(),
                up: store.is_up(),
                outages: store.outages(),
            },
        };
        let callers = state.callers.as_ref().map_or_else(Vec::new, |live| {
            let set = live.current();
            let shares = set.callers.shares();
            set.callers
                .instances()
                .zip(shares)
                .map(|((name, instances), share)| CallerStatus {
                    name: name.to_owned(),
                    weight: share.weight,
                    max_rate: share.max_rate,
                    instances: instances.to_vec(),
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
            callers,
            refusals: state.refusals.newest_first(),
        }
    }
}
