//! When the fleet forgets an association, a retry is still told the truth: Amazon Connect's
//! "Persistent chat is already enabled" is ALREADY_ASSOCIATED with `remembered: false`, never
//! INVALID_REQUEST; with `--reconcile-associations`, DescribeContact confirms the association the
//! retry asks for, which is answered OK and remembered again. AWS's side is the simulator's count of
//! the associations and DescribeContact calls it received.

use std::time::Duration;

use connect_facade::{
    config::{QuotaStoreChoice, ServeConfig},
    proto::{CreatePersistentContactAssociationRequest, RehydrationType},
    simulator::fixtures::Fixtures,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{RedisServer, TestApp, series_value, spawn_replica, spawn_with};

/// FROM_SEGMENT C2 for `chat`, without a token (the facade makes one per call, so a retry carries
/// another, as after a lost answer).
fn from_c2(chat: &str) -> CreatePersistentContactAssociationRequest {
    CreatePersistentContactAssociationRequest {
        initial_contact_id: chat.into(),
        rehydration_type: RehydrationType::FromSegment.into(),
        source_contact_id: "C2".into(),
        ..crate::support::entire_session()
    }
}

/// A facade that remembers nothing (replay off), so every retry reaches AWS.
async fn forgetful(reconcile: bool, fixtures: Fixtures) -> TestApp {
    spawn_with(fixtures, move |c: &mut ServeConfig| {
        c.quota.replay_window = Duration::ZERO;
        c.quota.reconcile_associations = reconcile;
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

fn forgotten(metrics: &str, outcome: &str) -> Option<f64> {
    series_value(
        metrics,
        &format!("connect_facade_forgotten_associations_total{{outcome=\"{outcome}\"}}"),
    )
}

#[tokio::test]
async fn aws_refusing_a_retry_as_already_enabled_is_already_associated_and_not_remembered() {
    let app = forgetful(false, Fixtures::demo()).await;
    let answered = app.call(from_c2("new-chat-2")).await.expect("associated");
    assert_eq!(answered.get_ref().continued_from_contact_id, "C2");
    let refused = app
        .call(from_c2("new-chat-2"))
        .await
        .expect_err("AWS refuses the second association");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let details = refused.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "ALREADY_ASSOCIATED");
    assert_eq!(info.metadata["remembered"], "false");
    assert_eq!(info.metadata["awsErrorCode"], "InvalidRequestException");
    assert!(
        info.metadata.contains_key("awsRequestId"),
        "{:?}",
        info.metadata
    );
    assert!(!info.metadata.contains_key("continuedFromContactId"));
    assert!(
        refused.message().contains("treat the association as done"),
        "{}",
        refused.message()
    );
    assert_eq!(
        details.precondition_failure().unwrap().violations[0].r#type,
        "ALREADY_ASSOCIATED"
    );
    assert_eq!(app.simulator.requests().len(), 2);
    assert!(
        app.simulator.describes().is_empty(),
        "not asked to reconcile"
    );
    assert_eq!(forgotten(&app.scrape().await, "unconfirmed"), Some(1.0));
}

#[tokio::test]
async fn reconciled_a_retry_asking_for_the_existing_association_is_ok_and_another_is_named() {
    let app = forgetful(true, Fixtures::demo()).await;
    let answered = app.call(from_c2("new-chat-2")).await.unwrap();
    let retried = app
        .call(from_c2("new-chat-2"))
        .await
        .expect("confirmed by DescribeContact");
    assert_eq!(
        retried.get_ref().continued_from_contact_id,
        answered.get_ref().continued_from_contact_id
    );
    assert_eq!(app.simulator.requests().len(), 2, "the retry's association");
    assert_eq!(
        app.simulator.describes().len(),
        1,
        "and one DescribeContact"
    );

    // ENTIRE_PAST_SESSION from C1 continues from C3, the session's latest: confirmed by the root.
    let mut session = crate::support::entire_session();
    session.initial_contact_id = "new-chat-3".into();
    app.call(session.clone()).await.unwrap();
    let again = app.call(session).await.expect("confirmed");
    assert_eq!(again.get_ref().continued_from_contact_id, "C3");

    // Another source for an associated contact: ALREADY_ASSOCIATED, naming the chat it continues.
    let mut other = from_c2("new-chat-2");
    other.source_contact_id = "C3".into();
    let refused = app.call(other).await.expect_err("another association");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "ALREADY_ASSOCIATED");
    assert_eq!(info.metadata["remembered"], "false");
    assert_eq!(info.metadata["continuedFromContactId"], "C2");
    let metrics = app.scrape().await;
    assert_eq!(forgotten(&metrics, "confirmed"), Some(2.0));
    assert_eq!(forgotten(&metrics, "differs"), Some(1.0));
}

#[tokio::test]
async fn without_describe_contact_permission_the_retry_is_already_associated_and_logged() {
    let world = r#"
instances:
  - id: 11111111-2222-3333-4444-555555555555
    account: "111122223333"
    region: us-east-1
    contacts:
      - { id: C1, channel: CHAT, state: ENDED }
      - { id: C2, channel: CHAT, state: ENDED, previous_contact_id: C1 }
      - { id: new-chat-1, channel: CHAT, state: ACTIVE }
accounts:
  - id: "111122223333"
    access_key_ids: [AKIDTESTFACADE]
    may_describe: false
"#;
    let app = forgetful(true, Fixtures::parse(world, "test").unwrap()).await;
    app.call(from_c2("new-chat-1")).await.unwrap();
    let refused = app
        .call(from_c2("new-chat-1"))
        .await
        .expect_err("unconfirmed");
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.metadata["remembered"].as_str()),
        ("ALREADY_ASSOCIATED", "false")
    );
    assert!(
        app.simulator.describes().is_empty(),
        "DescribeContact was denied"
    );
    assert_eq!(forgotten(&app.scrape().await, "unconfirmed"), Some(1.0));
}

