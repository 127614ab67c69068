//! The real binary, as an operator starts it: start-up failures, the quick start, and credentials
//! resolved from the (here: empty) default chain.

use crate::support::{
    Serving, exits_zero, facade, fixtures_with_faults, send_signal, serving, sigterm,
};
use std::{process::Stdio, time::Duration};

use connect_facade::{
    proto::{
        CreatePersistentContactAssociationResponse, contact_service_client::ContactServiceClient,
    },
    simulator::Simulator,
    simulator::fixtures::Fixtures,
    status::FACADE_DOMAIN,
};
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{channel, entire_session, eventually, loopback};

#[tokio::test]
async fn serve_without_a_region_exits_at_once_naming_the_fix() {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        facade(&["serve", "--listen", "127.0.0.1:0"]).output(),
    )
    .await
    .expect("exits promptly")
    .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AWS_REGION") && stderr.contains("--region"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_quick_start_serves_the_documented_example_over_the_embedded_simulator() {
    let Serving {
        addr,
        child: _child,
        ..
    } = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let mut client = ContactServiceClient::new(channel(addr).await);
    let response = client
        .create_persistent_contact_association(entire_session())
        .await
        .expect("the quick-start call succeeds");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
}

#[tokio::test]
async fn missing_credentials_are_internal_aws_credentials_and_aws_is_not_called() {
    let simulator = Simulator::start(loopback(), Fixtures::demo())
        .await
        .unwrap();
    let endpoint = simulator.endpoint_url();
    let Serving {
        addr,
        child: _child,
        ..
    } = serving(facade(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--region",
        "eu-west-2",
        "--endpoint-url",
        &endpoint,
    ]))
    .await;
    let mut client = ContactServiceClient::new(channel(addr).await);
    let status = client
        .create_persistent_contact_association(entire_session())
        .await
        .expect_err("no credentials, no call");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "AWS_CREDENTIALS");
    assert_eq!(info.domain, FACADE_DOMAIN);
    assert!(simulator.requests().is_empty());
}

#[tokio::test]
async fn simulate_serves_the_aws_wire_format() {
    let mut child = facade(&["simulate", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("announces its address")
        .unwrap()
        .expect("a line");
    let url = line.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    // Unsigned requests are refused as AWS refuses them.
    let stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .expect("simulator accepts connections");
    let answer = raw_http(
        stream,
        "POST /contact/persistent-contact-association/i/c HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-amzn-errortype: missingauthenticationtokenexception"),
        "{answer}"
    );
}

async fn raw_http(mut stream: tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Writes demo fixtures plus a latency fault to a fresh file for `--simulator-fixtures`.
fn slow_fixtures(millis: u64) -> std::path::PathBuf {
    fixtures_with_faults(&format!("  - {{ kind: latency, millis: {millis} }}\n"))
}

/// The binary over its embedded simulator, every answer delayed by `latency_millis`, with `extra`
/// flags; and a call to it already in flight.
async fn serving_a_slow_call(
    latency_millis: u64,
    extra: &[&str],
) -> (
    Serving,
    tokio::task::JoinHandle<
        Result<tonic::Response<CreatePersistentContactAssociationResponse>, tonic::Status>,
    >,
) {
    let fixtures = slow_fixtures(latency_millis);
    let mut args = vec![
        "serve",
        "--simulator",
        "--simulator-fixtures",
        fixtures.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let serving = serving(facade(&args)).await;
    // The binary has read its fixtures: the file is no longer needed.
    let _ = std::fs::remove_file(&fixtures);
    let mut client = ContactServiceClient::new(channel(serving.addr).await);
    let call = tokio::spawn(async move {
        client
            .create_persistent_contact_association(entire_session())
            .await
    });
    (serving, call)
}

#[tokio::test]
async fn sigterm_lets_a_call_in_flight_finish_then_exits_zero() {
    let (
        Serving {
            addr, mut child, ..
        },
        call,
    ) = serving_a_slow_call(1_000, &[]).await;
    // A fixed sleep: the slow call reaches the child process's simulator (it lasts 1 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    // Well before the call in flight ends (700 ms later), and so before the process exits.
    eventually(
        "the listener closes during the drain",
        Duration::from_millis(500),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    let response = call.await.unwrap().expect("the call in flight completes");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    exits_zero(&mut child).await;
}

#[tokio::test]
async fn calls_outlasting_the_grace_period_are_answered_unavailable() {
    let (Serving { mut child, .. }, call) =
        serving_a_slow_call(5_000, &["--shutdown-grace", "300ms"]).await;
    // A fixed sleep: the slow call reaches the child process's simulator (it lasts 5 s).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let status = call
        .await
        .unwrap()
        .expect_err("cut off by the grace period");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "SHUTTING_DOWN"
    );
    let elapsed = signalled.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1_500),
        "answered {elapsed:?} after SIGTERM"
    );
    exits_zero(&mut child).await;
}

#[tokio::test]
async fn no_secret_reaches_the_logs_even_at_trace_level() {
    let simulator = Simulator::start(loopback(), Fixtures::demo())
        .await
        .unwrap();
    let endpoint = simulator.endpoint_url();
    let secret = "wJalrXUtnFEMI-SECRET-NEVER-LOGGED";
    let session_token = "FwoGZXIvYXdzEXAMPLE-SESSION-NEVER-LOGGED";
    let bearer = "caller-bearer-token-NEVER-LOGGED";
    let bearer_hash = hex::encode(sha2::Sha256::digest(bearer.as_bytes()));
    let auth_file =
        std::env::temp_dir().join(format!("connect-facade-auth-{}.yaml", std::process::id()));
    std::fs::write(
        &auth_file,
        format!("callers:\n  - name: tracer\n    token_sha256: \"{bearer_hash}\"\n    instances: [\"*\"]\n"),
    )
    .unwrap();
    let mut command = facade(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--region",
        "eu-west-2",
        "--endpoint-url",
        &endpoint,
        "--auth-file",
        auth_file.to_str().unwrap(),
    ]);
    command
        .env("RUST_LOG", "trace")
        .env("AWS_ACCESS_KEY_ID", "AKIDTRACETEST")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", session_token);
    let Serving {
        mut child,
        addr,
        logs,
    } = serving(command).await;
    let mut client = ContactServiceClient::new(channel(addr).await);
    let mut request = tonic::Request::new(entire_session());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    let response = client
        .create_persistent_contact_association(request)
        .await
        .expect("the call succeeds with the environment's keys");
    let _ = std::fs::remove_file(&auth_file);
    let token = response.get_ref().client_token.clone();
    sigterm(&child);
    child.wait().await.unwrap();
    // A fixed sleep: the log reader drains the exited child's pipe.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = logs.lock().unwrap().join("\n");
    assert!(
        logs.len() > 10_000,
        "trace logging was on ({} bytes)",
        logs.len()
    );
    assert!(!logs.contains(secret), "the secret key reached the logs");
    assert!(!logs.contains(bearer), "the bearer token reached the logs");
    assert!(
        !logs.contains(&bearer_hash),
        "the auth file's content reached the logs"
    );
    assert!(
        !logs.contains(session_token),
        "the session token reached the logs"
    );

    // One line per call carries what an operator searches by: who and where in its span, the
    // outcome in its own fields.
    let finished = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["fields"]["message"] == "rpc finished")
        .expect("an rpc finished event");
    let (span, fields) = (&finished["span"], &finished["fields"]);
    assert_eq!(span["caller"], "tracer");
    assert_eq!(span["instance_id"], crate::support::INSTANCE);
    assert_eq!(fields["client_token"], token.as_str());
    assert_eq!(fields["grpc_code"], "Ok");
    assert_eq!(fields["attempts"], 1);
    assert!(fields["aws_request_id"].is_string(), "{fields}");
    assert!(fields["latency_ms"].is_number(), "{fields}");
}

