//! Each served connection's calls in flight and since when it has had none, and the table of the
//! open connections the accept loop turns to when `--max-connections` is reached: rather than
//! refusing the newcomer while connections that make no call (an idle HTTP/2 client that only
//! answers PINGs) hold every place, it tells the one idle the longest to close (GOAWAY, so a call
//! racing it is retried by its client) and admits the newcomer, as the open-requests bound picks
//! the busiest connection to reset. A connection with a call in flight, or with one within
//! `--evict-idle-after` (1 s), is never picked: a busy caller between two calls keeps its
//! connection.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};

/// The calls in flight on one connection, and since when it has had none.
pub(crate) struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
    changed: Notify,
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    pub(crate) fn open(self: &Arc<Self>) -> OpenCall {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        OpenCall(self.clone())
    }

    /// Resolves once the connection has had no call in flight for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            // Created before the state is read: a change after the read still wakes it.
            let changed = self.changed.notified();
            if self.open.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let since = *self.idle_since.lock();
            tokio::select! {
                () = tokio::time::sleep_until(since + timeout) => {
                    if self.open.load(Ordering::SeqCst) == 0 && *self.idle_since.lock() == since {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }

    /// Resolves once the accept loop picked this connection to close.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Since when it has had no call, if it has none now.
    fn idle_since(&self) -> Option<Instant> {
        (self.open.load(Ordering::SeqCst) == 0).then(|| *self.idle_since.lock())
    }
}

/// A call in flight; the connection is idle again when the last one is dropped.
pub(crate) struct OpenCall(Arc<Activity>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            *activity.idle_since.lock() = Instant::now();
        }
        activity.changed.notify_waiters();
    }
}

/// The open connections of one listener, shared by the accept loop and the connections' tasks.
#[derive(Clone, Default)]
pub struct Connections(Arc<Table>);

#[derive(Default)]
struct Table {
    open: Mutex<HashMap<u64, Weak<Activity>>>,
    next: AtomicU64,
}

impl Connections {
    /// A new connection's activity, listed until the [`Listed`] is dropped.
    pub(crate) fn register(&self) -> (Arc<Activity>, Listed) {
        let activity = Arc::new(Activity::new());
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.open.lock().insert(id, Arc::downgrade(&activity));
        (activity, Listed(self.0.clone(), id))
    }

    /// Tells the connection idle the longest (at least `after`) to close; whether there was one.
    /// One connection is told once.
    pub(crate) fn evict_longest_idle(&self, after: Duration) -> bool {
        let now = Instant::now();
        let open = self.0.open.lock();
        let victim = open
            .values()
            .filter_map(Weak::upgrade)
            .filter(|activity| !activity.evicted.load(Ordering::SeqCst))
            .filter_map(|activity| activity.idle_since().map(|since| (since, activity)))
            .filter(|(since, _)| now.saturating_duration_since(*since) >= after)
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, activity)) => {
                activity.evicted.store(true, Ordering::SeqCst);
                activity.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the table, given up when its task ends.
pub(crate) struct Listed(Arc<Table>, u64);

impl Drop for Listed {
    fn drop(&mut self) {
        self.0.open.lock().remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_connection_idle_the_longest_is_picked_never_a_busy_or_recent_one() {
        let connections = Connections::default();
        let (oldest, _a) = connections.register();
        tokio::time::advance(Duration::from_secs(5)).await;
        let (busy, _b) = connections.register();
        let _call = busy.open();
        let (newer, _c) = connections.register();
        tokio::time::advance(Duration::from_secs(2)).await;
        let (recent, _d) = connections.register();
        let _ = recent;

        assert!(connections.evict_longest_idle(Duration::from_secs(1)));
        assert!(oldest.evicted.load(Ordering::SeqCst));
        assert!(
            connections.evict_longest_idle(Duration::from_secs(1)),
            "the next idle one"
        );
        assert!(newer.evicted.load(Ordering::SeqCst));
        assert!(
            !connections.evict_longest_idle(Duration::from_secs(1)),
            "a busy connection and one idle under a second are kept"
        );
        assert!(!busy.evicted.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_leaves_the_table() {
        let connections = Connections::default();
        let (_activity, listed) = connections.register();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(listed);
        assert!(!connections.evict_longest_idle(Duration::from_secs(1)));
    }
}
