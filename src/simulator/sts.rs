//! STS's AssumeRole, in the AWS query protocol: a form-encoded POST to `/`, answered in XML.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{
    SimulatorState,
    identity::AssumeRoleError,
    wire::{MAX_BODY_BYTES, check_signature},
};

pub async fn handle(
    state: &SimulatorState,
    request: Request<Incoming>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    match assume_role(state, request).await {
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

async fn assume_role(
    state: &SimulatorState,
    request: Request<Incoming>,
) -> Result<String, StsError> {
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
    if form.get("Action").map(String::as_str) != Some("AssumeRole") {
        return Err((
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!(
                "The action {} is not valid for this endpoint",
                form.get("Action").map_or("(none)", String::as_str)
            ),
        ));
    }
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
    tracing::debug!(key = %signer.access_key_id, role = ?form.get("RoleArn"), "simulated AssumeRole");
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
