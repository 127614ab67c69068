//! Waiting for an open-loop call's send time.
//!
//! Tokio's timer ticks once a millisecond: above 1,000 calls/s it releases calls in groups (about
//! 6 per tick at 6,000/s), and the application under test then answers bursts a fixed rate does
//! not have. On Linux a timerfd (nanosecond resolution) spaces the sends as scheduled. It is read
//! through the runtime's own epoll like a socket: no pacing thread, and no wake-up of the runtime
//! from another thread (a `thread::sleep` pacer cost the direct path a third of its throughput).

use clap::ValueEnum;
use tokio::time::Instant;

/// How open-loop sends are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pacing {
    /// A timerfd per run (Linux; elsewhere, Tokio's timer).
    Timerfd,
    /// Tokio's timer: a 1 ms tick, calls leave in groups above 1,000/s.
    Tokio,
}

pub struct Pacer {
    #[cfg(target_os = "linux")]
    timerfd: Option<tokio_timerfd::Delay>,
}

impl Pacer {
    /// A pacer of the kind asked for; if no timerfd can be made, it says so and paces on Tokio's
    /// timer (the report names what paced the run).
    pub fn new(pacing: Pacing) -> Self {
        #[cfg(target_os = "linux")]
        {
            let timerfd = match pacing {
                Pacing::Timerfd => tokio_timerfd::Delay::new(std::time::Instant::now())
                    .inspect_err(|err| {
                        eprintln!("loadgen: no timerfd ({err}); pacing on Tokio's timer");
                    })
                    .ok(),
                Pacing::Tokio => None,
            };
            Pacer { timerfd }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pacing;
            Pacer {}
        }
    }

    /// Returns at `due` (at once if it has passed).
    pub async fn until(&mut self, due: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(timerfd) = &mut self.timerfd {
            timerfd.reset(due.into_std());
            match timerfd.await {
                Ok(()) => return,
                Err(err) => {
                    // Reading a timerfd does not fail in practice; if it does, the run goes on
                    // and says how it is paced now.
                    eprintln!("loadgen: the timerfd failed ({err}); pacing on Tokio's timer");
                    self.timerfd = None;
                }
            }
        }
        tokio::time::sleep_until(due).await;
    }

    /// What actually paces the sends (after any fallback).
    pub fn name(&self) -> &'static str {
        #[cfg(target_os = "linux")]
        if self.timerfd.is_some() {
            return "timerfd";
        }
        "tokio"
    }
}
