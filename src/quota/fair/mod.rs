//! Fair shares of the quota among callers, weighted by each caller's `weight` (auth file), in this
//! replica and across the fleet: a caller that sends little gets its calls through while a
//! neighbour floods.
//!
//! - In this replica, attempts that must wait join their caller's lane; one dispatcher task takes
//!   them in weighted fair order ([`FairOrder`], self-clocked fair queuing) and reserves one slot at
//!   a time in the store. An attempt whose turn cannot come within its wait bound is refused at once
//!   with that estimate as its RetryInfo.
//! - Across replicas, the store's script shares the account's rate among the callers active in the
//!   last [`ACTIVE_CALLER_WINDOW`] by weight; a caller over its share only borrows a slot free now,
//!   else its lane is held while the dispatcher serves the others.
//!
//! No maintained crate schedules async waiters by weight with per-waiter deadlines over an external
//! rate store (tower's limits are FIFO), hence this module. The design and the shapes weighed:
//! the book's "Designs" chapter (docs/building/designs.md).

mod order;

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};

use super::{Bucket, CallerWeight, Full, QuotaStore, Slot, SlotRequest};
use crate::{auth::CallerShare, lifecycle::Tasks};
pub(crate) use order::FairOrder;

/// How long a caller counts among the active ones, for the fleet-wide shares, after its last
/// attempt: a caller sending a call every few seconds keeps its share, and one that stopped gives
/// it back within this time (meanwhile its unused share is lent anyway).
pub const ACTIVE_CALLER_WINDOW: Duration = Duration::from_secs(5);

/// An attempt waiting in its caller's lane.
struct Waiter {
    instance_id: Arc<str>,
    /// Its caller, for the store's fleet-wide shares.
    caller: CallerShare,
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

/// What the queue's handle and its dispatcher task share.
struct Waiting {
    key: String,
    store: Arc<dyn QuotaStore>,
    tasks: Tasks,
    queue: Mutex<Queue>,
    /// Wakes a dispatcher waiting for a held lane when a call arrives in another.
    arrived: Notify,
}

/// The callers' lanes in front of one quota key of a store.
pub(crate) struct FairQueue {
    waiting: Arc<Waiting>,
}

fn caller_weight(caller: &CallerShare) -> Option<CallerWeight<'_>> {
    caller.name.as_deref().map(|name| CallerWeight {
        name,
        weight: caller.weight,
    })
}

impl FairQueue {
    pub fn new(key: &str, store: Arc<dyn QuotaStore>, rate: f64, tasks: Tasks) -> Self {
        Self {
            waiting: Arc::new(Waiting {
                key: key.to_owned(),
                store,
                tasks,
                queue: Mutex::new(Queue {
                    lanes: FairOrder::default(),
                    rate,
                    dispatching: false,
                    last_slot: Instant::now(),
                }),
                arrived: Notify::new(),
            }),
        }
    }

