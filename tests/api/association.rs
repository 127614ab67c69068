//! Successful calls: the documented semantics, tokens, and ids that need escaping.

use connect_facade::{
    proto::RehydrationType,
    simulator::fixtures::{Channel, ContactFixture, ContactState, Fixtures, InstanceFixture},
};

use std::time::Duration;

use crate::support::{entire_session, spawn, spawn_with};

#[tokio::test]
async fn entire_past_session_continues_from_the_most_recent_contact() {
    let app = spawn().await;
    let response = app.call(entire_session()).await.expect("call succeeds");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
}

#[tokio::test]
async fn from_segment_continues_from_that_segment() {
    let app = spawn().await;
    let mut request = entire_session();
    request.rehydration_type = RehydrationType::FromSegment.into();
    request.source_contact_id = "C2".into();
    let response = app.call(request).await.expect("call succeeds");
    assert_eq!(response.get_ref().continued_from_contact_id, "C2");
}

#[tokio::test]
async fn a_missing_client_token_is_generated_sent_to_aws_and_returned() {
    let app = spawn().await;
    let response = app.call(entire_session()).await.expect("call succeeds");
    let token = &response.get_ref().client_token;
    assert!(uuid::Uuid::parse_str(token).is_ok(), "not a UUID: {token}");
    let sent = app.simulator.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].client_token.as_deref(), Some(token.as_str()));
}

#[tokio::test]
async fn the_callers_token_is_sent_and_echoed_and_a_repeat_replays_the_answer() {
    let app = spawn().await;
    let mut request = entire_session();
    request.client_token = "caller-chosen-token".into();
    let first = app
        .call(request.clone())
        .await
        .expect("first call succeeds");
    let again = app.call(request).await.expect("the repeat is idempotent");
    assert_eq!(first.get_ref(), again.get_ref());
    assert_eq!(first.get_ref().client_token, "caller-chosen-token");
    assert!(first.metadata().get("x-facade-replayed").is_none());
    assert_eq!(again.metadata().get("x-facade-replayed").unwrap(), "true");
    assert_eq!(again.metadata().get("x-facade-attempts").unwrap(), "0");
    assert_eq!(
        again.metadata().get("x-amzn-requestid"),
        first.metadata().get("x-amzn-requestid"),
        "the replay carries the original AWS request id"
    );
    // The repeat was answered from the replay cache: AWS saw the token once.
    assert_eq!(
        app.sent_tokens(),
        vec![Some("caller-chosen-token".to_owned())]
    );
}

#[tokio::test]
async fn without_replay_a_repeat_reaches_aws_with_the_same_token() {
    let app = spawn_with(Fixtures::demo(), |c| c.quota.replay_window = Duration::ZERO).await;
    let mut request = entire_session();
    request.client_token = "caller-chosen-token".into();
    let first = app
        .call(request.clone())
        .await
        .expect("first call succeeds");
    let again = app
        .call(request)
        .await
        .expect("AWS answers the repeat idempotently");
    assert_eq!(first.get_ref(), again.get_ref());
    assert!(again.metadata().get("x-facade-replayed").is_none());
    assert_eq!(
        app.sent_tokens(),
        vec![Some("caller-chosen-token".to_owned()); 2]
    );
}

#[tokio::test]
async fn success_carries_the_aws_request_id() {
    let app = spawn().await;
    let response = app.call(entire_session()).await.expect("call succeeds");
    let request_id = response
        .metadata()
        .get("x-amzn-requestid")
        .expect("request id header")
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id}");
}

#[tokio::test]
async fn ids_with_slashes_spaces_and_non_ascii_reach_aws_intact() {
    let odd_ids = [
        "chat/with/slashes",
        "chat with spaces?&=",
        "chät-ünïcödé-会話",
    ];
    let contact = |id: &str, state| ContactFixture {
        id: id.into(),
        channel: Channel::Chat,
        state,
        previous_contact_id: None,
    };
    let mut contacts = vec![contact("past/chat %2F", ContactState::Ended)];
    contacts.extend(odd_ids.iter().map(|id| contact(id, ContactState::Active)));
    let instance = "instance/with space";
    let fixtures = Fixtures {
        instances: vec![InstanceFixture {
            id: instance.into(),
            contacts,
            open_chats: false,
            account: None,
            region: None,
        }],
        ..Fixtures::default()
    };
    let app = spawn_with(fixtures, |_| {}).await;
    for id in odd_ids {
        let mut request = entire_session();
        request.instance_id = instance.into();
        request.initial_contact_id = id.into();
        request.rehydration_type = RehydrationType::FromSegment.into();
        request.source_contact_id = "past/chat %2F".into();
        let response = app.call(request).await.expect("call succeeds");
        assert_eq!(
            response.get_ref().continued_from_contact_id,
            "past/chat %2F"
        );
    }
    let seen: Vec<_> = app
        .simulator
        .requests()
        .into_iter()
        .map(|r| (r.instance_id, r.initial_contact_id))
        .collect();
    let expected: Vec<_> = odd_ids
        .iter()
        .map(|id| (instance.to_owned(), id.to_string()))
        .collect();
    assert_eq!(seen, expected);
}
