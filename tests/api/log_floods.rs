//! A flood of refused calls with oversized ids, from the outside: the logs stay bounded per line
//! (caller values quoted at most 128 characters) and per second (failed-call lines sampled), each
//! line names the peer, and the answer quotes the id within bounds a stock gRPC client reads. A
//! body answered at its deadline is logged as any failed call.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    support::{channel, connect_head, entire_session, http1_answer_at},
    support::{facade, serving},
};
use connect_facade::proto::contact_service_client::ContactServiceClient;

#[tokio::test]
async fn three_thousand_refused_calls_with_a_60_kb_id_write_bounded_sampled_logs() {
    let serving = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let before: usize = serving
        .logs
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.len() + 1)
        .sum();
    let client = ContactServiceClient::new(channel(serving.addr).await);
    let mut request = entire_session();
    request.instance_id = "i".repeat(60_000);

    // The answer quotes the id within bounds: INVALID_ARGUMENT with its BadRequest, readable.
    let status = client
        .clone()
        .create_persistent_contact_association(request.clone())
        .await
        .expect_err("an id of 60,000 characters is invalid");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.details().len() < 4_096,
        "{} bytes of details",
        status.details().len()
    );
    let violations = status.get_error_details().bad_request().cloned().unwrap();
    assert_eq!(violations.field_violations[0].field, "instance_id");

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for worker in 0..30 {
        let (mut client, request) = (client.clone(), request.clone());
        calls.spawn(async move {
            for _ in 0..100 {
                let answer = client
                    .create_persistent_contact_association(request.clone())
                    .await;
                assert!(answer.is_err(), "worker {worker}");
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    let took = started.elapsed();
    // A fixed sleep: the child's log lines reach the reader through a pipe with no end-of-flood event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = serving.logs.lock().unwrap().clone();
    let written: usize = logs.iter().map(|l| l.len() + 1).sum::<usize>() - before;
    let longest = logs.iter().map(String::len).max().unwrap_or(0);
    let finished: Vec<&String> = logs.iter().filter(|l| l.contains("rpc finished")).collect();
    eprintln!(
        "3,001 refused calls in {took:?}: {written} bytes of log ({} per call), {} call lines, \
         longest line {longest} bytes",
        written / 3_001,
        finished.len()
    );
    assert!(longest < 2_048, "a line of {longest} bytes");
    assert!(written < 3_001 * 1_024, "{written} bytes of log");
    // 100 lines a second (and as many at once), and a report of the others.
    let budget = 100 + (took.as_secs_f64() * 100.0).ceil() as usize + 5;
    assert!(
        finished.len() <= budget,
        "{} call lines (budget {budget})",
        finished.len()
    );
    assert!(
        finished.iter().all(|l| l.contains("\"peer\":\"127.0.0.1:")),
        "{}",
        finished[0]
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("failed-call lines left out")),
        "the suppressed lines are reported"
    );
}

#[tokio::test]
async fn a_body_answered_at_its_deadline_is_logged_with_the_peer() {
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--default-deadline",
        "300ms",
    ]))
    .await;
    for _ in 0..3 {
        let (answer, _) = http1_answer_at(serving.addr, &connect_head("")).await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    }
    // A fixed sleep: the child's log lines reach the reader through a pipe with no event to await.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = serving.logs.lock().unwrap().clone();
    let lines: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("rpc finished") && l.contains("request_not_in_time"))
        .collect();
    assert_eq!(lines.len(), 3, "{logs:#?}");
    for line in lines {
        assert!(line.contains("DEADLINE_EXCEEDED"), "{line}");
        assert!(line.contains("\"peer\":\"127.0.0.1:"), "{line}");
    }
}

/// A Connect call with an empty message (INVALID_ARGUMENT) over HTTP/1.1 from `source`.
async fn invalid_call_from(source: std::net::IpAddr, addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = "POST /amazonconnect.v1.ContactService/CreatePersistentContactAssociation HTTP/1.1\r\n\
                host: facade\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
                connection: close\r\n\r\n{}";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("invalid_argument"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn a_flooding_peer_cannot_hide_another_peers_failures_and_every_line_left_out_is_counted() {
    let mut serving = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let (flooder, other) = (
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from([127, 0, 0, 2]),
    );
    let addr = serving.addr;
    let flood = tokio::spawn(async move {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            calls.spawn(async move {
                for _ in 0..50 {
                    invalid_call_from(flooder, addr).await;
                }
            });
        }
        calls.join_all().await;
    });
    for _ in 0..5 {
        invalid_call_from(other, addr).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.await.unwrap();
    crate::support::sigterm(&serving.child);
    crate::support::exits_zero(&mut serving.child).await;
    // A fixed sleep: the last lines reach the reader through the pipe after the exit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = serving.logs.lock().unwrap().clone();
    let finished_from = |ip: &str| {
        logs.iter()
            .filter(|l| l.contains("rpc finished") && l.contains(&format!("\"peer\":\"{ip}:")))
            .count()
    };
    assert_eq!(
        finished_from("127.0.0.2"),
        5,
        "every failure of the quiet peer is written"
    );
    let flooded = finished_from("127.0.0.1");
    let left_out: u64 = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|event| {
            event["fields"]["message"]
                == "failed-call lines left out: more than the per-second budget"
        })
        .filter_map(|event| event["fields"]["suppressed"].as_u64())
        .sum();
    assert!(flooded < 100, "{flooded} lines for the flooding peer");
    assert_eq!(
        flooded as u64 + left_out,
        400,
        "each of the flooding peer's 400 failures is written or counted as left out (the last \
         count at shutdown)"
    );
}
