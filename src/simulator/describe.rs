//! DescribeContact (`GET /contacts/{InstanceId}/{ContactId}`, restJson1), as far as the facade's
//! reconciliation reads it: the contact's `Id`, `Arn`, `InitialContactId`, `PreviousContactId`,
//! `RelatedContactId` (for a rehydrated chat, the contact its association continues from) and
//! `ContactAssociationId` (the root of its contact tree), answered `{"Contact": {…}}`. Signed and
//! authorized as the association is (IAM's `connect:DescribeContact`); not subject to the
//! association's quota or faults (AWS limits each API on its own).

use super::{
    SimulatorState,
    fixtures::Channel,
    identity::Action,
    wire::{AwsError, authorized, json_error, json_response, labels},
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

const ROUTE_PREFIX: &str = "/contacts/";

/// Whether `request` is a DescribeContact call.
pub(super) fn is_describe<B>(request: &Request<B>) -> bool {
    request.uri().path().starts_with(ROUTE_PREFIX)
}

/// Answers one DescribeContact call.
pub(super) fn handle<B>(
    state: &SimulatorState,
    request: &Request<B>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    match describe(state, request) {
        Ok(contact) => json_response(StatusCode::OK, request_id, None, contact),
        Err(error) => json_error(&error, request_id),
    }
}

fn describe<B>(
    state: &SimulatorState,
    request: &Request<B>,
) -> Result<serde_json::Value, AwsError> {
    let path = request.uri().path();
    let unknown = || {
        AwsError::new(
            "UnknownOperationException",
            format!("Unknown operation {path}"),
        )
    };
    if request.method() != Method::GET {
        return Err(unknown());
    }
    let (instance_id, contact_id) = path
        .strip_prefix(ROUTE_PREFIX)
        .and_then(labels)
        .unwrap_or_else(|| Err(unknown()))?;
    let signer = authorized(
        state,
        request.headers(),
        &instance_id,
        Action::DescribeContact,
    )?;
    state.record_describe(&instance_id, &contact_id);
    let links = state.contacts().describe(&instance_id, &contact_id)?;
    let channel = match links.channel {
        Channel::Chat => "CHAT",
        Channel::Voice => "VOICE",
        Channel::Task => "TASK",
        Channel::Email => "EMAIL",
    };
    Ok(serde_json::json!({
        "Contact": {
            "Arn": format!("arn:aws:connect:{}:000000000000:instance/{instance_id}/contact/{}", signer.region, links.id),
            "Id": links.id,
            "InitialContactId": links.initial_contact_id,
            "PreviousContactId": links.previous_contact_id,
            "RelatedContactId": links.related_contact_id,
            "ContactAssociationId": links.contact_association_id,
            "Channel": channel,
            "InitiationMethod": "API",
        }
    }))
}
