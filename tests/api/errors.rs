//! Every outcome the simulator can produce, mapped to its documented gRPC status and details.

use std::time::{Duration, Instant};

use connect_facade::{
    simulator::{faults::FaultEffect, fixtures::Fixtures},
    status::{AWS_DOMAIN, FACADE_DOMAIN},
};
use tonic::Code;

use crate::support::{INSTANCE, always_error, entire_session, fault, loopback, spawn, spawn_with};

#[tokio::test]
async fn modelled_aws_errors_map_to_their_codes_with_aws_metadata() {
    let cases = [
        (
            "InvalidParameterException",
            Code::InvalidArgument,
            "INVALID_PARAMETER",
        ),
        (
            "InvalidRequestException",
            Code::FailedPrecondition,
            "INVALID_REQUEST",
        ),
        (
            "ResourceNotFoundException",
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
        ),
        (
            "AccessDeniedException",
            Code::PermissionDenied,
            "ACCESS_DENIED",
        ),
        ("ThrottlingException", Code::ResourceExhausted, "THROTTLED"),
        (
            "InternalServiceException",
            Code::Unavailable,
            "SERVICE_UNAVAILABLE",
        ),
    ];
    for (aws_code, code, reason) in cases {
        let app = spawn().await;
        app.simulator.add_fault(always_error(aws_code));
        let mut request = entire_session();
        request.client_token = format!("token-{aws_code}");
        let (status, info, details) = app.call_expecting(request, code).await;
        assert_eq!(status.message(), format!("simulated {aws_code}"));
        assert_eq!(info.reason, reason);
        assert_eq!(info.domain, AWS_DOMAIN);
        assert_eq!(info.metadata["awsErrorCode"], aws_code);
        assert_eq!(info.metadata["clientToken"], format!("token-{aws_code}"));
        assert_eq!(info.metadata["instanceId"], INSTANCE);
        let request_id = &info.metadata["awsRequestId"];
        assert_eq!(
            &details.request_info().expect("RequestInfo").request_id,
            request_id
        );
        assert_eq!(
            details.retry_info().is_some(),
            matches!(code, Code::ResourceExhausted | Code::Unavailable),
            "{aws_code}: RetryInfo only on retryable errors"
        );
    }
}

#[tokio::test]
async fn the_simulators_own_semantics_come_through() {
    let app = spawn().await;
    let mut unknown_instance = entire_session();
    unknown_instance.instance_id = "no-such-instance".into();
    let (_, info, _) = app.call_expecting(unknown_instance, Code::NotFound).await;
    assert_eq!(info.metadata["awsErrorCode"], "ResourceNotFoundException");

    let mut not_first_contact = entire_session();
    not_first_contact.source_contact_id = "C2".into();
    let (status, _, _) = app
        .call_expecting(not_first_contact, Code::FailedPrecondition)
        .await;
    assert!(
        status.message().contains("initial contact"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_second_association_aws_refuses_is_a_failed_precondition() {
    // With replay the facade remembers the first and answers the second itself (tests/api/replay.rs);
    // without, AWS's own refusal comes through.
    let app = spawn_with(Fixtures::demo(), |c| {
        c.quota.replay_window = std::time::Duration::ZERO;
    })
    .await;
    app.call(entire_session()).await.expect("first association");
    let (status, info, _) = app
        .call_expecting(entire_session(), Code::FailedPrecondition)
        .await;
    assert!(
        status.message().contains("already enabled"),
        "{}",
        status.message()
    );
    assert_eq!(info.metadata["awsErrorCode"], "InvalidRequestException");
}

#[tokio::test]
async fn other_5xx_answers_are_unavailable() {
    let app = spawn().await;
    app.simulator.add_fault(fault(FaultEffect::Error {
        code: "BadGatewayFromSomewhere".into(),
        status: Some(502),
        message: None,
    }));
    let (_, info, _) = app
        .call_expecting(entire_session(), Code::Unavailable)
        .await;
    assert_eq!(info.metadata["awsErrorCode"], "BadGatewayFromSomewhere");
}

#[tokio::test]
async fn an_unknown_aws_code_is_unknown_with_the_code_in_error_info() {
    let app = spawn().await;
    app.simulator.add_fault(always_error("BrandNewException"));
    let (_, info, _) = app.call_expecting(entire_session(), Code::Unknown).await;
    assert_eq!(info.reason, "UNRECOGNIZED_AWS_ERROR");
    assert_eq!(info.metadata["awsErrorCode"], "BrandNewException");
}

#[tokio::test]
async fn an_unparseable_answer_is_internal() {
    let app = spawn().await;
    app.simulator.add_fault(fault(FaultEffect::Unparseable));
    let (_, info, _) = app.call_expecting(entire_session(), Code::Internal).await;
    assert_eq!(info.reason, "UPSTREAM_RESPONSE_INVALID");
}

#[tokio::test]
async fn a_dropped_connection_is_unavailable() {
    let app = spawn().await;
    app.simulator.add_fault(fault(FaultEffect::DropConnection));
    let (_, info, _) = app
        .call_expecting(entire_session(), Code::Unavailable)
        .await;
    assert_eq!(info.reason, "UPSTREAM_UNREACHABLE");
    assert_eq!(info.domain, FACADE_DOMAIN);
    assert!(info.metadata.contains_key("clientToken"));
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let closed = std::net::TcpListener::bind(loopback()).unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_with(Fixtures::demo(), |config| {
        config.aws.endpoint_url = Some(closed_url);
    })
    .await;
    let (_, info, _) = app
        .call_expecting(entire_session(), Code::Unavailable)
        .await;
    assert_eq!(info.reason, "UPSTREAM_UNREACHABLE");
}

#[tokio::test]
async fn an_attempt_slower_than_the_attempt_timeout_is_unavailable() {
    let app = spawn_with(Fixtures::demo(), |config| {
        config.aws.attempt_timeout = Duration::from_millis(200);
    })
    .await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 2_000 }));
    let (_, info, _) = app
        .call_expecting(entire_session(), Code::Unavailable)
        .await;
    assert_eq!(info.reason, "UPSTREAM_UNREACHABLE");
}

