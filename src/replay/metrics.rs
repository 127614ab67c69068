//! Replay's metrics: answers replayed, calls coalesced, tokens refused for reuse, and the size of
//! this replica's in-memory cache. Registered by the app; recorded by the [`super::Replayer`] and
//! its Redis store.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use crate::metrics::MetricsRegistry;

/// Replay's series; a clone records into the same ones.
#[derive(Clone, Debug)]
pub struct ReplayMetrics {
    replays: Counter,
    coalesced: Counter,
    token_reuse_refusals: Counter,
    entries: Gauge<i64, AtomicI64>,
}

impl ReplayMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            replays: Counter::default(),
            coalesced: Counter::default(),
            token_reuse_refusals: Counter::default(),
            entries: Gauge::default(),
        };
        registry.register(
            "replays",
            "Calls answered from the replay cache (same client_token and fields as an answered call): no AWS call, no quota slot",
            metrics.replays.clone(),
        );
        registry.register(
            "coalesced_calls",
            "Calls that shared the answer of an identical call in flight (same client_token and fields) instead of calling AWS",
            metrics.coalesced.clone(),
        );
        registry.register(
            "client_token_reuse_refusals",
            "Calls refused because their client_token was used with other fields (CLIENT_TOKEN_REUSED)",
            metrics.token_reuse_refusals.clone(),
        );
        registry.register(
            "replay_cache_entries",
            "Answers held by this replica's in-memory replay cache (0 with the Redis store, which holds them)",
            metrics.entries.clone(),
        );
        metrics
    }

    pub(crate) fn replayed(&self) {
        self.replays.inc();
    }

    pub(crate) fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub(crate) fn client_token_reused(&self) {
        self.token_reuse_refusals.inc();
    }

    pub(crate) fn set_entries(&self, entries: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}
