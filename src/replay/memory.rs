//! The replay cache in this replica's memory: quick_cache's concurrent cache, bounded by entries
//! (S3-FIFO eviction: an answer read again outlives those never read), each answer expiring after the
//! replay window.
//!
//! Every call's answer is kept (every call is keyed by its contact), so the cache's cost is paid per
//! call: moka, its predecessor here, cost about 20 µs of CPU a call at 9,000 calls/s (its eviction
//! bookkeeping and table rehashes under constant churn); quick_cache has no background work and no
//! per-entry timers, so an answer's expiry is checked when it is read. Answers are only written at the
//! rate AWS succeeds: even an account's whole quota (2/s) over a 10-minute window is 1,200 entries,
//! far under the default bound of 20,000.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use quick_cache::sync::Cache;

use super::{ContactKey, Replay};

/// Answers by contact key, with when each was kept.
#[derive(Clone)]
pub struct MemoryReplays {
    cache: Arc<Cache<ContactKey, (Instant, Arc<Replay>)>>,
    window: Duration,
}

impl MemoryReplays {
    /// At most `capacity` answers, each for `window`.
    pub fn new(capacity: u64, window: Duration) -> Self {
        let capacity = usize::try_from(capacity.max(1)).unwrap_or(usize::MAX);
        Self {
            cache: Arc::new(Cache::new(capacity)),
            window,
        }
    }

    pub(crate) fn get(&self, key: &ContactKey) -> Option<Replay> {
        let (kept, replay) = self.cache.get(key)?;
        if kept.elapsed() < self.window {
            return Some((*replay).clone());
        }
        self.cache.remove(key);
        None
    }

    pub(crate) fn insert(&self, key: ContactKey, replay: Replay) {
        self.cache.insert(key, (Instant::now(), Arc::new(replay)));
    }

    /// Answers held now (expired ones included until read or evicted).
    pub(crate) fn entries(&self) -> u64 {
        self.cache.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Association;

    fn replay(id: &str) -> Replay {
        Replay {
            rehydration_type: crate::domain::RehydrationType::FromSegment,
            source_contact_id: "c2".into(),
            token: [1; 32],
            association: Association {
                continued_from_contact_id: id.into(),
                request_id: None,
            },
        }
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_keeps_the_newest() {
        let cache = MemoryReplays::new(100, Duration::from_secs(60));
        for i in 0..1_000u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(key, replay(&i.to_string()));
        }
        assert!(cache.entries() <= 100, "{} entries", cache.entries());
        let mut newest = [0; 32];
        newest[..4].copy_from_slice(&999u32.to_le_bytes());
        assert_eq!(
            cache
                .get(&newest)
                .unwrap()
                .association
                .continued_from_contact_id,
            "999"
        );
    }

    #[test]
    fn an_answer_expires_after_the_window() {
        let cache = MemoryReplays::new(10, Duration::from_millis(50));
        cache.insert([1; 32], replay("a"));
        assert!(cache.get(&[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(&[1; 32]).is_none());
        assert_eq!(cache.entries(), 0, "removed when found expired");
    }
}