#[tokio::test]
async fn credentials_aws_rejects_are_internal_aws_credentials() {
    let fixtures = Fixtures {
        access_key_ids: vec!["AKIDSOMEONEELSE".into()],
        ..Fixtures::demo()
    };
    let app = spawn_with(fixtures, |_| {}).await;
    let (_, info, _) = app.call_expecting(entire_session(), Code::Internal).await;
    assert_eq!(info.reason, "AWS_CREDENTIALS");
    assert_eq!(info.domain, AWS_DOMAIN);
    assert_eq!(info.metadata["awsErrorCode"], "UnrecognizedClientException");
}

#[tokio::test]
async fn the_callers_deadline_answers_deadline_exceeded_on_time() {
    let app = spawn().await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 3_000 }));
    let (status, elapsed) = app
        .call_with_deadline(entire_session(), Duration::from_millis(500))
        .await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let info = tonic_types::StatusExt::get_error_details(&status)
        .error_info()
        .cloned()
        .expect("the facade answered, not the client's timer");
    assert_eq!(info.reason, "DEADLINE_EXCEEDED");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(650),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn without_a_caller_deadline_the_default_applies() {
    let app = spawn_with(Fixtures::demo(), |config| {
        config.retries.default_deadline = Duration::from_millis(300);
    })
    .await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 3_000 }));
    let started = Instant::now();
    let (_, info, _) = app
        .call_expecting(entire_session(), Code::DeadlineExceeded)
        .await;
    assert_eq!(info.domain, FACADE_DOMAIN);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_simulated_account_quota_throttles_like_aws() {
    let fixtures = Fixtures {
        quota: Some(connect_facade::simulator::fixtures::QuotaFixture {
            rate_per_second: 0.5,
            burst: 2,
        }),
        ..Fixtures::demo()
    };
    let app = spawn_with(fixtures, |_| {}).await;
    let mut unknown = entire_session();
    unknown.instance_id = "quota-probe".into();
    for _ in 0..2 {
        app.call_expecting(unknown.clone(), Code::NotFound).await;
    }
    let (status, info, details) = app.call_expecting(unknown, Code::ResourceExhausted).await;
    assert_eq!(status.message(), "Rate exceeded");
    assert_eq!(info.metadata["awsErrorCode"], "ThrottlingException");
    assert!(details.retry_info().is_some());
}

#[tokio::test]
async fn a_deadline_already_past_is_deadline_exceeded_without_calling_aws() {
    use prost::Message;
    let app = spawn().await;
    // gRPC-Web over raw HTTP/1.1 (tonic's own client would end a zero timeout itself, unsent):
    // the protobuf of the demo session is plain ASCII, so the request is text.
    let message = entire_session().encode_to_vec();
    let mut frame = vec![0u8, 0, 0, 0, message.len() as u8];
    frame.extend_from_slice(&message);
    let body = String::from_utf8(frame).expect("an ASCII frame");
    for timeout in ["0m", "1n", "0S"] {
        let head = format!(
            "POST /amazonconnect.v1.ContactService/CreatePersistentContactAssociation HTTP/1.1\r\n\
             host: facade\r\ncontent-type: application/grpc-web+proto\r\nconnection: close\r\n\
             grpc-timeout: {timeout}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (answer, _) = crate::support::http1_answer(&app, &head).await;
        assert!(
            answer.contains("grpc-status: 4") || answer.contains("grpc-status:4"),
            "{timeout}: DEADLINE_EXCEEDED in {answer}"
        );
    }
    assert!(
        app.simulator.requests().is_empty(),
        "AWS was not asked: {:?}",
        app.simulator.requests()
    );
}
