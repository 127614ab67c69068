//! Caller authorization with --auth-file: bearer tokens and mTLS subjects, per instance.

use std::{path::PathBuf, time::Duration};

use connect_facade::{app::App, simulator::fixtures::Fixtures};
use sha2::{Digest, Sha256};
use tonic::{Code, Request};

use crate::{
    support::{INSTANCE, TestApp, channel, entire_session, offline_config, spawn_with},
    support::{Pki, tls_client},
};

const TOKEN: &str = "billing-token-not-for-logs";

fn auth_file(pki_dir: &std::path::Path) -> PathBuf {
    let path = pki_dir.join("auth.yaml");
    std::fs::write(
        &path,
        format!(
            r#"callers:
  - name: billing-service
    token_sha256: "{}"
    instances: ["{INSTANCE}"]
  - name: ops-console
    tls_subject: "CN=ops-console"
    instances: ["*"]
"#,
            hex::encode(Sha256::digest(TOKEN.as_bytes()))
        ),
    )
    .unwrap();
    path
}

fn with_token(
    token: &str,
    request: connect_facade::proto::CreatePersistentContactAssociationRequest,
) -> Request<connect_facade::proto::CreatePersistentContactAssociationRequest> {
    let mut request = Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn guarded(pki: &Pki) -> TestApp {
    let file = auth_file(&pki.dir);
    spawn_with(Fixtures::demo(), move |c| {
        c.callers.auth_file = Some(file);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

#[tokio::test]
async fn unknown_callers_are_unauthenticated_and_aws_is_not_called() {
    let pki = Pki::new("auth-unknown");
    let app = guarded(&pki).await;
    let (_, info, _) = app
        .call_expecting(entire_session(), Code::Unauthenticated)
        .await;
    assert_eq!(info.reason, "CALLER_UNKNOWN");
    let status = app
        .client
        .clone()
        .create_persistent_contact_association(with_token("a-guess", entire_session()))
        .await
        .expect_err("a wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(app.simulator.requests().is_empty());
}

#[tokio::test]
async fn a_token_caller_may_use_only_its_instances() {
    let pki = Pki::new("auth-token");
    let app = guarded(&pki).await;
    let response = app
        .client
        .clone()
        .create_persistent_contact_association(with_token(TOKEN, entire_session()))
        .await
        .expect("billing-service may use its instance");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");

    let mut elsewhere = entire_session();
    elsewhere.instance_id = "some-other-instance".into();
    let status = app
        .client
        .clone()
        .create_persistent_contact_association(with_token(TOKEN, elsewhere))
        .await
        .expect_err("not granted");
    assert_eq!(status.code(), Code::PermissionDenied);
    let details = tonic_types::StatusExt::get_error_details(&status);
    let info = details.error_info().unwrap();
    assert_eq!(info.reason, "CALLER_NOT_ALLOWED");
    assert_eq!(info.metadata["caller"], "billing-service");
    assert_eq!(info.metadata["instanceId"], "some-other-instance");
    assert_eq!(
        app.simulator.requests().len(),
        1,
        "only the allowed call reached AWS"
    );

    let metrics = app.scrape().await;
    assert!(
        metrics.contains(r#"connect_facade_caller_calls_total{caller="billing-service"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(TOKEN));
}

#[tokio::test]
async fn health_and_reflection_stay_open() {
    let pki = Pki::new("auth-open");
    let app = guarded(&pki).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(app.addr).await);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no credentials");
    assert_eq!(
        answer.get_ref().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let services = crate::support::reflected_services(app.addr).await;
    assert!(
        services
            .iter()
            .any(|service| service == "amazonconnect.v1.ContactService"),
        "reflection needs no credentials: {services:?}"
    );
    // The RPC itself stays closed to the same anonymous client.
    let refused = app
        .call(entire_session())
        .await
        .expect_err("the RPC needs credentials");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_mtls_subject_identifies_a_caller() {
    let pki = Pki::new("auth-mtls");
    let file = auth_file(&pki.dir);
    let client_ca = pki.write("client-ca.pem", &pki.ca_pem);
    let app = crate::support::tls_app_with(&pki, Some(&client_ca), move |c| {
        c.callers.auth_file = Some(file)
    })
    .await;
    let response = tls_client(app.addr, &pki.ca_pem, Some(pki.leaf("ops-console")))
        .create_persistent_contact_association(entire_session())
        .await
        .expect("ops-console may use every instance");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    let status = tls_client(app.addr, &pki.ca_pem, Some(pki.leaf("someone-else")))
        .create_persistent_contact_association(entire_session())
        .await
        .expect_err("a valid certificate of an unlisted caller");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_bad_auth_file_stops_startup_naming_the_line() {
    let pki = Pki::new("auth-bad");
    let file = pki.write(
        "auth.yaml",
        "callers:\n  - name: x\n    token_sha256: not-hex\n    instances: [\"*\"]\n",
    );
    let mut config = offline_config();
    config.callers.auth_file = Some(file);
    let err = App::build(config).await.err().expect("startup fails");
    let message = err.to_string();
    assert!(
        message.contains("auth.yaml") && message.contains("line 2"),
        "{message}"
    );
}

#[tokio::test]
async fn a_stranger_is_refused_on_its_headers_without_waiting_for_its_body() {
    use crate::support::{connect_head, h2_answer, half_a_grpc_message, http1_answer};
    let pki = Pki::new("auth-headers");
    let app = guarded(&pki).await;
    // Each request's body never comes; the default deadline is seconds away.
    let (answer, took) = http1_answer(&app, &connect_head("")).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains(r#""code":"unauthenticated""#), "{answer}");
    assert!(took < Duration::from_millis(500), "answered after {took:?}");
    for content_type in ["application/grpc", "application/grpc-web+proto"] {
        let (_, status, took) = h2_answer(app.addr, content_type, &[], half_a_grpc_message()).await;
        assert_eq!(
            status.as_deref(),
            Some("16"),
            "{content_type}: UNAUTHENTICATED"
        );
        assert!(took < Duration::from_millis(500), "answered after {took:?}");
    }
    // A known caller's unfinished body is waited for, until its deadline.
    let bearer = format!("Bearer {TOKEN}");
    let (_, status, took) = h2_answer(
        app.addr,
        "application/grpc",
        &[("authorization", &bearer), ("grpc-timeout", "300m")],
        half_a_grpc_message(),
    )
    .await;
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    assert!(
        took >= Duration::from_millis(250),
        "answered after {took:?}"
    );
    // The refusals are counted as the handler counts them, and AWS never heard of them.
    let metrics = app.scrape().await;
    let unauthenticated = metrics
        .lines()
        .find(|line| {
            line.starts_with("grpc_server_handled_total")
                && line.contains("grpc_code=\"Unauthenticated\"")
        })
        .unwrap_or_default();
    assert!(unauthenticated.ends_with(" 3"), "{unauthenticated}");
    assert!(app.simulator.requests().is_empty());
}
