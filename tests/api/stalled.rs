//! Requests whose body never comes: every one is answered DEADLINE_EXCEEDED by its deadline from
//! arrival (the caller's, capped by `--default-deadline`), in its own protocol, over HTTP/1.1 and
//! h2c, and the server keeps serving.

use crate::support::{connect_head, h2_answer, half_a_grpc_message, http1_answer};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::support::{TestApp, entire_session, open_chats_with_quota, spawn_with};

async fn app_with_default_deadline(deadline: Duration) -> TestApp {
    spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.retries.default_deadline = deadline;
    })
    .await
}

#[tokio::test]
async fn a_connect_body_that_never_comes_over_http1_is_deadline_exceeded_at_the_deadline() {
    let app = app_with_default_deadline(Duration::from_millis(800)).await;
    let (answer, took) = http1_answer(&app, &connect_head("")).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains(r#""code":"deadline_exceeded""#), "{answer}");
    assert!(
        (Duration::from_millis(750)..Duration::from_millis(1_500)).contains(&took),
        "answered after {took:?}"
    );
    // The caller's own, shorter timeout is kept.
    let (answer, took) = http1_answer(&app, &connect_head("connect-timeout-ms: 300\r\n")).await;
    assert!(answer.contains(r#""code":"deadline_exceeded""#), "{answer}");
    assert!(took < Duration::from_millis(700), "answered after {took:?}");
    // A longer one is capped by --default-deadline.
    let (_, took) = http1_answer(&app, &connect_head("connect-timeout-ms: 60000\r\n")).await;
    assert!(
        took < Duration::from_millis(1_500),
        "answered after {took:?}"
    );
    assert!(app.call(entire_session()).await.is_ok(), "still serving");
}

#[tokio::test]
async fn a_grpc_message_that_never_completes_is_deadline_exceeded_never_cancelled() {
    let app = app_with_default_deadline(Duration::from_millis(800)).await;
    let (_, status, took) =
        h2_answer(app.addr, "application/grpc", &[], half_a_grpc_message()).await;
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    assert!(
        (Duration::from_millis(750)..Duration::from_millis(1_500)).contains(&took),
        "answered after {took:?}"
    );
    // With the caller's grpc-timeout, tonic's own timer would answer CANCELLED at it.
    let (_, status, took) = h2_answer(
        app.addr,
        "application/grpc",
        &[("grpc-timeout", "300m")],
        half_a_grpc_message(),
    )
    .await;
    assert_eq!(
        status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED, not CANCELLED"
    );
    assert!(took < Duration::from_millis(700), "answered after {took:?}");
    assert!(app.call(entire_session()).await.is_ok(), "still serving");
}

#[tokio::test]
async fn a_connect_body_that_never_comes_over_h2c_is_deadline_exceeded() {
    let app = app_with_default_deadline(Duration::from_millis(600)).await;
    let (status, _, took) = h2_answer(
        app.addr,
        "application/json",
        &[],
        Bytes::from_static(b"{\"instanceId\""),
    )
    .await;
    assert_eq!(status, http::StatusCode::GATEWAY_TIMEOUT);
    assert!(
        (Duration::from_millis(550)..Duration::from_millis(1_300)).contains(&took),
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn past_the_open_requests_bound_a_call_is_refused_on_its_headers_until_one_ends() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.peers.max_open_requests = 4;
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let addr = app.addr;
        held.spawn(async move {
            h2_answer(
                addr,
                "application/grpc",
                &[("grpc-timeout", "1500m")],
                half_a_grpc_message(),
            )
            .await
        });
    }
    // A fixed sleep: the held streams' headers reach the server; nothing tells the client they did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (_, info, _) = app
        .call_expecting(entire_session(), tonic::Code::ResourceExhausted)
        .await;
    assert_eq!(info.reason, "OVERLOADED");
    assert!(started.elapsed() < Duration::from_millis(200));
    while let Some(answer) = held.join_next().await {
        let (_, status, _) = answer.unwrap();
        assert_eq!(
            status.as_deref(),
            Some("4"),
            "the held calls end at their deadline"
        );
    }
    assert!(app.call(entire_session()).await.is_ok(), "served again");
    let metrics = app.scrape().await;
    assert!(
        metrics.contains("connect_facade_open_requests_refused_total 1\n"),
        "{}",
        metrics
            .lines()
            .filter(|line| line.contains("open_requests"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
