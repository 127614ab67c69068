//! The callers' metrics (with `--auth-file` only: without one, there is no caller to name). The API
//! counts a caller's calls and its own-rate refusals; the rate limiter counts what the quota gave
//! or refused it.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use crate::metrics::MetricsRegistry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    caller: String,
}

impl CallerLabels {
    fn of(caller: &str) -> Self {
        Self {
            caller: caller.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerReasonLabels {
    caller: String,
    reason: &'static str,
}

/// Why a caller's call was refused before AWS, for `connect_facade_caller_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallerRefusal {
    /// The account's quota had no slot within the call's wait bound (RATE_LIMITED).
    Quota,
    /// The caller's own `max_rate` (CALLER_RATE_LIMITED).
    CallerRate,
}

/// The callers' families; a clone records into the same series.
#[derive(Clone, Debug)]
pub struct CallerMetrics {
    calls: Family<CallerLabels, Counter>,
    quota_waits: Family<CallerLabels, Counter>,
    quota_slots: Family<CallerLabels, Counter>,
    refusals: Family<CallerReasonLabels, Counter>,
    token_refusals: Family<CauseLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

impl CallerMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            calls: Family::default(),
            quota_waits: Family::default(),
            quota_slots: Family::default(),
            refusals: Family::default(),
            token_refusals: Family::default(),
        };
        registry.register(
            "caller_calls",
            "Calls by authorized caller (with --auth-file)",
            metrics.calls.clone(),
        );
        registry.register(
            "caller_quota_waits",
            "Attempts that waited for a slot of the quota, by caller (with --auth-file)",
            metrics.quota_waits.clone(),
        );
        registry.register(
            "caller_quota_slots",
            "Slots of the quota given to a caller's attempts (let through to Amazon Connect), by caller (with --auth-file)",
            metrics.quota_slots.clone(),
        );
        registry.register(
            "caller_refusals",
            "Calls refused before Amazon Connect, by caller (with --auth-file) and reason (quota: no slot of the account's quota in time; caller_rate: over the caller's own max_rate)",
            metrics.refusals.clone(),
        );
        registry.register(
            "caller_token_refusals",
            "Bearer JWTs refused (the caller is answered UNAUTHENTICATED, CALLER_UNKNOWN), by cause: too_large, malformed, algorithm, unknown_key, signature, expired, not_yet_valid, issuer, audience, no_caller",
            metrics.token_refusals.clone(),
        );
        metrics
    }

    /// A JWT refused, by cause.
    pub(crate) fn token_refused(&self, cause: &'static str) {
        self.token_refusals
            .get_or_create(&CauseLabels { cause })
            .inc();
    }

    /// An authorized caller made a call.
    pub(crate) fn call(&self, caller: &str) {
        self.calls.get_or_create(&CallerLabels::of(caller)).inc();
    }

    /// A caller's attempt waited for its slot of the quota.
    pub(crate) fn waited(&self, caller: Option<&str>) {
        if let Some(caller) = caller {
            self.quota_waits
                .get_or_create(&CallerLabels::of(caller))
                .inc();
        }
    }

    /// A caller's attempt got its slot of the quota.
    pub(crate) fn slot_granted(&self, caller: Option<&str>) {
        if let Some(caller) = caller {
            self.quota_slots
                .get_or_create(&CallerLabels::of(caller))
                .inc();
        }
    }

    pub(crate) fn refused(&self, caller: Option<&str>, why: CallerRefusal) {
        if let Some(caller) = caller {
            let reason = match why {
                CallerRefusal::Quota => "quota",
                CallerRefusal::CallerRate => "caller_rate",
            };
            self.refusals
                .get_or_create(&CallerReasonLabels {
                    caller: caller.to_owned(),
                    reason,
                })
                .inc();
        }
    }
}
