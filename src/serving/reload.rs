//! When to re-read a file the facade serves from (the TLS certificates, the routes): on SIGHUP,
//! forced, and every interval, where the reader itself checks whether the contents changed. A
//! polled interval rather than inotify, because Kubernetes updates mounted Secrets and ConfigMaps by
//! swapping a symlink, which file watches often miss.

use std::time::Duration;

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

/// The moments to reload at: SIGHUP (forced) and each `interval` (never when zero), until `stop`.
pub struct Triggers {
    hangup: Option<Signal>,
    ticks: Option<Interval>,
    stop: CancellationToken,
}

impl Triggers {
    /// `what` names the file in the log line when SIGHUP cannot be watched.
    pub fn new(interval: Duration, what: &str, stop: CancellationToken) -> Self {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "no SIGHUP handler: {what} reloads only on file changes");
                None
            }
        };
        let ticks = (!interval.is_zero()).then(|| {
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        Self {
            hangup,
            ticks,
            stop,
        }
    }

    /// Waits for the next moment: `Some(true)` for a SIGHUP (reload even if unchanged), `None`
    /// once the process stops.
    pub async fn next(&mut self) -> Option<bool> {
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                signal = hung_up(&mut self.hangup) => match signal {
                    Some(()) => return Some(true),
                    None => self.hangup = None,
                },
                () = tick(&mut self.ticks) => return Some(false),
            }
        }
    }
}

async fn hung_up(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_triggers_end_when_the_process_stops() {
        let stop = CancellationToken::new();
        let mut triggers =
            Triggers::new(Duration::from_millis(10), "the test's file", stop.clone());
        assert_eq!(triggers.next().await, Some(false), "a tick");
        stop.cancel();
        assert_eq!(triggers.next().await, None, "told to stop");
    }
}
