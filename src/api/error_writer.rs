//! The one error writer: a refusal or a failed call goes back in the protocol the request came in
//! (connect-go's `error_writer.go`). gRPC and gRPC-Web get a trailers-only answer (the status in
//! the headers, in the caller's own content type, which gRPC-Web clients check); the Connect protocol
//! gets its JSON error: `code` in lower snake case, `message`, and `details` with the same
//! google.rpc messages the gRPC answer carries, plus a `debug` rendering of the ones a person reads,
//! under the spec's HTTP status for the code.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use prost::Message;
use tonic::{Code, Status, body::Body};
use tonic_types::StatusExt;

use super::protocol::{JSON, Protocol};

/// `status` as `protocol` says it; `content_type` is the request's, echoed to gRPC-Web clients.
pub(crate) fn write(
    protocol: Protocol,
    content_type: Option<&HeaderValue>,
    status: &Status,
) -> Response<Body> {
    if !protocol.is_grpc() {
        return connect_error(http_status(status.code()), status);
    }
    let mut response = status.clone().into_http::<Body>();
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

/// A Connect error response: the JSON error body, the status's metadata as headers.
pub fn connect_error(http: StatusCode, status: &Status) -> Response<Body> {
    let mut error = serde_json::json!({
        "code": code_name(status.code()),
        "message": status.message(),
    });
    let details = error_details(status);
    if !details.is_empty() {
        error["details"] = serde_json::Value::Array(details);
    }
    let mut response = Response::new(Body::new(Full::new(Bytes::from(error.to_string()))));
    *response.status_mut() = http;
    *response.headers_mut() = status.metadata().clone().into_headers();
    // HTTP's word for when to come back (RFC 9110), in whole seconds, on the answers that invite it.
    if matches!(
        http,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) && let Some(delay) = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
    {
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

/// The google.rpc details of `status`, as the Connect protocol carries them: the type's full name,
/// the message's bytes in unpadded base64, and (for the types a person reads) a `debug` rendering.
fn error_details(status: &Status) -> Vec<serde_json::Value> {
    let Ok(rpc) = tonic_types::Status::decode(status.details()) else {
        return Vec::new();
    };
    rpc.details
        .iter()
        .map(|any| {
            let name = any
                .type_url
                .rsplit_once('/')
                .map_or(any.type_url.as_str(), |(_, name)| name);
            let mut detail = serde_json::json!({
                "type": name,
                "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
            });
            if let Some(debug) = debug(name, &any.value) {
                detail["debug"] = debug;
            }
            detail
        })
        .collect()
}

/// A readable rendering of the details a person looks at in curl's output (Connect's optional
/// `debug`; clients decode `value`).
fn debug(name: &str, value: &[u8]) -> Option<serde_json::Value> {
    use serde_json::json;
    use tonic_types::pb;
    Some(match name {
        "google.rpc.ErrorInfo" => {
            let info = pb::ErrorInfo::decode(value).ok()?;
            json!({"reason": info.reason, "domain": info.domain, "metadata": info.metadata})
        }
        "google.rpc.RetryInfo" => {
            let delay = pb::RetryInfo::decode(value).ok()?.retry_delay?;
            let delay = Duration::new(
                u64::try_from(delay.seconds).ok()?,
                u32::try_from(delay.nanos).ok()?,
            );
            json!({"retryDelay": format!("{:.3}s", delay.as_secs_f64())})
        }
        "google.rpc.BadRequest" => {
            let bad = pb::BadRequest::decode(value).ok()?;
            json!({"fieldViolations": bad.field_violations.iter()
                .map(|v| json!({"field": v.field, "description": v.description}))
                .collect::<Vec<_>>()})
        }
        "google.rpc.QuotaFailure" => {
            let quota = pb::QuotaFailure::decode(value).ok()?;
            json!({"violations": quota.violations.iter()
                .map(|v| json!({"subject": v.subject, "description": v.description}))
                .collect::<Vec<_>>()})
        }
        "google.rpc.RequestInfo" => {
            let info = pb::RequestInfo::decode(value).ok()?;
            json!({"requestId": info.request_id})
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
