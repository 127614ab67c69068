//! Replayed answers, refused token reuse and coalesced duplicates, in one replica and across two
//! sharing Redis. AWS's side is the simulator's count of the requests it received.

use std::time::Duration;

use connect_facade::{
    config::QuotaStoreChoice, proto::CreatePersistentContactAssociationRequest,
    simulator::faults::FaultEffect,
};
use tonic::Code;

use crate::support::{
    RedisServer, entire_session, fault, open_chats_with_quota, series_value, spawn, spawn_replica,
    spawn_with,
};

fn with_token(token: &str) -> CreatePersistentContactAssociationRequest {
    CreatePersistentContactAssociationRequest {
        client_token: token.into(),
        ..entire_session()
    }
}

#[tokio::test]
async fn the_same_token_with_other_fields_is_refused_before_aws() {
    let app = spawn_with(connect_facade::simulator::fixtures::Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.call(with_token("reused"))
        .await
        .expect("first call succeeds");
    let mut other = with_token("reused");
    other.source_contact_id = "C2".into();
    other.rehydration_type = connect_facade::proto::RehydrationType::FromSegment as i32;
    let (_, info, details) = app.call_expecting(other, Code::InvalidArgument).await;
    assert_eq!(info.reason, "CLIENT_TOKEN_REUSED");
    assert_eq!(info.metadata.get("clientToken").unwrap(), "reused");
    let bad = details.bad_request().expect("a BadRequest");
    assert_eq!(bad.field_violations[0].field, "client_token");
    assert_eq!(
        app.simulator.requests().len(),
        1,
        "AWS saw the first call only"
    );
    let metrics = app.scrape().await;
    assert_eq!(
        series_value(&metrics, "connect_facade_client_token_reuse_refusals_total"),
        Some(1.0)
    );
    assert_eq!(
        series_value(&metrics, "connect_facade_replay_cache_entries"),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_error_is_never_replayed() {
    let app = spawn().await;
    app.simulator
        .add_fault(connect_facade::simulator::faults::Fault {
            times: Some(1),
            ..crate::support::always_error("InvalidRequestException")
        });
    app.call_expecting(with_token("after-error"), Code::FailedPrecondition)
        .await;
    let answer = app
        .call(with_token("after-error"))
        .await
        .expect("the retry reaches AWS");
    assert!(answer.metadata().get("x-facade-replayed").is_none());
    assert_eq!(app.simulator.requests().len(), 2);
}

#[tokio::test]
async fn twenty_identical_calls_at_once_make_one_aws_request_and_all_get_the_answer() {
    let app = spawn_with(open_chats_with_quota(1000.0, 1000), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 300 }));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .create_persistent_contact_association(with_token("together"))
                    .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().expect("every call gets the answer"));
    }
    assert_eq!(app.simulator.requests().len(), 1);
    let first = answers[0].get_ref().clone();
    assert!(answers.iter().all(|a| *a.get_ref() == first));
    let coalesced = answers
        .iter()
        .filter(|a| a.metadata().get("x-facade-coalesced").is_some())
        .count();
    assert_eq!(coalesced, 19, "one call went to AWS, the others shared it");
    let metrics = app.scrape().await;
    assert_eq!(
        series_value(&metrics, "connect_facade_coalesced_calls_total"),
        Some(19.0)
    );
}

#[tokio::test]
async fn two_replicas_sharing_redis_replay_and_coalesce_each_others_calls() {
    let redis = RedisServer::start().await;
    let shared = |c: &mut connect_facade::config::ServeConfig| {
        c.quota.quota_store = QuotaStoreChoice::Redis(redis.url().parse().unwrap());
        c.quota.rate_limit = 100.0;
        c.quota.rate_burst = 100;
    };
    let first = spawn_with(open_chats_with_quota(1000.0, 1000), shared).await;
    let second = spawn_replica(&first.simulator, shared).await;

    // A call answered by one replica is replayed by the other.
    let answered = first.call(with_token("across")).await.unwrap();
    let replayed = second.call(with_token("across")).await.unwrap();
    assert_eq!(answered.get_ref(), replayed.get_ref());
    assert_eq!(
        replayed.metadata().get("x-facade-replayed").unwrap(),
        "true"
    );
    assert_eq!(first.simulator.requests().len(), 1);

    // Other fields under the same token are refused by the other replica too.
    let mut other = with_token("across");
    other.source_contact_id = "elsewhere".into();
    let refused = second.call(other).await.expect_err("token reused");
    assert_eq!(refused.code(), Code::InvalidArgument);

    // Identical calls in flight on both replicas at once: one AWS request.
    first
        .simulator
        .add_fault(fault(FaultEffect::Latency { millis: 400 }));
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut client = if i % 2 == 0 {
                first.client.clone()
            } else {
                second.client.clone()
            };
            tokio::spawn(async move {
                client
                    .create_persistent_contact_association(
                        CreatePersistentContactAssociationRequest {
                            initial_contact_id: "another-chat".into(),
                            ..with_token("both-at-once")
                        },
                    )
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every call gets the answer");
    }
    assert_eq!(first.simulator.requests().len(), 2);
    assert_eq!(
        redis.command(&["KEYS", "*:lock"]).await.as_deref(),
        Some("*0"),
        "no lock outlives its call"
    );
}

#[tokio::test]
async fn a_retry_after_the_callers_own_timeout_is_answered_by_the_call_it_abandoned() {
    let app = spawn().await;
    // A deadline a loaded machine still reaches AWS within: one already past when the call starts
    // is refused before AWS.
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 1_000 }));
    let (status, _) = app
        .call_with_deadline(with_token("impatient"), Duration::from_millis(300))
        .await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // The AWS call the first attempt paid a slot for finishes without its caller; the retry, while
    // it is still in flight, shares it, and after it, is replayed.
    let during = app.call(with_token("impatient")).await.expect("shared");
    assert_eq!(during.metadata().get("x-facade-coalesced").unwrap(), "true");
    let after = app.call(with_token("impatient")).await.expect("replayed");
    assert_eq!(after.metadata().get("x-facade-replayed").unwrap(), "true");
    assert_eq!(app.simulator.requests().len(), 1, "AWS saw one request");
}