#[tokio::test]
async fn a_retry_after_flushall_on_the_other_replica_is_reconciled_and_remembered_again() {
    let redis = RedisServer::start().await;
    let shared = |c: &mut ServeConfig| {
        c.quota.quota_store = QuotaStoreChoice::Redis(redis.url().parse().unwrap());
        c.quota.reconcile_associations = true;
    };
    let first = spawn_with(Fixtures::demo(), shared).await;
    let second = spawn_replica(&first.simulator, shared).await;
    first.call(from_c2("new-chat-3")).await.expect("associated");
    // The answer is written to Redis as the call ends; forget it once it is there.
    crate::support::eventually(
        "the answer kept in Redis",
        Duration::from_secs(5),
        || async {
            redis
                .command(&["KEYS", "*:replay"])
                .await
                .is_some_and(|answer| answer != "*0")
        },
    )
    .await;
    assert_eq!(redis.command(&["FLUSHALL"]).await.as_deref(), Some("+OK"));
    let retried = second
        .client
        .clone()
        .create_persistent_contact_association(from_c2("new-chat-3"))
        .await
        .expect("reconciled");
    assert_eq!(retried.get_ref().continued_from_contact_id, "C2");
    assert_eq!(first.simulator.requests().len(), 2);
    assert_eq!(first.simulator.describes().len(), 1);
    // Remembered again, in Redis: a third replica replays it without asking AWS.
    let third = spawn_replica(&first.simulator, shared).await;
    let replayed = third
        .client
        .clone()
        .create_persistent_contact_association(from_c2("new-chat-3"))
        .await
        .expect("replayed");
    assert_eq!(
        replayed.metadata().get("x-facade-replayed").unwrap(),
        "true"
    );
    assert_eq!(
        first.simulator.requests().len(),
        2,
        "AWS was not asked again"
    );
}

/// How Redis forgets between a call and its retry.
#[derive(Clone, Copy, Debug)]
enum Forget {
    /// `FLUSHALL`.
    Flushall,
    /// A restart of a Redis that keeps nothing on disk.
    Restart,
    /// The master killed; the sentinels promote its replica.
    Failover,
}

/// The Redis a scenario forgets with.
enum Store {
    Single(RedisServer),
    Sentinels(crate::support::RedisSentinels),
}

impl Store {
    async fn start(forget: Forget) -> Self {
        match forget {
            Forget::Failover => Self::Sentinels(crate::support::RedisSentinels::start().await),
            _ => Self::Single(RedisServer::start().await),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Single(redis) => redis.url(),
            Self::Sentinels(group) => group.url(),
        }
    }

    fn master(&self) -> &RedisServer {
        match self {
            Self::Single(redis) => redis,
            Self::Sentinels(group) => &group.master,
        }
    }

