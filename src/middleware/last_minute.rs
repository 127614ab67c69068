//! How AWS answered one account's attempts over the last minute, per second, for the admin API:
//! the recent picture an operator asks for without a time series database. Sixty one-second
//! buckets reused in turn; a bucket is emptied when its second comes round again. Two attempts
//! racing over a bucket's turn may lose one count: this is for reading at a glance, the metrics
//! stay exact.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use serde::Serialize;

const SECONDS: u64 = 60;

/// What an attempt came to.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Ok,
    /// AWS's ThrottlingException.
    Throttled,
    /// Any other error: AWS's answer, or no answer.
    Failed,
}

/// The attempts of the last minute, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub ok: u64,
    pub throttled: u64,
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The second (since `started`) the counts are of.
    second: AtomicU64,
    counts: [AtomicU64; 3],
}

/// One account's attempts over the last minute, and since startup.
#[derive(Debug)]
pub struct LastMinute {
    started: Instant,
    buckets: [Bucket; SECONDS as usize],
    /// Every attempt since startup, by outcome: a page polling it draws rates from the
    /// differences.
    since_start: [AtomicU64; 3],
}

impl Default for LastMinute {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            buckets: std::array::from_fn(|_| Bucket::default()),
            since_start: Default::default(),
        }
    }
}

impl LastMinute {
    pub fn record(&self, outcome: Outcome) {
        self.record_at(self.started.elapsed().as_secs(), outcome);
    }

    fn record_at(&self, second: u64, outcome: Outcome) {
        let bucket = &self.buckets[(second % SECONDS) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &bucket.counts {
                count.store(0, Ordering::Release);
            }
        }
        bucket.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.since_start[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every attempt since startup, by outcome.
    pub fn since_start(&self) -> Outcomes {
        let [ok, throttled, failed] = &self.since_start;
        Outcomes {
            ok: ok.load(Ordering::Relaxed),
            throttled: throttled.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
        }
    }

    /// The attempts of the last sixty seconds, this one included.
    pub fn totals(&self) -> Outcomes {
        self.totals_at(self.started.elapsed().as_secs())
    }

    fn totals_at(&self, now: u64) -> Outcomes {
        let mut totals = [0; 3];
        for bucket in &self.buckets {
            let second = bucket.second.load(Ordering::Acquire);
            if second + SECONDS > now && second <= now {
                for (total, count) in totals.iter_mut().zip(&bucket.counts) {
                    *total += count.load(Ordering::Relaxed);
                }
            }
        }
        Outcomes {
            ok: totals[0],
            throttled: totals[1],
            failed: totals[2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_is_counted_and_older_seconds_drop_out() {
        let window = LastMinute::default();
        window.record_at(0, Outcome::Ok);
        window.record_at(1, Outcome::Throttled);
        window.record_at(59, Outcome::Failed);
        assert_eq!(
            window.totals_at(59),
            Outcomes {
                ok: 1,
                throttled: 1,
                failed: 1
            }
        );
        assert_eq!(window.totals_at(60).ok, 0, "second 0 is a minute old");
        window.record_at(60, Outcome::Ok);
        window.record_at(60, Outcome::Ok);
        assert_eq!(
            window.totals_at(61),
            Outcomes {
                ok: 2,
                throttled: 0,
                failed: 1
            },
            "second 60 reused second 0's bucket; second 1 is gone"
        );
    }
}
