//! Amazon Connect's restJson1 wire format for CreatePersistentContactAssociation, as AWS speaks it:
//! `POST /contact/persistent-contact-association/{InstanceId}/{InitialContactId}` with a JSON body,
//! answered with `{"ContinuedFromContactId": …}` or an error whose code travels in `X-Amzn-ErrorType`
//! and whose message is the body's `Message`; every answer has an `x-amzn-RequestId`.
//!
//! Requests must carry a SigV4 `Authorization` header, checked for shape and access key (the signature
//! itself is not recomputed: the simulator holds no secrets).
//!
//! Written on hyper directly rather than a web framework: a fault must be able to close the connection
//! without answering, which a framework's infallible handlers cannot do.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::{
    RecordedRequest, SimulatorState,
    contacts::{AssociationError, RehydrationType},
    faults::{FaultEffect, Verdict},
    identity::{Action, Refused},
};

/// The API model's limits (botocore's `connect` 2017-08-08 shapes), in Unicode scalar values; the
/// simulator's own, not the facade's (see [`RehydrationType`]).
mod limits {
    pub const INSTANCE_ID_MAX: usize = 100;
    pub const CONTACT_ID_MAX: usize = 256;
    pub const CLIENT_TOKEN_MAX: usize = 500;
}

const ROUTE_PREFIX: &str = "/contact/persistent-contact-association/";
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The answer to one HTTP request, or an instruction to close the connection without one.
pub type WireResult = Result<Response<Full<Bytes>>, ConnectionDropped>;

/// Returned to hyper to make it close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct ConnectionDropped;

/// An AWS error answer.
pub(super) struct AwsError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub(super) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: modelled_status(code),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The HTTP status AWS answers with each code.
fn modelled_status(code: &str) -> StatusCode {
    match code {
        "ResourceNotFoundException" | "UnknownOperationException" => StatusCode::NOT_FOUND,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => StatusCode::FORBIDDEN,
        "ThrottlingException" => StatusCode::TOO_MANY_REQUESTS,
        "InternalServiceException" => StatusCode::INTERNAL_SERVER_ERROR,
        "ServiceUnavailableException" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestBody {
    rehydration_type: Option<String>,
    source_contact_id: Option<String>,
    client_token: Option<String>,
}

/// Handles one HTTP request.
pub async fn handle(state: Arc<SimulatorState>, request: Request<Incoming>) -> WireResult {
    let request_id = uuid::Uuid::new_v4().to_string();
    if request.uri().path() == "/" && request.method() == Method::POST {
        return Ok(super::sts::handle(&state, request, &request_id).await);
    }
    if super::describe::is_describe(&request) {
        return Ok(super::describe::handle(&state, &request, &request_id));
    }
    // As AWS does, a request is carried out even if its client hangs up before the answer (its
    // latency included): in a task of its own, not dropped with the connection.
    let operation = tokio::spawn(async move { operate(&state, request).await });
    let outcome = operation.await.unwrap_or_else(|_| {
        Err(AwsError::new("InternalServiceException", "simulator task failed").into())
    });
    match outcome {
        Ok(Outcome::Answer(continued_from)) => Ok(json_response(
            StatusCode::OK,
            &request_id,
            None,
            serde_json::json!({ "ContinuedFromContactId": continued_from }),
        )),
        Ok(Outcome::Garbage) => Ok(raw_response(
            StatusCode::OK,
            &request_id,
            None,
            Bytes::from_static(b"<html>this is not json"),
        )),
        Err(Failure::Drop) => Err(ConnectionDropped),
        Err(Failure::Aws(error)) => Ok(json_error(&error, &request_id)),
    }
}

enum Outcome {
    Answer(String),
    Garbage,
}

enum Failure {
    Aws(AwsError),
    Drop,
}

impl From<AwsError> for Failure {
    fn from(error: AwsError) -> Self {
        Failure::Aws(error)
    }
}

async fn operate(state: &SimulatorState, request: Request<Incoming>) -> Result<Outcome, Failure> {
    let (instance_id, initial_contact_id) = route(request.method(), request.uri().path())?;
    authorized(state, request.headers(), &instance_id, Action::Associate)?;
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| AwsError::new("SerializationException", "Could not read request body"))?
        .to_bytes();

    let parsed: Result<RequestBody, _> = serde_json::from_slice(&body);
    let client_token = parsed
        .as_ref()
        .ok()
        .and_then(|b| b.client_token.clone())
        .filter(|t| !t.is_empty());
    let verdict = state.admit(RecordedRequest {
        instance_id: instance_id.clone(),
        initial_contact_id: initial_contact_id.clone(),
        client_token: client_token.clone(),
        at: std::time::Instant::now(),
    });
    let Verdict {
        latency_millis,
        outcome,
    } = verdict.ok_or_else(|| AwsError::new("ThrottlingException", "Rate exceeded"))?;
    if latency_millis > 0 {
        tokio::time::sleep(Duration::from_millis(latency_millis)).await;
    }
    let drop_after_apply = match outcome {
        Some(FaultEffect::Error {
            code,
            status,
            message,
        }) => {
            let message = message.unwrap_or_else(|| match code.as_str() {
                "ThrottlingException" => "Rate exceeded".to_owned(),
                _ => format!("Simulated {code}"),
            });
            let mut error = AwsError::new(&code, message);
            if let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
                error.status = status;
            }
            return Err(error.into());
        }
        Some(FaultEffect::Unparseable) => return Ok(Outcome::Garbage),
        Some(FaultEffect::DropConnection) => return Err(Failure::Drop),
        Some(FaultEffect::DropAfterApply) => true,
        Some(FaultEffect::Latency { .. }) | None => false,
    };

    let body = parsed.map_err(|err| {
        AwsError::new(
            "SerializationException",
            format!("Request body is not valid JSON: {err}"),
        )
    })?;
    let (rehydration_type, source_contact_id) = validate(&instance_id, &initial_contact_id, body)?;
    let answer = state
        .contacts()
        .associate(
            &instance_id,
            &initial_contact_id,
            rehydration_type,
            &source_contact_id,
            client_token.as_deref(),
        )
        .map_err(AwsError::from)?;
    if drop_after_apply {
        return Err(Failure::Drop);
    }
    Ok(Outcome::Answer(answer))
}