    async fn forget(&mut self, how: Forget) {
        match (self, how) {
            (Self::Single(redis), Forget::Flushall) => {
                assert_eq!(redis.command(&["FLUSHALL"]).await.as_deref(), Some("+OK"));
            }
            (Self::Single(redis), Forget::Restart) => redis.restart().await,
            (Self::Sentinels(group), Forget::Failover) => {
                let old = group.master.port;
                group.master.kill();
                let watched = &*group;
                crate::support::eventually(
                    "the sentinels promote the replica",
                    Duration::from_secs(30),
                    || async move { watched.master_port().await.is_some_and(|port| port != old) },
                )
                .await;
            }
            (_, how) => unreachable!("{how:?} with the wrong store"),
        }
    }
}

/// Active chats for the scenarios, and the documentation's past session.
const CHATS: &str = r#"
instances:
  - id: 11111111-2222-3333-4444-555555555555
    contacts:
      - { id: C1, channel: CHAT, state: ENDED }
      - { id: C2, channel: CHAT, state: ENDED, previous_contact_id: C1 }
      - { id: C3, channel: CHAT, state: ENDED, previous_contact_id: C2 }
      - { id: chaos-1, channel: CHAT, state: ACTIVE }
      - { id: chaos-2, channel: CHAT, state: ACTIVE }
      - { id: chaos-3, channel: CHAT, state: ACTIVE }
      - { id: chaos-4, channel: CHAT, state: ACTIVE }
      - { id: chaos-5, channel: CHAT, state: ACTIVE }
      - { id: chaos-6, channel: CHAT, state: ACTIVE }
"#;

#[tokio::test]
#[ignore = "slow tier: Redis restarts and a Sentinel failover between a call and its retry"]
async fn when_redis_forgets_between_a_call_and_its_retry_the_retry_is_told_the_truth() {
    use connect_facade::proto::contact_service_client::ContactServiceClient;
    let simulator = connect_facade::simulator::Simulator::start(
        crate::support::loopback(),
        Fixtures::parse(CHATS, "chaos").unwrap(),
    )
    .await
    .unwrap();
    let mut chat = 0;
    for reconcile in [false, true] {
        for how in [Forget::Flushall, Forget::Restart, Forget::Failover] {
            chat += 1;
            let scenario = format!("{how:?}, reconcile {reconcile}");
            let mut store = Store::start(how).await;
            let url = store.url();
            let mut extra = vec!["--rate-limit", "100", "--rate-burst", "100"];
            if reconcile {
                extra.push("--reconcile-associations");
            }
            let first =
                crate::support::serving(crate::support::replica_command(&simulator, &url, &extra))
                    .await;
            let second =
                crate::support::serving(crate::support::replica_command(&simulator, &url, &extra))
                    .await;
            let request = from_c2(&format!("chaos-{chat}"));

            // 1. Associated through the first replica, its answer kept in Redis.
            let mut one = ContactServiceClient::new(crate::support::channel(first.addr).await);
            one.create_persistent_contact_association(request.clone())
                .await
                .unwrap_or_else(|status| panic!("{scenario}: {status:?}"));
            let master = store.master();
            crate::support::eventually("the answer kept", Duration::from_secs(5), || async {
                master
                    .command(&["KEYS", "*:replay"])
                    .await
                    .is_some_and(|keys| keys != "*0")
            })
            .await;

            // 2. Redis forgets.
            store.forget(how).await;

            // 3. The retry, without a token, through the other replica.
            let asked_before = simulator.requests().len() + simulator.describes().len();
            let mut two = ContactServiceClient::new(crate::support::channel(second.addr).await);
            let answer = two.create_persistent_contact_association(request).await;
            let asked = simulator.requests().len() + simulator.describes().len() - asked_before;
            assert!(
                asked <= 2,
                "{scenario}: AWS asked {asked} times for the retry"
            );
            let told = match answer {
                Ok(answer) => {
                    assert_eq!(
                        answer.get_ref().continued_from_contact_id,
                        "C2",
                        "{scenario}"
                    );
                    match answer.metadata().get("x-facade-replayed") {
                        Some(_) => "OK, remembered",
                        None => "OK, reconciled",
                    }
                }
                Err(status) => {
                    assert!(!reconcile, "{scenario}: reconciled, yet {status:?}");
                    assert_eq!(
                        status.code(),
                        Code::FailedPrecondition,
                        "{scenario}: {status:?}"
                    );
                    let info = status.get_error_details().error_info().cloned().unwrap();
                    assert_eq!(info.reason, "ALREADY_ASSOCIATED", "{scenario}");
                    assert_eq!(info.metadata["remembered"], "false", "{scenario}");
                    "ALREADY_ASSOCIATED, not remembered"
                }
            };
            eprintln!("{scenario}: {told}; AWS asked {asked} times for the retry");
        }
    }
}
