//! Fair shares of the quota among callers: when attempts wait for a slot, this replica hands the slots
//! out by weighted fair queuing across callers ([`FairOrder`]), weighted by each caller's `weight`
//! (auth file), instead of in arrival order. A caller that sends little gets its calls through while
//! a neighbour floods.
//!
//! How it works, per quota key:
//! - an attempt that finds nobody waiting and a slot free takes it at once (one store round trip,
//!   as without fairness);
//! - otherwise it joins its caller's lane, unless the calls that fair order puts before it cannot
//!   all be served within its wait bound, in which case it is refused at once with that estimate as
//!   its RetryInfo (so a flood fills neither the queue nor `--max-waiting`, and the others' calls
//!   still get in);
//! - one dispatcher task takes the calls in fair order and reserves **one** slot at a time in the
//!   store, for the call whose turn it is, then waits until that slot's time before choosing the
//!   next. Slots are never reserved ahead for a queue, so a call arriving later in a quiet lane is
//!   served at the next turn, not behind the flood's reservations.
//!
//! Fairness is per replica: the store (local or Redis) still holds the one account-wide bucket, and
//! each replica divides what it gets. With callers spread over replicas by the Service, that is fair
//! overall too.
//!
//! No maintained crate schedules async waiters by weight with per-waiter deadlines over an external
//! rate store (tower's buffer and limit layers are FIFO), hence this module; the ordering itself is
//! the textbook self-clocked fair queuing with a unit cost per call.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::{sync::oneshot, time::Instant};

use super::{Bucket, Full, QuotaStore, Slot, SlotRequest};
use crate::auth::CallerShare;

/// Lanes of items served by self-clocked fair queuing (Golestani, 1994): an item's tag is its lane's
/// last tag (or the virtual time, if the lane fell behind) plus 1/weight, and the smallest tag goes
/// first; the virtual time is the tag last served. Unlike deficit round robin, a lane keeps its place
/// between two items, so weights hold even when every lane has only one call waiting at a time (a
/// short wait bound at 2 requests/s leaves room for little more), while a lane that was idle cannot
/// have saved credit: it restarts at the virtual time.
#[derive(Debug)]
pub struct FairOrder<T> {
    lanes: Vec<Lane<T>>,
    virtual_time: f64,
    /// Arrival order, to break ties between equal tags.
    arrivals: u64,
}

#[derive(Debug)]
struct Lane<T> {
    /// (tag, arrival, item), tags increasing.
    items: VecDeque<(f64, u64, T)>,
    last_tag: f64,
    weight: f64,
}

impl<T> Default for FairOrder<T> {
    fn default() -> Self {
        Self {
            lanes: Vec::new(),
            virtual_time: 0.0,
            arrivals: 0,
        }
    }
}

impl<T> FairOrder<T> {
    fn lane(&mut self, lane: usize) -> &mut Lane<T> {
        if self.lanes.len() <= lane {
            self.lanes.resize_with(lane + 1, || Lane {
                items: VecDeque::new(),
                last_tag: 0.0,
                weight: 1.0,
            });
        }
        &mut self.lanes[lane]
    }

    /// The tag the next item of `lane` would get.
    fn next_tag(&self, lane: usize, weight: f64) -> f64 {
        let last = self.lanes.get(lane).map_or(0.0, |l| l.last_tag);
        last.max(self.virtual_time) + 1.0 / weight.max(f64::MIN_POSITIVE)
    }

    /// Queues `item` in `lane` at `weight` (above 0).
    pub fn push(&mut self, lane: usize, weight: f64, item: T) {
        let tag = self.next_tag(lane, weight);
        let arrival = self.arrivals;
        self.arrivals += 1;
        let entry = self.lane(lane);
        entry.last_tag = tag;
        entry.weight = weight;
        entry.items.push_back((tag, arrival, item));
    }

