//! The reloads' metrics: how each went, what is in force (its hash, so a fleet's convergence after
//! a ConfigMap change shows), and which changed settings wait for a restart.

use std::sync::atomic::AtomicI64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::metrics::{MetricsRegistry, OutcomeLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabels {
    setting: &'static str,
}

/// The reloads' families; a clone records into the same series.
#[derive(Clone, Debug)]
pub(crate) struct ReloadMetrics {
    reloads: Family<OutcomeLabels, Counter>,
    info: Family<HashLabels, Gauge<i64, AtomicI64>>,
    restart: Family<SettingLabels, Gauge<i64, AtomicI64>>,
}

impl ReloadMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            reloads: Family::default(),
            info: Family::default(),
            restart: Family::default(),
        };
        registry.register(
            "config_reloads",
            "Reloads of the files serve was given that found a change (SIGHUP or a changed file), \
             by result (ok: all of it applied; error: none of it, what was in force stays)",
            metrics.reloads.clone(),
        );
        registry.register(
            "config_info",
            "1 for the hash of the files in force (the --config files, routes, callers and TLS)",
            metrics.info.clone(),
        );
        registry.register(
            "config_restart_required",
            "1 for each setting a reload found changed that only a restart applies (its old \
             value stays in force)",
            metrics.restart.clone(),
        );
        metrics
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads.get_or_create(&OutcomeLabels::of(ok)).inc();
    }

    /// `hash` is in force, and no longer `previous`.
    pub fn in_force(&self, hash: &str, previous: Option<&str>) {
        if let Some(previous) = previous.filter(|p| *p != hash) {
            self.info.remove(&HashLabels {
                hash: previous.to_owned(),
            });
        }
        self.info
            .get_or_create(&HashLabels {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    pub fn restart_required(&self, setting: &'static str) {
        self.restart
            .get_or_create(&SettingLabels { setting })
            .set(1);
    }
}
