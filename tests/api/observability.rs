//! Prometheus metrics after real calls: the go-grpc-prometheus names dashboards use, and the facade's own.

use connect_facade::simulator::fixtures::Fixtures;
use tonic::Code;

use crate::helpers::{always_error, entire_session, series_value, spawn_with};

fn value(metrics: &str, series: &str) -> f64 {
    series_value(metrics, series).unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

const RPC: &str = r#"grpc_type="unary",grpc_service="amazonconnect.v1.ContactService",grpc_method="CreatePersistentContactAssociation""#;

#[tokio::test]
async fn metrics_count_calls_codes_attempts_and_retries() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.simulator
        .add_fault(connect_facade::simulator::faults::Fault {
            times: Some(1),
            ..always_error("ThrottlingException")
        });
    app.call(entire_session())
        .await
        .expect("ok after one retry");
    app.call_expecting(Default::default(), Code::InvalidArgument)
        .await;

    let metrics = app.scrape().await;
    assert_eq!(
        value(&metrics, &format!("grpc_server_started_total{{{RPC}}}")),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("grpc_server_handled_total{{{RPC},grpc_code=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("grpc_server_handled_total{{{RPC},grpc_code=\"InvalidArgument\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("grpc_server_handling_seconds_count{{{RPC}}}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"connect_facade_upstream_attempts_total{key="us-east-1",outcome="Throttling",aws_error_code="ThrottlingException"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"connect_facade_upstream_attempts_total{key="us-east-1",outcome="ok",aws_error_code=""}"#
        ),
        1.0
    );
    assert_eq!(value(&metrics, "connect_facade_retries_total"), 1.0);
    assert_eq!(value(&metrics, "connect_facade_in_flight_calls"), 0.0);
    assert_eq!(
        value(
            &metrics,
            r#"connect_facade_circuit_breaker_open{key="us-east-1"}"#
        ),
        0.0
    );
    assert!(metrics.contains("connect_facade_build_info{version="));
}

#[tokio::test]
async fn the_runtime_task_gauge_is_flat_across_calls() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let unknown_chat = || connect_facade::proto::CreatePersistentContactAssociationRequest {
        initial_contact_id: "no-such-chat".into(),
        ..entire_session()
    };
    app.call_expecting(unknown_chat(), Code::NotFound).await;
    let before = value(&app.scrape().await, "connect_facade_runtime_alive_tasks");
    assert!(before > 0.0, "the server's own tasks are counted");
    for _ in 0..50 {
        app.call_expecting(unknown_chat(), Code::NotFound).await;
    }
    let after = value(&app.scrape().await, "connect_facade_runtime_alive_tasks");
    assert_eq!(after, before, "finished calls leave no task behind");
}