    /// The next item in fair order, dropping on the way those `live` says are gone.
    pub fn pop(&mut self, mut live: impl FnMut(&T) -> bool) -> Option<(usize, T)> {
        let mut best: Option<(usize, f64, u64)> = None;
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            while lane.items.front().is_some_and(|(_, _, item)| !live(item)) {
                lane.items.pop_front();
            }
            if let Some(&(tag, arrival, _)) = lane.items.front()
                && best.is_none_or(|(_, t, a)| (tag, arrival) < (t, a))
            {
                best = Some((index, tag, arrival));
            }
        }
        let (index, tag, _) = best?;
        self.virtual_time = tag;
        let (_, _, item) = self.lanes[index].items.pop_front()?;
        Some((index, item))
    }

    /// Slots until a new item of `lane` at `weight` would be served if it came now: between the
    /// virtual time and its tag, every lane with items (its own included) is served its weight per
    /// unit of tag, the items that will arrive meanwhile included.
    pub fn slots_until_next(&self, lane: usize, weight: f64) -> f64 {
        let tag = self.next_tag(lane, weight);
        let mut weights: f64 = self
            .lanes
            .iter()
            .filter(|l| !l.items.is_empty())
            .map(|l| l.weight)
            .sum();
        if self.lanes.get(lane).is_none_or(|l| l.items.is_empty()) {
            weights += weight;
        }
        (tag - self.virtual_time) * weights
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.items.is_empty())
    }
}

/// An attempt waiting in its caller's lane.
struct Waiter {
    instance_id: Arc<str>,
    give_up_at: Instant,
    deadline: Instant,
    answer: oneshot::Sender<Result<Slot, Full>>,
}

struct Queue {
    lanes: FairOrder<Waiter>,
    /// The account-wide rate the store last reported, for wait estimates.
    rate: f64,
    dispatching: bool,
    /// When the last slot given out is due: the next one is an interval after it.
    last_slot: Instant,
}

/// The callers' lanes in front of one quota key of a store.
pub struct FairQueue {
    key: String,
    store: Arc<dyn QuotaStore>,
    queue: Arc<Mutex<Queue>>,
}

impl FairQueue {
    pub fn new(key: &str, store: Arc<dyn QuotaStore>, rate: f64) -> Self {
        Self {
            key: key.to_owned(),
            store,
            queue: Arc::new(Mutex::new(Queue {
                lanes: FairOrder::default(),
                rate,
                dispatching: false,
                last_slot: Instant::now(),
            })),
        }
    }

    /// A slot for one attempt of `caller` on `instance_id` by `give_up_at` (never past `deadline`),
    /// or when to come back.
    pub async fn acquire(
        &self,
        caller: &CallerShare,
        instance_id: &str,
        give_up_at: Instant,
        deadline: Instant,
    ) -> Result<Slot, Full> {
        let now = Instant::now();
        let max_wait = give_up_at.saturating_duration_since(now);
        // The earliest the store can give a slot, when known: later turns come after it.
        let mut first_free = now;
        if self.queue.lock().lanes.is_empty() {
            let decision = self
                .store
                .reserve(SlotRequest {
                    key: &self.key,
                    instance_id,
                    max_wait: Duration::ZERO,
                    deadline,
                })
                .await;
            match decision {
                Ok(slot) => {
                    let mut queue = self.queue.lock();
                    queue.rate = slot.rate;
                    queue.last_slot = queue.last_slot.max(Instant::now() + slot.wait);
                    return Ok(slot);
                }
                // The bucket itself frees up too late: no lane can help.
                Err(full) if full.retry_after > max_wait => return Err(full),
                Err(full) => {
                    self.queue.lock().rate = full.rate;
                    first_free = now + full.retry_after;
                }
            }
        }
        let (answer, granted) = oneshot::channel();
        {
            let mut queue = self.queue.lock();
            let estimate = queue.estimate(caller, first_free);
            if estimate > max_wait {
                return Err(Full {
                    bucket: Bucket::Account,
                    retry_after: estimate,
                    rate: queue.rate,
                    fallback: false,
                });
            }
            queue.lanes.push(
                caller.index,
                caller.weight,
                Waiter {
                    instance_id: Arc::from(instance_id),
                    give_up_at,
                    deadline,
                    answer,
                },
            );
            if !queue.dispatching {
                queue.dispatching = true;
                tokio::spawn(dispatch(
                    self.key.clone(),
                    self.store.clone(),
                    self.queue.clone(),
                ));
            }
        }
        match tokio::time::timeout_at(give_up_at, granted).await {
            Ok(Ok(decision)) => decision.map(|slot| Slot {
                queued: true,
                ..slot
            }),
            // Not served in time (or the dispatcher is gone, which only happens at shutdown): its
            // place in the lane is dropped by the dispatcher when it comes to it.
            Ok(Err(_)) | Err(_) => {
                let queue = self.queue.lock();
                Err(Full {
                    bucket: Bucket::Account,
                    retry_after: queue.estimate(caller, Instant::now()),
                    rate: queue.rate,
                    fallback: false,
                })
            }
        }
    }
}

