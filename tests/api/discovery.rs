//! What grpcurl and Kubernetes need: reflection (v1 and v1alpha) listing the service, and health.

use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1alpha;

use std::time::{Duration, Instant};

use connect_facade::simulator::fixtures::Fixtures;

use crate::support::{
    always_error, channel, entire_session, eventually, overall_health, spawn, spawn_with,
};

const SERVICE: &str = "amazonconnect.v1.ContactService";

#[tokio::test]
async fn health_reports_serving_overall_and_for_the_service() {
    let app = spawn().await;
    let mut health = HealthClient::new(channel(app.addr).await);
    for service in ["", SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check answers");
        assert_eq!(
            response.get_ref().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1_lists_the_service_and_the_standard_ones() {
    let app = spawn().await;
    let names = crate::support::reflected_services(app.addr).await;
    for expected in [SERVICE, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1alpha_describes_error_details_for_grpcurl() {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn().await;
    let mut client = ServerReflectionClient::new(channel(app.addr).await);
    for symbol in [SERVICE, "google.rpc.ErrorInfo", "grpc.health.v1.Health"] {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection answers")
            .into_inner();
        let Some(Ok(response)) = responses.next().await else {
            panic!("no reflection response")
        };
        assert!(
            matches!(
                response.message_response,
                Some(MessageResponse::FileDescriptorResponse(_))
            ),
            "{symbol} not resolvable: {:?}",
            response.message_response
        );
    }
}

/// A facade whose breaker opens after two 5xx for `cool_down`, and the two calls that open it.
async fn open_the_breaker(
    readiness_follows_breaker: bool,
    cool_down: Duration,
) -> crate::support::TestApp {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.retries.max_attempts = 1;
        c.retries.breaker_failures = 2;
        c.retries.breaker_cool_down = cool_down;
        c.retries.readiness_follows_breaker = readiness_follows_breaker;
    })
    .await;
    app.simulator
        .add_fault(always_error("InternalServiceException"));
    for _ in 0..2 {
        let _ = app.call(entire_session()).await;
    }
    app
}

#[tokio::test]
async fn with_readiness_following_the_breaker_health_is_not_serving_while_the_circuit_is_open() {
    let app = open_the_breaker(true, Duration::from_millis(800)).await;
    let opened = Instant::now();
    let health_is = |status| async move { overall_health(app.addr).await == status };
    eventually("not serving while open", Duration::from_millis(600), || {
        health_is(ServingStatus::NotServing)
    })
    .await;
    // Ready again once a probe may go through (the breaker's cool-down is 800 ms).
    eventually("serving again", Duration::from_secs(2), || {
        health_is(ServingStatus::Serving)
    })
    .await;
    assert!(opened.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn by_default_health_stays_serving_while_the_circuit_is_open() {
    let app = open_the_breaker(false, Duration::from_secs(5)).await;
    let (_, info, _) = app
        .call_expecting(entire_session(), tonic::Code::Unavailable)
        .await;
    assert_eq!(info.reason, "CIRCUIT_OPEN", "the breaker is open");
    // Readiness is read from the breaker every 200 ms: watch it for several rounds.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(700) {
        assert_eq!(overall_health(app.addr).await, ServingStatus::Serving);
        // A fixed sleep: the state watched must hold over several 200 ms readiness rounds.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