#[tokio::test]
async fn a_lost_answer_retried_without_a_token_on_the_other_replica_is_replayed_and_a_conflict_is_already_associated()
 {
    use tonic_types::StatusExt;
    let redis = RedisServer::start().await;
    let shared = |c: &mut connect_facade::config::ServeConfig| {
        c.quota.quota_store = QuotaStoreChoice::Redis(redis.url().parse().unwrap());
    };
    let first = spawn_with(
        connect_facade::simulator::fixtures::Fixtures::demo(),
        shared,
    )
    .await;
    let second = spawn_replica(&first.simulator, shared).await;

    // No token: the facade makes one per call, so the retry carries another.
    let answered = first.call(entire_session()).await.unwrap();
    let retried = second
        .call(entire_session())
        .await
        .expect("the retry is told OK");
    assert_eq!(retried.metadata().get("x-facade-replayed").unwrap(), "true");
    assert_eq!(
        answered.get_ref().continued_from_contact_id,
        retried.get_ref().continued_from_contact_id
    );
    assert_ne!(
        answered.get_ref().client_token,
        retried.get_ref().client_token
    );
    // Another source for the same contact: a real conflict, with the association it conflicts with.
    let mut other = entire_session();
    other.rehydration_type = connect_facade::proto::RehydrationType::FromSegment as i32;
    other.source_contact_id = "C2".into();
    let refused = second.call(other).await.expect_err("already associated");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let details = refused.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "ALREADY_ASSOCIATED");
    assert_eq!(info.metadata["rehydrationType"], "ENTIRE_PAST_SESSION");
    assert_eq!(info.metadata["sourceContactId"], "C1");
    assert_eq!(
        info.metadata["continuedFromContactId"],
        answered.get_ref().continued_from_contact_id
    );
    assert_eq!(
        details
            .precondition_failure()
            .expect("a PreconditionFailure")
            .violations[0]
            .r#type,
        "ALREADY_ASSOCIATED"
    );
    assert_eq!(first.simulator.requests().len(), 1, "AWS saw one request");
}

#[tokio::test]
async fn a_deadline_passing_while_aws_holds_the_answer_loses_nothing_without_a_token() {
    let app = spawn().await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 1_500 }));
    let (status, _) = app
        .call_with_deadline(entire_session(), Duration::from_millis(500))
        .await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // The AWS request runs to its end without its caller; the retry shares it, then replays it.
    let during = app.call(entire_session()).await.expect("shared");
    assert_eq!(during.metadata().get("x-facade-coalesced").unwrap(), "true");
    let after = app.call(entire_session()).await.expect("replayed");
    assert_eq!(after.metadata().get("x-facade-replayed").unwrap(), "true");
    assert_eq!(app.simulator.requests().len(), 1, "AWS saw one request");
}

#[tokio::test]
async fn the_simulator_carries_out_a_request_whose_client_hung_up() {
    // Without replay the facade drops the call with its caller, as a plain client would; AWS (and
    // so the simulator) still carries the request out.
    let app = spawn_with(connect_facade::simulator::fixtures::Fixtures::demo(), |c| {
        c.quota.replay_window = Duration::ZERO;
    })
    .await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 800 }));
    let (status, _) = app
        .call_with_deadline(entire_session(), Duration::from_millis(300))
        .await;
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // A fixed sleep: the abandoned AWS call (800 ms) completes in the simulator.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (status, _, _) = app
        .call_expecting(entire_session(), Code::FailedPrecondition)
        .await;
    assert!(
        status.message().contains("already enabled"),
        "{}",
        status.message()
    );
}
