//! STS's AssumeRole and GetCallerIdentity, in the AWS query protocol: a form-encoded POST to `/`,
//! answered in XML.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{
    SimulatorState,
    identity::AssumeRoleError,
    wire::{MAX_BODY_BYTES, check_signature, refusal},
};

pub async fn handle(
    state: &SimulatorState,
    request: Request<Incoming>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    match answer(state, request).await {
        Ok(body) => xml_response(StatusCode::OK, body),
        Err((status, code, message)) => xml_response(
            status,
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
                 <Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error>\
                 <RequestId>{request_id}</RequestId></ErrorResponse>",
                escape(&message)
            ),
        ),
    }
}

type StsError = (StatusCode, &'static str, String);

async fn answer(state: &SimulatorState, request: Request<Incoming>) -> Result<String, StsError> {
    let signer = check_signature(state, request.headers(), "sts")
        .map_err(|error| (error.status, static_code(&error.code), error.message))?;
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "MalformedInput",
                "Could not read request body".to_owned(),
            )
        })?
        .to_bytes();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    match form.get("Action").map(String::as_str) {
        Some("AssumeRole") => assume_role(state, &signer.access_key_id, &form),
        Some("GetCallerIdentity") => caller_identity(state, &signer.access_key_id),
        other => Err((
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!(
                "The action {} is not valid for this endpoint",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

fn caller_identity(state: &SimulatorState, key: &str) -> Result<String, StsError> {
    let principal = state.identities.caller_identity(key).map_err(|refused| {
        let error = refusal(refused, "", super::identity::Action::Associate);
        (error.status, static_code(&error.code), error.message)
    })?;
    Ok(format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
         </GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        escape(&principal.arn),
        escape(&principal.user_id),
        principal.account,
        uuid::Uuid::new_v4(),
    ))
}

fn assume_role(
    state: &SimulatorState,
    access_key_id: &str,
    form: &HashMap<String, String>,
) -> Result<String, StsError> {
    let issued = state
        .identities
        .assume_role(
            form.get("RoleArn").map(String::as_str),
            form.get("RoleSessionName").map(String::as_str),
            form.get("ExternalId").map(String::as_str),
        )
        .map_err(|error| match error {
            AssumeRoleError::AccessDenied(message) => {
                (StatusCode::FORBIDDEN, "AccessDenied", message)
            }
            AssumeRoleError::Invalid(message) => {
                (StatusCode::BAD_REQUEST, "ValidationError", message)
            }
        })?;
    tracing::debug!(key = %access_key_id, role = ?form.get("RoleArn"), "simulated AssumeRole");
    Ok(format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleResult><Credentials>\
         <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{}</Expiration>\
         </Credentials><AssumedRoleUser><AssumedRoleId>AROASIMULATED:{}</AssumedRoleId>\
         <Arn>{}</Arn></AssumedRoleUser></AssumeRoleResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></AssumeRoleResponse>",
        issued.access_key_id,
        issued.secret_access_key,
        issued.session_token,
        humantime::format_rfc3339_seconds(issued.expiration),
        escape(form.get("RoleSessionName").map_or("", String::as_str)),
        escape(&issued.assumed_role_arn),
        uuid::Uuid::new_v4(),
    ))
}

/// STS's error codes for the signature failures Connect answers with its own.
fn static_code(code: &str) -> &'static str {
    match code {
        "ExpiredTokenException" => "ExpiredToken",
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        _ => "IncompleteSignature",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