/// The operation's two path labels, for a POST under its route.
fn route(method: &Method, path: &str) -> Result<(String, String), AwsError> {
    let unknown = || {
        AwsError::new(
            "UnknownOperationException",
            format!("Unknown operation {path}"),
        )
    };
    if method != Method::POST {
        return Err(unknown());
    }
    path.strip_prefix(ROUTE_PREFIX)
        .and_then(labels)
        .unwrap_or_else(|| Err(unknown()))
}

/// The two path labels of `rest` (`{A}/{B}`, each percent-encoded by the SDK, `/` included);
/// `None` when it has not exactly two.
pub(super) fn labels(rest: &str) -> Option<Result<(String, String), AwsError>> {
    let (first, second) = rest.split_once('/')?;
    if second.contains('/') {
        return None;
    }
    let decode = |label: &str| {
        percent_decode_str(label)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| AwsError::new("SerializationException", "Path is not UTF-8"))
    };
    Some(decode(first).and_then(|first| Ok((first, decode(second)?))))
}

impl From<AssociationError> for AwsError {
    fn from(error: AssociationError) -> Self {
        match error {
            AssociationError::NotFound(message) => Self::new("ResourceNotFoundException", message),
            AssociationError::InvalidRequest(message) => {
                Self::new("InvalidRequestException", message)
            }
        }
    }
}

/// The Connect call's signer, when its signature's shape and key pass and IAM allows it `action` on
/// `instance_id`; otherwise AWS's answer to it.
pub(super) fn authorized(
    state: &SimulatorState,
    headers: &http::HeaderMap,
    instance_id: &str,
    action: Action,
) -> Result<Signer, AwsError> {
    let signer = check_signature(state, headers, "connect")?;
    state
        .identities
        .authorize(&signer.access_key_id, &signer.region, instance_id, action)
        .map_err(|refused| refusal(refused, instance_id, action))?;
    Ok(signer)
}

/// What a request's SigV4 `Authorization` header says about its signer.
pub(super) struct Signer {
    pub access_key_id: String,
    pub region: String,
}