    /// Attempts waiting for their slot now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.queue.lock().lanes.len()
    }

    /// Attempts waiting now, by caller index (the lane's).
    pub(crate) fn waiting_by_caller(&self) -> Vec<usize> {
        self.waiting.queue.lock().lanes.lengths()
    }

    /// How long an attempt arriving now would wait behind every attempt queued, at the rate last
    /// known: the most any caller waits (fair order serves a caller with fewer queued sooner);
    /// zero when none is queued (the bucket then answers at once, with its burst or within one
    /// interval).
    pub(crate) fn predicted_wait(&self) -> Duration {
        let queue = self.waiting.queue.lock();
        let queued = queue.lanes.len();
        if queued == 0 {
            return Duration::ZERO;
        }
        let behind =
            Duration::try_from_secs_f64(queued as f64 / queue.rate).unwrap_or(Duration::MAX);
        queue
            .last_slot
            .checked_add(behind)
            .map_or(Duration::MAX, |at| {
                at.saturating_duration_since(Instant::now())
            })
    }

    /// A slot for one attempt of `caller` on `instance_id` by `give_up_at` (never past `deadline`),
    /// or when to come back.
    pub(crate) async fn acquire(
        &self,
        caller: &CallerShare,
        instance_id: &str,
        give_up_at: Instant,
        deadline: Instant,
    ) -> Result<Slot, Full> {
        let waiting = &self.waiting;
        let now = Instant::now();
        let max_wait = give_up_at.saturating_duration_since(now);
        // The earliest the store can give a slot, when known: later turns come after it.
        let mut first_free = now;
        if waiting.queue.lock().lanes.is_empty() {
            let decision = waiting
                .store
                .reserve(SlotRequest {
                    key: &waiting.key,
                    instance_id,
                    max_wait: Duration::ZERO,
                    deadline,
                    caller: caller_weight(caller),
                })
                .await;
            match decision {
                Ok(slot) => {
                    let mut queue = waiting.queue.lock();
                    queue.rate = slot.rate;
                    queue.last_slot = queue.last_slot.max(Instant::now() + slot.wait);
                    return Ok(slot);
                }
                // The bucket itself (or the caller's share) frees up too late: no lane can help.
                Err(full) if full.retry_after > max_wait => return Err(full),
                Err(full) => {
                    waiting.queue.lock().rate = full.rate;
                    first_free = now + full.retry_after;
                }
            }
        }
        let (answer, granted) = oneshot::channel();
        {
            let mut queue = waiting.queue.lock();
            let estimate = queue.estimate(caller, first_free);
            if estimate > max_wait {
                return Err(Full {
                    bucket: Bucket::Account,
                    retry_after: estimate,
                    rate: queue.rate,
                    share: 1.0,
                    fallback: false,
                });
            }
            queue.lanes.push(
                caller.index,
                caller.weight,
                Waiter {
                    instance_id: Arc::from(instance_id),
                    caller: caller.clone(),
                    give_up_at,
                    deadline,
                    answer,
                },
            );
            if queue.dispatching {
                waiting.arrived.notify_one();
            } else {
                queue.dispatching = true;
                waiting.tasks.spawn_until_stopped(dispatch(waiting.clone()));
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
                let queue = waiting.queue.lock();
                Err(Full {
                    bucket: Bucket::Account,
                    retry_after: queue.estimate(caller, Instant::now()),
                    rate: queue.rate,
                    share: 1.0,
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

/// Hands out slots in fair order, one at a time, until the lanes are empty.
async fn dispatch(waiting: Arc<Waiting>) {
    loop {
        let next = {
            let mut queue = waiting.queue.lock();
            match queue
                .lanes
                .pop(Instant::now(), |w: &Waiter| !w.answer.is_closed())
            {
                Some(popped) => {
                    // Until the store answers (a local store answers when the slot is due), the
                    // slot is taken to be an interval after the last: arrivals meanwhile count it.
                    let interval =
                        Duration::try_from_secs_f64(1.0 / queue.rate).unwrap_or_default();
                    queue.last_slot = (queue.last_slot + interval).max(Instant::now());
                    Ok(popped)
                }
                None if queue.lanes.is_empty() => {
                    queue.dispatching = false;
                    return;
                }
                None => Err(queue.lanes.next_release().unwrap_or_else(Instant::now)),
            }
        };
        let popped = match next {
            Ok(popped) => popped,
            // Every lane with calls is held by its fleet-wide share: wait for the first to be
            // released, or for a call in another lane.
            Err(release) => {
                tokio::select! {
                    () = tokio::time::sleep_until(release) => {}
                    () = waiting.arrived.notified() => {}
                }
                continue;
            }
        };
        let waiter = &popped.item;
        let now = Instant::now();
        if waiter.give_up_at <= now {
            continue;
        }
        let decision = waiting
            .store
            .reserve(SlotRequest {
                key: &waiting.key,
                instance_id: &waiter.instance_id,
                max_wait: waiter.give_up_at - now,
                deadline: waiter.deadline,
                caller: caller_weight(&waiter.caller),
            })
            .await;
        {
            let mut queue = waiting.queue.lock();
            match &decision {
                Ok(slot) => {
                    queue.rate = slot.rate;
                    queue.last_slot = Instant::now() + slot.wait;
                }
                Err(full) => queue.rate = full.rate,
            }
            // Over its fleet-wide share with no slot to lend now, but in time to ask again: the
            // call keeps its place, its lane waits, the others go on.
            if let Err(full) = &decision
                && full.bucket == Bucket::Share
            {
                let again = Instant::now() + full.retry_after;
                if again < popped.item.give_up_at {
                    queue.lanes.hold(popped, again);
                    continue;
                }
            }
        }
        let wait = decision.as_ref().map_or(Duration::ZERO, |slot| slot.wait);
        // The waiter sleeps until its slot by itself; the next lane's turn comes at that time, so
        // no slot is promised ahead of a caller that arrives meanwhile.
        let _ = popped.item.answer.send(decision);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    caller: CallerShare::anonymous(),
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
