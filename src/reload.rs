//! When to re-read a file the facade serves from (the TLS certificates, the routes): on SIGHUP,
//! forced, and every interval, where the reader itself checks whether the contents changed. A
//! polled interval rather than inotify, because Kubernetes updates mounted Secrets and ConfigMaps by
//! swapping a symlink, which file watches often miss.

use std::time::Duration;

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior},
};

/// The moments to reload at: SIGHUP (forced) and each `interval` (never when zero).
pub struct Triggers {
    hangup: Option<Signal>,
    ticks: Option<Interval>,
}

impl Triggers {
    /// `what` names the file in the log line when SIGHUP cannot be watched.
    pub fn new(interval: Duration, what: &str) -> Self {
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
        Self { hangup, ticks }
    }

    /// Waits for the next moment; `true` when it is a SIGHUP (reload even if unchanged).
    pub async fn next(&mut self) -> bool {
        loop {
            tokio::select! {
                signal = hung_up(&mut self.hangup) => match signal {
                    Some(()) => return true,
                    None => self.hangup = None,
                },
                () = tick(&mut self.ticks) => return false,
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
