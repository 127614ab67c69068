//! Bad input: INVALID_ARGUMENT naming every bad field by its proto name, and AWS never called.

use tonic::Code;

use crate::support::{TestApp, entire_session, spawn};
use connect_facade::proto::CreatePersistentContactAssociationRequest;

/// Makes one field of a valid request break its limit.
type Spoiler = fn(&mut CreatePersistentContactAssociationRequest);

async fn rejected_fields(
    app: &TestApp,
    request: CreatePersistentContactAssociationRequest,
) -> Vec<String> {
    let (_, info, details) = app.call_expecting(request, Code::InvalidArgument).await;
    assert_eq!(info.reason, "INVALID_FIELDS");
    assert_eq!(info.domain, connect_facade::status::FACADE_DOMAIN);
    details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

#[tokio::test]
async fn an_empty_request_names_every_required_field_and_aws_is_not_called() {
    let app = spawn().await;
    let fields = rejected_fields(&app, Default::default()).await;
    assert_eq!(
        fields,
        [
            "instance_id",
            "initial_contact_id",
            "source_contact_id",
            "rehydration_type"
        ]
    );
    assert!(app.simulator.requests().is_empty());
}

#[tokio::test]
async fn each_length_limit_is_enforced_on_its_own() {
    let app = spawn().await;
    let cases: [(&str, Spoiler); 4] = [
        ("instance_id", |r| r.instance_id = "i".repeat(101)),
        ("initial_contact_id", |r| {
            r.initial_contact_id = "c".repeat(257)
        }),
        ("source_contact_id", |r| {
            r.source_contact_id = "ç".repeat(257)
        }),
        ("client_token", |r| r.client_token = "t".repeat(501)),
    ];
    for (field, spoil) in cases {
        let mut request = entire_session();
        spoil(&mut request);
        assert_eq!(rejected_fields(&app, request).await, [field]);
    }
    assert!(app.simulator.requests().is_empty());
}

#[tokio::test]
async fn an_unspecified_or_unknown_rehydration_type_is_rejected() {
    let app = spawn().await;
    for value in [0, 3, -1] {
        let mut request = entire_session();
        request.rehydration_type = value;
        assert_eq!(rejected_fields(&app, request).await, ["rehydration_type"]);
    }
    assert!(app.simulator.requests().is_empty());
}

#[tokio::test]
async fn a_rejected_request_reports_the_callers_token_and_instance() {
    let app = spawn().await;
    let mut request = entire_session();
    request.source_contact_id.clear();
    request.client_token = "mine".into();
    let (status, info, _) = app.call_expecting(request, Code::InvalidArgument).await;
    assert!(
        status.message().contains("source_contact_id"),
        "{}",
        status.message()
    );
    assert_eq!(info.metadata["clientToken"], "mine");
    assert_eq!(info.metadata["instanceId"], crate::support::INSTANCE);
}