impl Queue {
    /// How long a new attempt of `caller` would wait: the slots fair order gives before its turn,
    /// to the calls waiting and to those the other waiting callers will send meanwhile. Refusing
    /// past the wait bound at once matters: a call admitted only to time out would still have
    /// pushed its caller's later calls back.
    ///
    /// Its slot is that many intervals after the last slot given out (a slot already promised to a
    /// call that left its lane counts), and never before `first_free` and the turns after it.
    fn estimate(&self, caller: &CallerShare, first_free: Instant) -> Duration {
        let now = Instant::now();
        let slots = self.lanes.slots_until_next(caller.index, caller.weight);
        let intervals =
            |n: f64| Duration::try_from_secs_f64(n / self.rate).unwrap_or(Duration::MAX);
        let by_order = self.last_slot.checked_add(intervals(slots));
        let by_bucket = first_free.checked_add(intervals((slots - 1.0).max(0.0)));
        match by_order.zip(by_bucket) {
            Some((by_order, by_bucket)) => by_order.max(by_bucket).saturating_duration_since(now),
            None => Duration::MAX,
        }
    }
}

/// Hands out slots in DRR order, one at a time, until the lanes are empty.
async fn dispatch(key: String, store: Arc<dyn QuotaStore>, queue: Arc<Mutex<Queue>>) {
    loop {
        let waiter = {
            let mut queue = queue.lock();
            match queue.lanes.pop(|w: &Waiter| !w.answer.is_closed()) {
                Some((_, waiter)) => {
                    // Until the store answers (a local store answers when the slot is due), the
                    // slot is taken to be an interval after the last: arrivals meanwhile count it.
                    let interval =
                        Duration::try_from_secs_f64(1.0 / queue.rate).unwrap_or_default();
                    queue.last_slot = (queue.last_slot + interval).max(Instant::now());
                    waiter
                }
                None => {
                    queue.dispatching = false;
                    return;
                }
            }
        };
        let now = Instant::now();
        if waiter.give_up_at <= now {
            continue;
        }
        let decision = store
            .reserve(SlotRequest {
                key: &key,
                instance_id: &waiter.instance_id,
                max_wait: waiter.give_up_at - now,
                deadline: waiter.deadline,
            })
            .await;
        {
            let mut queue = queue.lock();
            match &decision {
                Ok(slot) => {
                    queue.rate = slot.rate;
                    queue.last_slot = Instant::now() + slot.wait;
                }
                Err(full) => queue.rate = full.rate,
            }
        }
        let wait = decision.as_ref().map_or(Duration::ZERO, |slot| slot.wait);
        // The waiter sleeps until its slot by itself; the next lane's turn comes at that time, so
        // no slot is promised ahead of a caller that arrives meanwhile.
        let _ = waiter.answer.send(decision);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(order: &mut FairOrder<u32>, n: usize) -> Vec<usize> {
        (0..n)
            .filter_map(|_| order.pop(|_| true).map(|(lane, _)| lane))
            .collect()
    }

    fn count(served: &[usize], lane: usize) -> usize {
        served.iter().filter(|&&l| l == lane).count()
    }

    #[test]
    fn equal_weights_alternate_whatever_the_arrival_order() {
        let mut order = FairOrder::default();
        for i in 0..10 {
            order.push(0, 1.0, i);
        }
        order.push(1, 1.0, 100);
        order.push(1, 1.0, 101);
        assert_eq!(drain(&mut order, 6), vec![0, 1, 0, 1, 0, 0]);
    }

    #[test]
    fn weights_share_in_proportion_with_a_backlog() {
        let mut order = FairOrder::default();
        for i in 0..400 {
            order.push(0, 3.0, i);
            order.push(1, 1.0, i);
            order.push(2, 0.5, i);
        }
        let served = drain(&mut order, 450);
        let counts = (count(&served, 0), count(&served, 1), count(&served, 2));
        assert!(
            (299..=301).contains(&counts.0)
                && (99..=101).contains(&counts.1)
                && (49..=51).contains(&counts.2),
            "{counts:?}"
        );
    }

    #[test]
    fn weights_hold_with_one_call_waiting_per_lane() {
        // Each lane refills as soon as its call is served: the wait bound allows no backlog.
        let mut order = FairOrder::default();
        order.push(0, 3.0, 0);
        order.push(1, 1.0, 0);
        let mut served = Vec::new();
        for _ in 0..400 {
            let (lane, _) = order.pop(|_| true).unwrap();
            served.push(lane);
            order.push(lane, if lane == 0 { 3.0 } else { 1.0 }, 0);
        }
        assert_eq!((count(&served, 0), count(&served, 1)), (300, 100));
    }

    #[test]
    fn an_idle_lane_has_saved_no_credit() {
        let mut order = FairOrder::default();
        order.push(1, 1.0, 0);
        assert_eq!(drain(&mut order, 1), vec![1]);
        for i in 0..50 {
            order.push(0, 1.0, i);
        }
        drain(&mut order, 40);
        // Lane 1 was idle while lane 0 was served 40 times: it comes back at the virtual time, and
        // alternates from there instead of taking 40 turns in a row.
        for i in 0..5 {
            order.push(1, 1.0, i);
        }
        assert_eq!(drain(&mut order, 4), vec![0, 1, 0, 1]);
    }

    #[test]
    fn gone_items_are_skipped() {
        let mut order = FairOrder::default();
        order.push(0, 1.0, 0);
        order.push(0, 1.0, 1);
        order.push(1, 1.0, 2);
        assert_eq!(order.pop(|&item| item != 0), Some((1, 2)));
        assert_eq!(order.pop(|_| true), Some((0, 1)));
        assert_eq!(order.pop(|_| true), None);
        assert!(order.is_empty());
    }

    #[test]
    fn a_new_callers_estimate_counts_its_turn_not_the_flood() {
        let now = Instant::now();
        let mut queue = Queue {
            lanes: FairOrder::default(),
            rate: 2.0,
            dispatching: false,
            last_slot: now,
        };
        let mut receivers = Vec::new();
        for _ in 0..6 {
            let (tx, rx) = oneshot::channel::<Result<Slot, Full>>();
            receivers.push(rx);
            queue.lanes.push(
                0,
                1.0,
                Waiter {
                    instance_id: Arc::from("i"),
                    give_up_at: Instant::now(),
                    deadline: Instant::now(),
                    answer: tx,
                },
            );
        }
        let flood = CallerShare::anonymous();
        let quiet = CallerShare {
            index: 1,
            ..CallerShare::anonymous()
        };
        // The flood's next call is behind its own 6: its 7th slot at 2/s.
        let around = |estimate: Duration, millis: u64| {
            let expected = Duration::from_millis(millis);
            assert!(
                estimate <= expected && estimate + Duration::from_millis(50) > expected,
                "{estimate:?} for {expected:?}"
            );
        };
        around(queue.estimate(&flood, now), 3500);
        // The quiet caller's first call is the second slot: one for the flood, then its own.
        around(queue.estimate(&quiet, now), 1000);
        let weighted = CallerShare {
            index: 1,
            weight: 1.0 / 3.0,
            ..CallerShare::anonymous()
        };
        // At a third of the flood's weight, three of the flood's calls come before it.
        around(queue.estimate(&weighted, now), 2000);
        // A store that frees its next slot only in 3 s puts every turn after it.
        around(queue.estimate(&quiet, now + Duration::from_secs(3)), 3500);
    }
}
