//! Readiness, the way Kubernetes reads it: `grpc.health.v1.Health` answers SERVING (overall `""` and
//! for the service) while the server runs, and NOT_SERVING from the moment it drains.
//!
//! It follows the circuit breakers (NOT_SERVING while every one is open) only when asked
//! (`--readiness-follows-breaker`): every replica calls the same AWS, so when AWS fails every
//! breaker opens together, and a readiness that followed them would empty the Kubernetes Service.
//! Callers would then get connection errors instead of the facade's UNAVAILABLE with a RetryInfo.
//! How the process drains and stops is [`crate::lifecycle`]'s.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::proto::SERVICE_NAME;

/// How often readiness reads the breakers, when it follows them.
const READINESS_INTERVAL: Duration = Duration::from_millis(200);

/// Sets both the overall and the service's health status.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Follows the circuit breakers into health until `stop`: NOT_SERVING while `every_breaker_open`.
/// The task, to spawn when serving starts.
pub async fn follow_breakers(
    reporter: HealthReporter,
    every_breaker_open: impl Fn() -> bool + Send + 'static,
    stop: CancellationToken,
) {
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
}
