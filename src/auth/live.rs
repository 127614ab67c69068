//! The callers in force, replaced whole by a reload of the auth file: every call is admitted with
//! the set in force when it arrived and keeps it to its end, so a caller removed by a reload is
//! refused on its next call, never in the middle of one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Authenticated, Callers, KeyFetchers};
use crate::quota::caller_rate::CallerRates;

/// One version of the auth file, with the callers' own rate limits.
#[derive(Debug)]
pub struct CallerSet {
    pub(crate) callers: Callers,
    /// `None` when no caller has a `max_rate`.
    pub(crate) rates: Option<CallerRates>,
}

impl CallerSet {
    fn new(callers: Callers) -> Self {
        let rates = Some(CallerRates::new(&callers.shares())).filter(CallerRates::any);
        Self { callers, rates }
    }
}

/// A caller the edge authenticated, with the set it was found in (a request extension).
#[derive(Clone, Debug)]
pub struct AdmittedCaller {
    pub(crate) set: Arc<CallerSet>,
    pub(crate) who: Authenticated,
}

/// The set in force, shared by the edge, the call service and the reloads, and the fetchers of
/// the issuers' keys every version shares.
#[derive(Clone, Debug)]
pub struct LiveCallers {
    set: Arc<ArcSwap<CallerSet>>,
    fetchers: KeyFetchers,
}

impl LiveCallers {
    pub fn new(mut callers: Callers, fetchers: KeyFetchers) -> Self {
        callers.adopt_key_sets(&fetchers);
        Self {
            set: Arc::new(ArcSwap::from_pointee(CallerSet::new(callers))),
            fetchers,
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<CallerSet> {
        self.set.load_full()
    }

    /// Puts `callers` in force for the calls that arrive from now on. A caller already known
    /// keeps its index, so its place in the fair queue and its waiting calls are its own still;
    /// an issuer's keys fetched already stay in use.
    pub fn replace(&self, mut callers: Callers) {
        callers.keep_indexes_of(&self.set.load().callers);
        callers.adopt_key_sets(&self.fetchers);
        self.set.store(Arc::new(CallerSet::new(callers)));
    }
}
