//! A flood of refused calls with oversized ids, from the outside: the logs stay bounded per line
//! (caller values quoted at most 128 characters) and per second (failed-call lines sampled), each
//! line names the peer, and the answer quotes the id within bounds a stock gRPC client reads.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    support::{channel, entire_session},
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