/// Checks the shape of `Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=…, Signature=…` for `service`, and that the key is one AWS knows, answering as AWS
/// does when it is wrong.
pub(super) fn check_signature(
    state: &SimulatorState,
    headers: &http::HeaderMap,
    service: &str,
) -> Result<Signer, AwsError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AwsError::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let incomplete = || {
        AwsError::new(
            "IncompleteSignatureException",
            "Authorization header requires Credential, SignedHeaders and Signature",
        )
    };
    let value = value.to_str().map_err(|_| incomplete())?;
    let fields = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(incomplete)?;
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let (Some(credential), Some(_), Some(_)) = (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    ) else {
        return Err(incomplete());
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[3] != service || scope[4] != "aws4_request" {
        return Err(incomplete());
    }
    state
        .identities
        .recognizes(scope[0])
        .map_err(|refused| refusal(refused, "", Action::Associate))?;
    Ok(Signer {
        access_key_id: scope[0].to_owned(),
        region: scope[2].to_owned(),
    })
}

/// AWS's answer to a signer it refuses `action`.
pub(super) fn refusal(refused: Refused, instance_id: &str, action: Action) -> AwsError {
    let action = action.iam_name();
    match refused {
        Refused::Unrecognized => AwsError::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        Refused::Expired => AwsError::new(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        Refused::OtherAccount { principal } => AwsError::new(
            "AccessDeniedException",
            format!(
                "User: {principal} is not authorized to perform: {action} on resource: \
                 instance/{instance_id}"
            ),
        ),
        Refused::NoPermission { principal, account } => AwsError::new(
            "AccessDeniedException",
            format!(
                "User: {principal} is not authorized to perform: {action} on resource: \
                 arn:aws:connect:*:{account}:instance/{instance_id} \
                 because no identity-based policy allows the action"
            ),
        ),
        Refused::OtherRegion => AwsError::new(
            "ResourceNotFoundException",
            format!("Instance {instance_id} not found in this region"),
        ),
    }
}

/// The API model's checks, answered as InvalidParameterException naming the parameter.
fn validate(
    instance_id: &str,
    initial_contact_id: &str,
    body: RequestBody,
) -> Result<(RehydrationType, String), AwsError> {
    let invalid = |message: String| AwsError::new("InvalidParameterException", message);
    let check = |name: &str, value: &str, max: usize| {
        let length = value.chars().count();
        if length == 0 || length > max {
            Err(invalid(format!(
                "{name} must be between 1 and {max} characters, got {length}"
            )))
        } else {
            Ok(())
        }
    };
    check("InstanceId", instance_id, limits::INSTANCE_ID_MAX)?;
    check(
        "InitialContactId",
        initial_contact_id,
        limits::CONTACT_ID_MAX,
    )?;
    let source = body
        .source_contact_id
        .ok_or_else(|| invalid("SourceContactId is required".to_owned()))?;
    check("SourceContactId", &source, limits::CONTACT_ID_MAX)?;
    if body
        .client_token
        .as_ref()
        .is_some_and(|t| t.chars().count() > limits::CLIENT_TOKEN_MAX)
    {
        return Err(invalid(format!(
            "ClientToken must be at most {} characters",
            limits::CLIENT_TOKEN_MAX
        )));
    }
    let rehydration_type = match body.rehydration_type.as_deref() {
        Some("ENTIRE_PAST_SESSION") => RehydrationType::EntirePastSession,
        Some("FROM_SEGMENT") => RehydrationType::FromSegment,
        Some(other) => {
            return Err(invalid(format!(
                "RehydrationType must be ENTIRE_PAST_SESSION or FROM_SEGMENT, got {other}"
            )));
        }
        None => return Err(invalid("RehydrationType is required".to_owned())),
    };
    Ok((rehydration_type, source))
}

/// An AWS error answer: its code in `X-Amzn-ErrorType`, its message in the body.
pub(super) fn json_error(error: &AwsError, request_id: &str) -> Response<Full<Bytes>> {
    json_response(
        error.status,
        request_id,
        Some(&error.code),
        serde_json::json!({ "Message": error.message }),
    )
}

pub(super) fn json_response(
    status: StatusCode,
    request_id: &str,
    error_code: Option<&str>,
    body: serde_json::Value,
) -> Response<Full<Bytes>> {
    raw_response(
        status,
        request_id,
        error_code,
        Bytes::from(body.to_string()),
    )
}

fn raw_response(
    status: StatusCode,
    request_id: &str,
    error_code: Option<&str>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-amzn-RequestId", request_id);
    if let Some(code) = error_code {
        builder = builder.header("X-Amzn-ErrorType", code);
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
