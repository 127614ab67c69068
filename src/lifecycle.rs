//! One lifecycle for the whole process (mini-redis's `shutdown.rs`): a [`Lifecycle`] value owns the
//! three moments of a shutdown and every task the app spawns. Parts get a [`Tasks`] handle when
//! they are built and spawn through it, so no task is detached and none is aborted:
//!
//! 1. **draining**: stop accepting connections, stop reloading files and following the breakers;
//! 2. **expired**: the grace period is over; calls still running are answered UNAVAILABLE;
//! 3. **stopped**: the calls are done; long-lived tasks (heartbeats, probes, dispatchers, the
//!    metrics endpoint) end, and [`Lifecycle::stop`] waits for every task, short ones included
//!    (a call's AWS request, a note to Redis), within a bound.

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The process's shutdown moments and its tasks; clones share them, and cost one reference count
/// (the call service holds a clone, and the edge clones its stack for every request).
#[derive(Clone, Debug, Default)]
pub struct Lifecycle(Arc<Moments>);

#[derive(Debug, Default)]
struct Moments {
    draining: CancellationToken,
    expired: CancellationToken,
    tasks: Tasks,
}

impl Lifecycle {
    /// The handle parts spawn their tasks through.
    pub fn tasks(&self) -> Tasks {
        self.0.tasks.clone()
    }

    /// Cancelled when shutdown begins.
    pub fn draining(&self) -> CancellationToken {
        self.0.draining.clone()
    }

    pub fn begin_draining(&self) {
        self.0.draining.cancel();
    }

    /// Ends the grace period: every call still running is answered at once.
    pub fn expire(&self) {
        self.0.expired.cancel();
    }

    /// Completes when the grace period is over.
    pub(crate) fn expired(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.expired.clone().cancelled_owned()
    }

    /// Stops the long-lived tasks and waits `within` for every task; whether all ended.
    pub async fn stop(&self, within: Duration) -> bool {
        let tasks = &self.0.tasks;
        tasks.stopped.cancel();
        tasks.tracker.close();
        tokio::time::timeout(within, tasks.tracker.wait())
            .await
            .is_ok()
    }
}

/// Spawns a part's tasks under the process's one tracker.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stopped: CancellationToken,
}

impl Tasks {
    /// A task that ends by itself (a call's AWS request, a note to Redis): waited for at stop.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// A task that would run for the process's life (a heartbeat, a probe, a dispatcher): it ends
    /// at its next await once the process stops.
    pub fn spawn_until_stopped(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stopped = self.stopped.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stopped.cancelled() => {}
            }
        });
    }

    /// Cancelled when the process stops, for a task that ends its own loop.
    pub fn stopped(&self) -> CancellationToken {
        self.stopped.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_ends_long_lived_tasks_and_waits_for_short_ones() {
        let lifecycle = Lifecycle::default();
        let tasks = lifecycle.tasks();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn_until_stopped(std::future::pending());
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = done_tx.send(());
        });
        assert!(lifecycle.stop(Duration::from_secs(1)).await);
        assert!(done_rx.await.is_ok(), "the short task ran to its end");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_reports_a_task_that_outlives_its_bound() {
        let lifecycle = Lifecycle::default();
        lifecycle.tasks().spawn(std::future::pending());
        assert!(!lifecycle.stop(Duration::from_secs(1)).await);
    }
}