/// SIGHUP asks for a reload; with nothing to reload (no TLS, no routes file: the default) it used to
/// end the process with SIGHUP's default action. It is logged, and the process keeps serving.
#[tokio::test]
async fn sighup_with_nothing_to_reload_is_logged_and_the_process_keeps_serving() {
    let mut serving = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    send_signal(&serving.child, "-HUP");
    let logs = serving.logs.clone();
    eventually("the SIGHUP line", Duration::from_secs(5), || {
        let logs = logs.clone();
        async move {
            logs.lock()
                .unwrap()
                .iter()
                .any(|line| line.contains("SIGHUP received") && line.contains("nothing (no file"))
        }
    })
    .await;
    assert!(
        serving.child.try_wait().unwrap().is_none(),
        "still running after SIGHUP"
    );
    let response = ContactServiceClient::new(channel(serving.addr).await)
        .create_persistent_contact_association(entire_session())
        .await
        .expect("still serving");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    sigterm(&serving.child);
    exits_zero(&mut serving.child).await;
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_without_a_restart() {
    use crate::support::{Pki, reaches_service, renew, until_served_by};
    let first = Pki::new("hup-first");
    let renewed = Pki::new("hup-renewed");
    let (cert, key) = first.leaf("localhost");
    let cert = first.write("server.pem", &cert);
    let key = first.write("server.key", &key);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        // Only the signal reloads.
        "--tls-reload-interval",
        "0",
    ]))
    .await;
    assert!(
        reaches_service(serving.addr, &first.ca_pem).await,
        "served with the first certificate"
    );

    renew(&first, &renewed);
    // A fixed sleep: holds the renewed files unread for longer than a reload would take, to show none happens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reaches_service(serving.addr, &renewed.ca_pem).await,
        "without the signal the files are not re-read"
    );
    send_signal(&serving.child, "-HUP");
    // After SIGHUP new connections get the renewed certificate.
    until_served_by(serving.addr, &renewed.ca_pem).await;
    // The line is read from the child's pipe a moment after the new certificate is served.
    eventually("the reload logged", Duration::from_secs(5), || {
        std::future::ready(
            serving
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains("TLS certificates reloaded")),
        )
    })
    .await;
}
