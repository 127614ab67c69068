//! How the server stops and how it tells the world it is ready, the way Kubernetes expects:
//!
//! - Readiness: `grpc.health.v1.Health` answers SERVING (overall `""` and for the service) while the
//!   server runs. It follows the circuit breaker (NOT_SERVING while it is open) only when asked
//!   (`--readiness-follows-breaker`): every replica calls the same AWS, so when AWS fails every
//!   breaker opens together, and a readiness that followed them would empty the Kubernetes Service.
//!   Callers would then get connection errors instead of the facade's UNAVAILABLE with a RetryInfo.
//! - Shutdown, on SIGTERM or Ctrl-C: health turns NOT_SERVING at once, the listener stops accepting
//!   (GOAWAY on open connections), and calls in flight may finish for up to the grace period. tonic's
//!   graceful shutdown has no drain timeout of its own, so [`Drain`] adds one: calls still running when
//!   the grace period ends are answered UNAVAILABLE (safe to retry elsewhere with the same client
//!   token), and the process exits 0.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::proto::SERVICE_NAME;

/// How often readiness reads the breakers, when it follows them.
const READINESS_INTERVAL: Duration = Duration::from_millis(200);

/// Tells calls in flight that the drain period is over.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    expired: CancellationToken,
}

impl Drain {
    /// Ends the grace period: every call still waiting is answered at once.
    pub fn expire(&self) {
        self.expired.cancel();
    }

    /// Completes when the grace period is over.
    pub(crate) fn expired(&self) -> impl Future<Output = ()> + Send + 'static {
        self.expired.clone().cancelled_owned()
    }
}

/// What the background tasks watch to stop, rather than being aborted. `draining` is cancelled when
/// shutdown begins (stop accepting, stop reloading files, stop following the breaker); `stopped`
/// once the calls in flight are done or the grace period is over: the metrics endpoint serves until
/// then, so the drain itself can be scraped.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub draining: CancellationToken,
    pub stopped: CancellationToken,
}

/// Sets both the overall and the service's health status.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Follows the circuit breakers into health until `stop`: NOT_SERVING while `every_breaker_open`.
pub fn follow_breakers(
    reporter: HealthReporter,
    every_breaker_open: impl Fn() -> bool + Send + 'static,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = true;
        let mut tick = tokio::time::interval(READINESS_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            // Not serving only when no account can be called: one failing account must not take
            // the pods away from the others'.
            let all_open = every_breaker_open();
            if all_open == serving {
                serving = !all_open;
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                tracing::info!(?status, "readiness follows the circuit breaker");
                set_health(&reporter, status).await;
            }
        }
    })
}
