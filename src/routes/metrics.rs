//! The routes' metrics: reloads of the routes file, the routes in use, and calls by route.
//! Registered by the app; recorded by the [`super::router::Router`] and the reload task.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::metrics::{MetricsRegistry, OutcomeLabels, gauge_value};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The routes' families; a clone records into the same series.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    reloads: Family<OutcomeLabels, Counter>,
    routes: Gauge<i64, AtomicI64>,
    calls: Family<RouteLabels, Counter>,
}

impl RouteMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            reloads: Family::default(),
            routes: Gauge::default(),
            calls: Family::default(),
        };
        registry.register(
            "routes_reloads",
            "Reloads of the routes file (SIGHUP or a changed file), by result (ok, error: the previous routes stay)",
            metrics.reloads.clone(),
        );
        registry.register("routes", "Routes in use", metrics.routes.clone());
        registry.register(
            "route_calls",
            "Calls by route (its name in the routes file; default without one)",
            metrics.calls.clone(),
        );
        metrics
    }

    /// A reload of the routes file, and the routes in use after it.
    pub fn reloaded(&self, ok: bool, routes: usize) {
        self.reloads.get_or_create(&OutcomeLabels::of(ok)).inc();
        self.set_routes(routes);
    }

    pub fn set_routes(&self, routes: usize) {
        self.routes.set(gauge_value(routes));
    }

    /// The counter of `route`'s calls, held by the route so a call pays one atomic add.
    pub fn route_calls(&self, route: &str) -> Counter {
        self.calls
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .clone()
    }
}
