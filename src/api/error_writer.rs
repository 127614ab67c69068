//! The one error writer: a refusal or a failed call goes back in the protocol the request came in
//! (connect-go's `error_writer.go`). gRPC and gRPC-Web get a trailers-only answer (the status in
//! the headers, in the caller's own content type, which gRPC-Web clients check); the Connect protocol
//! gets its JSON error: `code` in lower snake case, `message`, and `details` with the same
//! google.rpc messages the gRPC answer carries, plus a `debug` rendering of the ones a person reads,
//! under the spec's HTTP status for the code.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, Status, body::Body};
use tonic_types::{ErrorDetails, pb};

use super::protocol::{JSON, Protocol};
use crate::status::ErrorAnswer;

/// `answer` as `protocol` says it; `content_type` is the request's, echoed to gRPC-Web clients.
pub(crate) fn write(
    protocol: Protocol,
    content_type: Option<&HeaderValue>,
    answer: ErrorAnswer,
) -> Response<Body> {
    if !protocol.is_grpc() {
        return connect_error(http_status(answer.code), answer);
    }
    let mut response = Status::from(answer).into_http::<Body>();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    response
}

/// The HTTP status the Connect protocol gives each code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The Connect name of a code: lower snake case.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A Connect error response: the JSON error body, the answer's metadata as headers.
pub fn connect_error(http: StatusCode, answer: ErrorAnswer) -> Response<Body> {
    let mut error = json!({
        "code": code_name(answer.code),
        "message": answer.message,
    });
    let details = connect_details(&answer.details);
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    let mut response = Response::new(Body::new(Full::new(Bytes::from(error.to_string()))));
    *response.status_mut() = http;
    // HTTP's word for when to come back (RFC 9110), in whole seconds, on the answers that invite it.
    let retry_after = matches!(
        http,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
    .then(|| {
        answer
            .details
            .retry_info()
            .and_then(|info| info.retry_delay)
    })
    .flatten();
    *response.headers_mut() = answer.metadata.into_headers();
    if let Some(delay) = retry_after {
        let seconds = delay.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// The google.rpc details as the Connect protocol carries them: the type's full name, the message's
/// bytes in unpadded base64, and (for a person reading curl's output) a `debug` rendering; in the
/// order the gRPC answer carries them.
fn connect_details(details: &ErrorDetails) -> Vec<Value> {
    let detail = |type_url: &str, value: Vec<u8>, debug: Option<Value>| {
        let name = type_url.rsplit_once('/').map_or(type_url, |(_, name)| name);
        let mut detail = json!({
            "type": name,
            "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(value),
        });
        if let Some(debug) = debug {
            detail["debug"] = debug;
        }
        detail
    };
    let mut out = Vec::new();
    if let Some(info) = details.retry_info() {
        let debug = info
            .retry_delay
            .map(|delay| json!({"retryDelay": format!("{:.3}s", delay.as_secs_f64())}));
        let value = pb::RetryInfo::from(info.clone()).encode_to_vec();
        out.push(detail(tonic_types::RetryInfo::TYPE_URL, value, debug));
    }
    if let Some(quota) = details.quota_failure() {
        let debug = Some(json!({"violations": quota.violations.iter()
            .map(|v| json!({"subject": v.subject, "description": v.description}))
            .collect::<Vec<_>>()}));
        let value = pb::QuotaFailure::from(quota.clone()).encode_to_vec();
        out.push(detail(tonic_types::QuotaFailure::TYPE_URL, value, debug));
    }
    if let Some(info) = details.error_info() {
        let debug =
            Some(json!({"reason": info.reason, "domain": info.domain, "metadata": info.metadata}));
        let value = pb::ErrorInfo::from(info.clone()).encode_to_vec();
        out.push(detail(tonic_types::ErrorInfo::TYPE_URL, value, debug));
    }
    if let Some(precondition) = details.precondition_failure() {
        let value = pb::PreconditionFailure::from(precondition.clone()).encode_to_vec();
        out.push(detail(
            tonic_types::PreconditionFailure::TYPE_URL,
            value,
            None,
        ));
    }
    if let Some(bad) = details.bad_request() {
        let debug = Some(json!({"fieldViolations": bad.field_violations.iter()
            .map(|v| json!({"field": v.field, "description": v.description}))
            .collect::<Vec<_>>()}));
        let value = pb::BadRequest::from(bad.clone()).encode_to_vec();
        out.push(detail(tonic_types::BadRequest::TYPE_URL, value, debug));
    }
    if let Some(info) = details.request_info() {
        let debug = Some(json!({"requestId": info.request_id}));
        let value = pb::RequestInfo::from(info.clone()).encode_to_vec();
        out.push(detail(tonic_types::RequestInfo::TYPE_URL, value, debug));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        error::{CallError, ExistingAssociation, RatePolicy},
        status::FailedCall,
        upstream::{UpstreamError, UpstreamErrorKind},
    };

    fn answer(error: CallError) -> ErrorAnswer {
        FailedCall {
            error,
            instance_id: "inst".into(),
            client_token: Some("tok".into()),
            metadata: Default::default(),
        }
        .into()
    }

    /// The Connect error carries, in the same order, the very google.rpc messages the gRPC
    /// status encodes, though it is written from the value rather than from the encoded status.
    #[tokio::test]
    async fn connect_details_are_the_grpc_statuss_details() {
        use http_body_util::BodyExt;
        let failures = [
            CallError::RateLimited {
                subject: "account:x".into(),
                description: "full".into(),
                retry_after: Some(std::time::Duration::from_millis(1500)),
                policy: Some(RatePolicy {
                    name: "account",
                    rate: 2.0,
                    burst: 4,
                }),
            },
            CallError::Upstream(UpstreamError {
                kind: UpstreamErrorKind::ResourceNotFound,
                aws_code: Some("ResourceNotFoundException".into()),
                message: "no such instance".into(),
                request_id: Some("req-1".into()),
            }),
            CallError::AlreadyAssociated {
                initial_contact_id: "a".into(),
                existing: ExistingAssociation::Remembered {
                    rehydration_type: "FROM_SEGMENT",
                    source_contact_id: "b".into(),
                    continued_from_contact_id: "c".into(),
                },
            },
            CallError::AlreadyAssociated {
                initial_contact_id: "a".into(),
                existing: ExistingAssociation::Forgotten {
                    continued_from_contact_id: None,
                    aws_request_id: Some("req-2".into()),
                },
            },
        ];
        for failure in failures {
            let grpc = Status::from(answer(failure.clone()));
            let encoded = tonic_types::pb::Status::decode(grpc.details()).unwrap();
            let response = connect_error(StatusCode::BAD_REQUEST, answer(failure));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: Value = serde_json::from_slice(&body).unwrap();
            let connect: Vec<(String, Vec<u8>)> = json["details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|detail| {
                    let value = base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(detail["value"].as_str().unwrap())
                        .unwrap();
                    (detail["type"].as_str().unwrap().to_owned(), value)
                })
                .collect();
            let grpc: Vec<(String, Vec<u8>)> = encoded
                .details
                .iter()
                .map(|any| {
                    let name = any.type_url.rsplit_once('/').unwrap().1.to_owned();
                    (name, any.value.to_vec())
                })
                .collect();
            let names = |details: &[(String, Vec<u8>)]| {
                details
                    .iter()
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&connect), names(&grpc));
            for ((name, connect), (_, grpc)) in connect.iter().zip(&grpc) {
                // ErrorInfo's metadata is a map, encoded in no set order: compare it decoded.
                if name == "google.rpc.ErrorInfo" {
                    assert_eq!(
                        pb::ErrorInfo::decode(&connect[..]).unwrap(),
                        pb::ErrorInfo::decode(&grpc[..]).unwrap()
                    );
                } else {
                    assert_eq!(connect, grpc, "{name}");
                }
            }
            assert_eq!(json["message"], grpc_message(&encoded));
        }
    }

    fn grpc_message(status: &tonic_types::pb::Status) -> Value {
        Value::String(status.message.clone())
    }

    #[test]
    fn every_code_has_the_specs_name_and_status() {
        assert_eq!(code_name(Code::Cancelled), "canceled");
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }
}
