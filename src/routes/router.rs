//! The routes in use: which route serves an instance, each route's client and middleware, and their
//! replacement on reload.
//!
//! A call takes its route (an `Arc`) once, when it starts, so a reload never moves a call in flight:
//! it finishes on the route it started with. Routes to the same account and region share one
//! [`KeyGuards`] (breaker, rate limit, quota store), kept across reloads, so reloading resets no
//! breaker and no queue.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::{RouteMetrics, spec::RouteSpec};
use crate::lifecycle::Tasks;
use crate::{
    middleware::{KeyGuards, MiddlewareConfig, ProcessLimits, UpstreamMetrics, UpstreamStack},
    quota::{AccountKey, stores::QuotaStores},
    upstream::{ConnectUpstream, RouteTarget, UpstreamBase},
};

/// One route, built.
#[derive(Debug)]
pub struct Route {
    /// Its name in the routes file (`default` without one).
    pub name: String,
    /// The account and region its calls count against.
    pub key: AccountKey,
    pub stack: UpstreamStack,
    /// The account and region's guards, for the admin API's view of them.
    pub guards: KeyGuards,
    /// Its region (the account is in `key`).
    pub region: String,
    /// `connect_facade_route_calls_total{route}`.
    pub calls: prometheus_client::metrics::counter::Counter,
    /// Its Amazon Connect client, outside the middleware: the reconciliation's DescribeContact.
    pub upstream: ConnectUpstream,
    /// `--reconcile-associations`.
    pub reconcile: bool,
}

/// Instances to routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_instance: HashMap<String, Arc<Route>>,
    default: Option<Arc<Route>>,
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// The route serving `instance_id`: its own, or the default (`*`).
    pub(crate) fn route(&self, instance_id: &str) -> Option<Arc<Route>> {
        self.by_instance
            .get(instance_id)
            .or(self.default.as_ref())
            .cloned()
    }

    /// Every route, in the file's order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// What building routes takes, kept for reloads.
pub struct RouteBuilder {
    base: UpstreamBase,
    /// The middleware's settings in force and the process-wide limits they make; a reload that
    /// changes the settings replaces both, and the guards.
    middleware: Mutex<(MiddlewareConfig, ProcessLimits)>,
    stores: QuotaStores,
    upstream_metrics: UpstreamMetrics,
    metrics: RouteMetrics,
    tasks: Tasks,
    /// The guards of every account and region seen so far.
    guards: Mutex<HashMap<AccountKey, KeyGuards>>,
}

impl RouteBuilder {
    pub fn new(
        base: UpstreamBase,
        middleware: MiddlewareConfig,
        stores: QuotaStores,
        upstream_metrics: UpstreamMetrics,
        metrics: RouteMetrics,
        tasks: Tasks,
    ) -> Self {
        Self {
            tasks,
            base,
            middleware: Mutex::new((middleware.clone(), ProcessLimits::new(&middleware))),
            stores,
            upstream_metrics,
            metrics,
            guards: Mutex::new(HashMap::new()),
        }
    }

    /// The routes of `specs`, each with its client (built now, reused by every call).
    pub async fn build(&self, specs: &[RouteSpec]) -> RouteTable {
        let mut table = RouteTable::default();
        let (configured, process_limits) = self.middleware.lock().clone();
        for spec in specs {
            let key = spec.quota_key();
            let mut middleware = configured.clone();
            let limits = &mut middleware.rate_limit.limits;
            if let Some(rate) = spec.rate_limit {
                *limits = limits.at_rate(rate);
            }
            if let Some(burst) = spec.burst {
                limits.burst = burst;
            }
            let guards = self.guards_for(&key, &middleware);
            let upstream = self
                .base
                .route(RouteTarget {
                    region: &spec.region,
                    role_arn: spec.role_arn.as_deref(),
                    external_id: spec.external_id.as_deref(),
                    endpoint_url: spec.endpoint_url.as_deref(),
                })
                .await;
            let stack = UpstreamStack::new(
                upstream.clone(),
                &guards,
                &process_limits,
                &middleware,
                &self.upstream_metrics,
            );
            let route = Arc::new(Route {
                calls: self.metrics.route_calls(&spec.name),
                name: spec.name.clone(),
                key,
                stack,
                guards,
                region: spec.region.clone(),
                upstream,
                reconcile: middleware.reconcile_associations,
            });
            for instance in &spec.instances {
                if instance == "*" {
                    table.default = Some(route.clone());
                } else {
                    table.by_instance.insert(instance.clone(), route.clone());
                }
            }
            table.routes.push(route);
        }
        table
    }

    /// Puts `middleware` in force for the routes built from now on; `false` when it is what is in
    /// force. The guards (breaker, rate limiter) are rebuilt with it: their state starts afresh.
    fn set_middleware(&self, middleware: &MiddlewareConfig) -> bool {
        let mut current = self.middleware.lock();
        if &current.0 == middleware {
            return false;
        }
        *current = (middleware.clone(), ProcessLimits::new(middleware));
        self.guards.lock().clear();
        true
    }

    fn guards_for(&self, key: &AccountKey, middleware: &MiddlewareConfig) -> KeyGuards {
        let mut guards = self.guards.lock();
        guards
            .entry(key.clone())
            .or_insert_with(|| {
                let store = self
                    .stores
                    .store(key.as_str(), middleware.rate_limit.limits.clone());
                KeyGuards::new(key, store, middleware, &self.upstream_metrics, &self.tasks)
            })
            .clone()
    }
}

/// The routes in use, replaced whole on reload.
pub struct Router {
    table: ArcSwap<RouteTable>,
    builder: RouteBuilder,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.table.load().routes.len())
            .finish()
    }
}

impl Router {
    pub async fn new(builder: RouteBuilder, specs: &[RouteSpec]) -> Self {
        let table = builder.build(specs).await;
        builder.metrics.set_routes(table.routes.len());
        Self {
            table: ArcSwap::from_pointee(table),
            builder,
        }
    }

    /// The route serving `instance_id` now.
    pub(crate) fn route(&self, instance_id: &str) -> Option<Arc<Route>> {
        self.table.load().route(instance_id)
    }

    /// The routes in use now.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Whether no account can be called now: every route's circuit breaker refuses calls.
    pub fn every_breaker_open(&self) -> bool {
        self.table
            .load()
            .routes
            .iter()
            .all(|route| route.stack.breaker().is_open())
    }

    /// Replaces the routes; calls in flight keep theirs.
    pub async fn replace(&self, specs: &[RouteSpec]) {
        let table = self.builder.build(specs).await;
        self.builder.metrics.set_routes(table.routes.len());
        self.table.store(Arc::new(table));
    }

    /// Puts `middleware` in force, rebuilding the routes of `specs` with it when it changed;
    /// answers whether it did.
    pub async fn reconfigure(&self, middleware: &MiddlewareConfig, specs: &[RouteSpec]) -> bool {
        let changed = self.builder.set_middleware(middleware);
        if changed {
            self.replace(specs).await;
        }
        changed
    }
}
