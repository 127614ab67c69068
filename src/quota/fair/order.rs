//! The order in which waiting attempts are served: self-clocked fair queuing across lanes.

use std::collections::VecDeque;

use tokio::time::Instant;

/// Lanes of items served by self-clocked fair queuing (Golestani, 1994): an item's tag is its lane's
/// last tag (or the virtual time, if the lane fell behind) plus 1/weight, and the smallest tag goes
/// first; the virtual time is the tag last served. Unlike deficit round robin, a lane keeps its place
/// between two items, so weights hold even when every lane has only one call waiting at a time (a
/// short wait bound at 2 requests/s leaves room for little more), while a lane that was idle cannot
/// have saved credit: it restarts at the virtual time.
#[derive(Debug)]
pub(crate) struct FairOrder<T> {
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
    /// Not served before this time (the fleet-wide share said so), while it has items.
    held_until: Option<Instant>,
}

/// An item taken out in fair order, with what it takes to put it back in its place.
#[derive(Debug)]
pub(crate) struct Popped<T> {
    pub lane: usize,
    tag: f64,
    arrival: u64,
    pub item: T,
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
                held_until: None,
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
    pub(crate) fn push(&mut self, lane: usize, weight: f64, item: T) {
        let tag = self.next_tag(lane, weight);
        let arrival = self.arrivals;
        self.arrivals += 1;
        let entry = self.lane(lane);
        entry.last_tag = tag;
        entry.weight = weight;
        entry.items.push_back((tag, arrival, item));
    }

    /// The next item in fair order among the lanes not held at `now`, dropping on the way those
    /// `live` says are gone.
    pub(crate) fn pop(
        &mut self,
        now: Instant,
        mut live: impl FnMut(&T) -> bool,
    ) -> Option<Popped<T>> {
        let mut best: Option<(usize, f64, u64)> = None;
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            while lane.items.front().is_some_and(|(_, _, item)| !live(item)) {
                lane.items.pop_front();
            }
            if lane.items.is_empty() {
                lane.held_until = None;
                continue;
            }
            if lane.held_until.is_some_and(|until| until > now) {
                continue;
            }
            lane.held_until = None;
            if let Some(&(tag, arrival, _)) = lane.items.front()
                && best.is_none_or(|(_, t, a)| (tag, arrival) < (t, a))
            {
                best = Some((index, tag, arrival));
            }
        }
        let (lane, tag, _) = best?;
        self.virtual_time = tag;
        let (tag, arrival, item) = self.lanes[lane].items.pop_front()?;
        Some(Popped {
            lane,
            tag,
            arrival,
            item,
        })
    }

    /// Puts `popped` back at the front of its lane, and serves nothing of that lane before `until`.
    pub(crate) fn hold(&mut self, popped: Popped<T>, until: Instant) {
        let lane = &mut self.lanes[popped.lane];
        lane.items
            .push_front((popped.tag, popped.arrival, popped.item));
        lane.held_until = Some(until);
    }

    /// When the first held lane with items is released.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter(|lane| !lane.items.is_empty())
            .filter_map(|lane| lane.held_until)
            .min()
    }

    /// Slots until a new item of `lane` at `weight` would be served if it came now: between the
    /// virtual time and its tag, every lane with items (its own included) is served its weight per
    /// unit of tag, the items that will arrive meanwhile included.
    pub(crate) fn slots_until_next(&self, lane: usize, weight: f64) -> f64 {
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

    /// Items waiting in each lane, by lane.
    pub(crate) fn lengths(&self) -> Vec<usize> {
        self.lanes.iter().map(|l| l.items.len()).collect()
    }

    /// Items waiting in every lane.
    pub(crate) fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.items.len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.items.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn drain(order: &mut FairOrder<u32>, n: usize) -> Vec<usize> {
        (0..n)
            .filter_map(|_| order.pop(Instant::now(), |_| true).map(|p| p.lane))
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
            let lane = order.pop(Instant::now(), |_| true).unwrap().lane;
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
        let now = Instant::now();
        let popped = |p: Option<Popped<u32>>| p.map(|p| (p.lane, p.item));
        assert_eq!(popped(order.pop(now, |&item| item != 0)), Some((1, 2)));
        assert_eq!(popped(order.pop(now, |_| true)), Some((0, 1)));
        assert_eq!(popped(order.pop(now, |_| true)), None);
        assert!(order.is_empty());
    }

    #[test]
    fn a_held_lane_keeps_its_place_and_the_others_go_on_meanwhile() {
        let mut order = FairOrder::default();
        for i in 0..3 {
            order.push(0, 1.0, i);
            order.push(1, 1.0, 10 + i);
        }
        let now = Instant::now();
        let first = order.pop(now, |_| true).unwrap();
        assert_eq!((first.lane, first.item), (0, 0));
        let release = now + Duration::from_secs(1);
        order.hold(first, release);
        assert_eq!(order.next_release(), Some(release));
        let meanwhile: Vec<u32> = (0..3)
            .map(|_| order.pop(now, |_| true).unwrap().item)
            .collect();
        assert_eq!(
            meanwhile,
            vec![10, 11, 12],
            "lane 1 alone while lane 0 is held"
        );
        assert!(order.pop(now, |_| true).is_none(), "lane 0 is still held");
        // Released, lane 0 resumes with the call it was holding, in its order.
        let after: Vec<u32> = (0..3)
            .map(|_| order.pop(release, |_| true).unwrap().item)
            .collect();
        assert_eq!(after, vec![0, 1, 2]);
        assert_eq!(order.next_release(), None);
    }

    #[test]
    fn a_hold_ends_when_its_lane_empties() {
        let mut order = FairOrder::default();
        order.push(0, 1.0, 0);
        let now = Instant::now();
        let popped = order.pop(now, |_| true).unwrap();
        order.hold(popped, now + Duration::from_secs(60));
        // Its call gave up: the lane is empty, and a new call is not held by the old answer.
        assert!(order.pop(now, |_| false).is_none());
        assert!(order.is_empty());
        order.push(0, 1.0, 1);
        assert_eq!(order.pop(now, |_| true).map(|p| p.item), Some(1));
    }
}
