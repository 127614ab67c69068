//! The replay cache in this replica's memory: moka's concurrent cache, bounded by entries with LRU
//! eviction and expiring each answer after the replay window.
//!
//! An entry costs 550 to 720 bytes of RSS (measured in docs/SCALING.md: two 32-byte hashes, the
//! contact ids and AWS's request id, and moka's bookkeeping); answers are only written at the rate AWS
//! succeeds, so even an account's whole quota (2/s) over a 10-minute window is 1,200 entries, far
//! under the default bound of 20,000.

use std::{sync::Arc, time::Duration};

use moka::{policy::EvictionPolicy, sync::Cache};

use super::{ContactKey, Replay};

/// Answers by contact key.
#[derive(Clone)]
pub struct MemoryReplays {
    cache: Cache<ContactKey, Arc<Replay>>,
}

impl MemoryReplays {
    /// At most `capacity` answers, each for `window`.
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
        }
    }

    pub fn get(&self, key: &ContactKey) -> Option<Replay> {
        self.cache.get(key).map(|replay| (*replay).clone())
    }

    pub fn insert(&self, key: ContactKey, replay: Replay) {
        self.cache.insert(key, Arc::new(replay));
    }

    /// Answers held now. moka counts in batches: the pending ones are settled first (this runs at
    /// most at the rate AWS answers, so the cost is nothing).
    pub fn entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
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
    fn the_least_recently_used_answer_goes_first() {
        let cache = MemoryReplays::new(2, Duration::from_secs(60));
        // moka applies reads and writes to its LRU order in batches: settle each step.
        cache.insert([1; 32], replay("a"));
        cache.cache.run_pending_tasks();
        cache.insert([2; 32], replay("b"));
        cache.cache.run_pending_tasks();
        assert!(cache.get(&[1; 32]).is_some());
        cache.cache.run_pending_tasks();
        cache.insert([3; 32], replay("c"));
        cache.cache.run_pending_tasks();
        assert!(cache.get(&[1; 32]).is_some(), "recently used: kept");
        assert!(
            cache.get(&[2; 32]).is_none(),
            "least recently used: evicted"
        );
        assert_eq!(
            cache
                .get(&[3; 32])
                .unwrap()
                .association
                .continued_from_contact_id,
            "c"
        );
    }

    #[test]
    fn an_answer_expires_after_the_window() {
        let cache = MemoryReplays::new(10, Duration::from_millis(50));
        cache.insert([1; 32], replay("a"));
        assert!(cache.get(&[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(&[1; 32]).is_none());
    }
}
