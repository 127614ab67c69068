//! TLS and mutual TLS with certificates made for the test (rcgen), checked by a real TLS client.

use crate::support::{
    Pki, answered, reaches_service, renew, tls_app, tls_app_with, tls_client, until_served_by,
};
use std::time::Duration;

use connect_facade::app::App;

use crate::support::{TestApp, entire_session, offline_config, series_value};

#[tokio::test]
async fn tls_serves_calls_and_refuses_plaintext() {
    let pki = Pki::new("server");
    let app = tls_app(&pki, None).await;
    let response = tls_client(app.addr, &pki.ca_pem, None)
        .create_persistent_contact_association(entire_session())
        .await
        .expect("a TLS call succeeds");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    assert!(
        app.call(entire_session()).await.is_err(),
        "plaintext is not served on a TLS port"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_callers_without_a_certificate_from_the_client_ca() {
    let pki = Pki::new("mtls");
    let client_ca = pki.write("client-ca.pem", &pki.ca_pem);
    let app = tls_app(&pki, Some(&client_ca)).await;

    let anonymous = tls_client(app.addr, &pki.ca_pem, None)
        .create_persistent_contact_association(entire_session())
        .await;
    assert!(anonymous.is_err(), "no client certificate: refused");

    let stranger = Pki::new("stranger");
    let foreign = tls_client(app.addr, &pki.ca_pem, Some(stranger.leaf("intruder")))
        .create_persistent_contact_association(entire_session())
        .await;
    assert!(foreign.is_err(), "a certificate from another CA: refused");
    assert!(app.simulator.requests().is_empty(), "AWS never called");

    let response = tls_client(app.addr, &pki.ca_pem, Some(pki.leaf("billing-service")))
        .create_persistent_contact_association(entire_session())
        .await
        .expect("a certificate from the client CA is accepted");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
}

#[tokio::test]
async fn a_bad_certificate_file_stops_startup() {
    let pki = Pki::new("bad");
    let cert = pki.write("server.pem", "not a certificate");
    let key = pki.write("server.key", "not a key");
    let mut config = offline_config();
    config.listening.tls_cert = Some(cert);
    config.listening.tls_key = Some(key);
    let err = App::build(config).await.err().expect("startup fails");
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// A reload counter's value: absent, as before the first reload of that result, is 0.
fn reloads(metrics: &str, result: &str) -> f64 {
    series_value(
        metrics,
        &format!("connect_facade_tls_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// A TLS facade over `pki`'s certificate that re-reads its files every 100 ms, with metrics.
async fn reloading_app(pki: &Pki) -> TestApp {
    tls_app_with(pki, None, |c| {
        c.listening.reload_interval = Duration::from_millis(100);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

#[tokio::test]
async fn renewed_certificate_files_are_served_to_new_connections_without_a_restart() {
    let first = Pki::new("first");
    let renewed = Pki::new("renewed");
    let app = reloading_app(&first).await;
    let mut open_before = tls_client(app.addr, &first.ca_pem, None);
    open_before
        .create_persistent_contact_association(entire_session())
        .await
        .expect("served with the first certificate");
    assert!(!reaches_service(app.addr, &renewed.ca_pem).await);
    let metrics = app.scrape().await;
    let series = format!(
        "connect_facade_tls_certificate_expiry_timestamp_seconds{{cert=\"{}\"}}",
        first.dir.join("server.pem").display()
    );
    let expiry = series_value(&metrics, &series).expect("the expiry is exported");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "notAfter in the future: {expiry} vs {now}");

    renew(&first, &renewed);
    // New connections get the renewed certificate.
    until_served_by(app.addr, &renewed.ca_pem).await;
    assert!(
        !reaches_service(app.addr, &first.ca_pem).await,
        "the first certificate is no longer served"
    );
    assert!(
        answered(
            open_before
                .create_persistent_contact_association(entire_session())
                .await
        ),
        "a connection made before the reload keeps working"
    );
    let metrics = app.scrape().await;
    assert!(reloads(&metrics, "ok") >= 1.0);
}

/// Waits (at most 5 s) until `count` reloads have failed.
async fn until_reload_errors(app: &TestApp, count: f64) {
    crate::support::eventually(
        &format!("{count} failed reloads"),
        Duration::from_secs(5),
        || async { reloads(&app.scrape().await, "error") >= count },
    )
    .await;
}

#[tokio::test]
async fn an_invalid_renewal_keeps_the_certificate_in_use() {
    let pki = Pki::new("kept");
    let app = reloading_app(&pki).await;
    pki.write("server.pem", "not a certificate");
    until_reload_errors(&app, 1.0).await;
    assert!(
        reaches_service(app.addr, &pki.ca_pem).await,
        "still served with the certificate in use"
    );

    // A key that is not the certificate's is refused too.
    let (cert, _) = pki.leaf("localhost");
    let (_, other_key) = pki.leaf("localhost");
    pki.write("server.pem", &cert);
    pki.write("server.key", &other_key);
    until_reload_errors(&app, 2.0).await;
    assert!(
        reaches_service(app.addr, &pki.ca_pem).await,
        "still served with the certificate in use"
    );
    assert_eq!(reloads(&app.scrape().await, "ok"), 0.0);
}
