//! Callers without gRPC, on the gRPC port: the Connect protocol's unary calls (connectrpc.com
//! `docs/protocol.md`), JSON (`application/json`, proto3 JSON from pbjson's generated code) or binary
//! (`application/proto`), over HTTP/1.1 and HTTP/2; gRPC-Web is tonic-web's, inside this layer.
//!
//! Every call to the RPC, whatever its protocol, is authenticated here from its headers, before its
//! body is read ([`CallService::authenticate`]): a stranger is answered at once.
//!
//! A Connect call is decoded here into the same [`Call`] a gRPC call becomes, with the HTTP headers
//! as its metadata, the connection's extensions (the arrival time, the client certificate, the
//! authenticated caller) and `Connect-Timeout-Ms` as its timeout: authorization, validation, fair
//! shares, replay, the quota, logs, traces and the gRPC metrics are the same. A request the edge
//! cannot read (a content type or encoding not served, a body too large or not the message) is an
//! [`EdgeRefusal`], counted and logged by [`CallService::refuse`] like any failed call. The answer goes back as the protocol says: 200 with the message, or the JSON
//! error (`code` in lower snake case, `message`, and `details` with the same google.rpc messages the
//! gRPC answer carries, plus a `debug` rendering of the ones a person reads) with the spec's HTTP
//! status. The response metadata (`x-amzn-requestid`, `x-facade-attempts`…) are response headers.
//!
//! No maintained Rust crate serves the Connect protocol from a tonic service (the `connectrpc` crate
//! generates its own message types and server), hence this module; it handles the one unary RPC.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use tonic::{Code, Status, body::Body};
use tonic_types::StatusExt;
use tower::{BoxError, Layer, Service};

use crate::{
    call::{Call, CallService, Wire, deadline},
    clip,
    error::{CallError, EdgeRefusal},
    proto::CreatePersistentContactAssociationRequest,
    serving::request_buffers::OpenRequestsFull,
};

/// The one procedure served over Connect.
pub(crate) use crate::proto::RPC_PATH;

const JSON: &str = "application/json";
const PROTO: &str = "application/proto";

/// How a request is encoded, from its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    ConnectJson,
    ConnectProto,
    /// Anything else (a form, text…), or no content type.
    Other,
}

impl Protocol {
    pub fn of(headers: &HeaderMap) -> Self {
        let Some(content_type) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
        else {
            return Protocol::Other;
        };
        // Compared in place, case-insensitively: every gRPC call passes here.
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let starts = |prefix: &str| {
            essence
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        if starts("application/grpc-web") {
            Protocol::GrpcWeb
        } else if starts("application/grpc") {
            Protocol::Grpc
        } else if essence.eq_ignore_ascii_case(JSON) {
            Protocol::ConnectJson
        } else if essence.eq_ignore_ascii_case(PROTO) {
            Protocol::ConnectProto
        } else {
            Protocol::Other
        }
    }

    /// Its slot among the metrics' per-protocol series.
    fn slot(self) -> usize {
        self as usize
    }

    /// The `protocol` label of `connect_facade_calls_by_protocol_total`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::ConnectJson => "connect-json",
            Protocol::ConnectProto => "connect-proto",
            Protocol::Other => "other",
        }
    }
}

/// Serves Connect calls itself and passes gRPC and gRPC-Web on.
#[derive(Clone)]
pub struct ProtocolsLayer {
    calls: CallService,
    max_message_size: usize,
}

impl ProtocolsLayer {
    pub fn new(calls: CallService, max_message_size: usize) -> Self {
        Self {
            calls,
            max_message_size,
        }
    }
}

impl<S> Layer<S> for ProtocolsLayer {
    type Service = Protocols<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Protocols {
            inner,
            shared: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Protocols<S> {
    inner: S,
    shared: ProtocolsLayer,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> Service<Request<Body>> for Protocols<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ResBody: hyper::body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let protocol = Protocol::of(request.headers());
        let on_rpc = request.uri().path() == RPC_PATH;
        let is_grpc = matches!(protocol, Protocol::Grpc | Protocol::GrpcWeb);
        if on_rpc {
            self.shared
                .calls
                .rpc_metrics()
                .protocol_call(protocol.slot(), protocol.label());
            if protocol != Protocol::Other {
                match self.admit(&mut request) {
                    Ok(()) => {}
                    Err(refused) => {
                        let response = refusal(&request, protocol, *refused);
                        return Box::pin(async move { Ok(response) });
                    }
                }
            }
        }
        if is_grpc {
            // The inner service was polled ready for this call: swap in a fresh clone, as tower's
            // guidance for cloning services says.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let response = inner.call(request).await.map_err(Into::into)?;
                Ok(response.map(Body::new))
            });
        }
        let shared = self.shared.clone();
        Box::pin(async move {
            Ok(match protocol {
                _ if !on_rpc => {
                    // Not a call of the RPC: answered, but neither counted nor logged as one.
                    let refusal = EdgeRefusal::NoSuchProcedure {
                        path: clip::echo(request.uri().path()),
                        served: RPC_PATH,
                    };
                    let status = Status::from(CallError::from(refusal.clone()));
                    edge_response(&refusal, &status)
                }
                _ if request.method() != Method::POST => {
                    shared.refused(EdgeRefusal::MethodNotAllowed, request.extensions())
                }
                Protocol::ConnectJson | Protocol::ConnectProto => {
                    shared.unary(request, protocol).await
                }
                _ => {
                    let content_type = request
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("(none)");
                    let refusal = EdgeRefusal::UnsupportedContentType {
                        content_type: clip::echo(content_type),
                    };
                    shared.refused(refusal, request.extensions())
                }
            })
        })
    }
}

impl<S> Protocols<S> {
    /// Lets a call to the RPC in, on its headers alone: unless the connection's server found
    /// --max-open-requests open and no busier peer to reset ([`OpenRequestsFull`]), and from a
    /// known caller (a stranger is not waited for).
    fn admit(&self, request: &mut Request<Body>) -> Result<(), Box<Status>> {
        if request.extensions().get::<OpenRequestsFull>().is_some() {
            self.shared.calls.rpc_metrics().open_request_refused();
            return Err(Box::new(
                self.shared
                    .calls
                    .refuse(CallError::Overloaded, request.extensions()),
            ));
        };
        if let Some(who) = self
            .shared
            .calls
            .authenticate(request.headers(), request.extensions())?
        {
            request.extensions_mut().insert(who);
        }
        Ok(())
    }
}

impl ProtocolsLayer {
    /// One Connect unary call.
    async fn unary(self, request: Request<Body>, protocol: Protocol) -> Response<Body> {
        let call = match self.decode(request, protocol).await {
            Ok(call) => call,
            Err((refusal, extensions)) => return self.refused(refusal, &extensions),
        };
        match self.calls.call(call).await {
            Ok(response) => {
                let (metadata, message, _) = response.into_parts();
                let body = match protocol {
                    Protocol::ConnectProto => message.encode_to_vec(),
                    _ => serde_json::to_vec(&message).unwrap_or_default(),
                };
                let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
                *response.headers_mut() = metadata.into_headers();
                let content_type = if protocol == Protocol::ConnectProto {
                    PROTO
                } else {
                    JSON
                };
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                response
            }
            Err(status) => connect_error(http_status(status.code()), &status),
        }
    }

    /// A request to the RPC the edge refused, counted and logged as a failed call, in Connect's
    /// words.
    fn refused(&self, refusal: EdgeRefusal, extensions: &http::Extensions) -> Response<Body> {
        let status = self.calls.refuse(refusal.clone().into(), extensions);
        edge_response(&refusal, &status)
    }

    /// The call as the service takes it, or why the request cannot be one (with the request's
    /// extensions, for the refusal's log line).
    async fn decode(
        &self,
        request: Request<Body>,
        protocol: Protocol,
    ) -> Result<Call, (EdgeRefusal, http::Extensions)> {
        let (mut parts, body) = request.into_parts();
        let read = async {
            // gzip is what Connect clients send (connect-python compresses by default); the spec
            // answers any other encoding `unimplemented`.
            let gzipped = match parts.headers.get(header::CONTENT_ENCODING) {
                None => false,
                Some(encoding) if encoding == "identity" => false,
                Some(encoding) if encoding == "gzip" => true,
                Some(encoding) => {
                    return Err(EdgeRefusal::UnsupportedEncoding {
                        encoding: clip::echo(&String::from_utf8_lossy(encoding.as_bytes())),
                    });
                }
            };
            if let Some(version) = parts.headers.get("connect-protocol-version")
                && version != "1"
            {
                return Err(EdgeRefusal::ProtocolVersion);
            }
            let timeout = match parts.headers.get("connect-timeout-ms") {
                None => None,
                Some(value) => Some(
                    value
                        .to_str()
                        .ok()
                        .and_then(deadline::parse_connect_timeout)
                        .ok_or(EdgeRefusal::Timeout)?,
                ),
            };
            let bytes = match Limited::new(body, self.max_message_size).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    return Err(EdgeRefusal::TooLarge {
                        limit: self.max_message_size,
                        inflated: false,
                    });
                }
                Err(error) => {
                    return Err(EdgeRefusal::Malformed(format!(
                        "cannot read the request body: {error}"
                    )));
                }
            };
            let bytes = if gzipped {
                gunzip(&bytes, self.max_message_size)?
            } else {
                bytes
            };
            let message = match protocol {
                Protocol::ConnectProto => CreatePersistentContactAssociationRequest::decode(bytes)
                    .map_err(|error| {
                        EdgeRefusal::Malformed(format!(
                            "the request body is not the protobuf message: {error}"
                        ))
                    })?,
                _ => serde_json::from_slice(&bytes).map_err(|error| {
                    // serde quotes unknown values (an enum's variant), which the caller sized.
                    EdgeRefusal::Malformed(format!(
                        "the request body is not valid JSON for the request: {}",
                        clip::echo(&error.to_string())
                    ))
                })?,
            };
            Ok((message, timeout))
        };
        match read.await {
            Ok((message, timeout)) => Ok(Call {
                message,
                metadata: tonic::metadata::MetadataMap::from_headers(std::mem::take(
                    &mut parts.headers,
                )),
                extensions: std::mem::take(&mut parts.extensions),
                timeout,
                wire: Wire::Connect,
            }),
            Err(refusal) => Err((refusal, parts.extensions)),
        }
    }
}

/// The Connect answer to a refusal: its code's HTTP status, or the one HTTP has for it (404 for
/// another path, 405 for another method with `Allow`, 415 for another content type with
/// `Accept-Post`).
fn edge_response(refusal: &EdgeRefusal, status: &Status) -> Response<Body> {
    let http = match refusal {
        EdgeRefusal::NoSuchProcedure { .. } => StatusCode::NOT_FOUND,
        EdgeRefusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        EdgeRefusal::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => http_status(status.code()),
    };
    let mut response = connect_error(http, status);
    match refusal {
        EdgeRefusal::MethodNotAllowed => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        EdgeRefusal::UnsupportedContentType { .. } => {
            response.headers_mut().insert(
                "accept-post",
                HeaderValue::from_static("application/json, application/proto"),
            );
        }
        _ => {}
    }
    response
}

/// `compressed`, inflated, within `limit` bytes (a small body must not inflate past the limit).
fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, EdgeRefusal> {
    use std::io::Read;
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| EdgeRefusal::Malformed(format!("the gzip body is corrupt: {error}")))?;
    if inflated.len() > limit {
        return Err(EdgeRefusal::TooLarge {
            limit,
            inflated: true,
        });
    }
    Ok(Bytes::from(inflated))
}

/// CORS for browsers on `origins` (`*`: any), with the headers the Connect protocol and gRPC-Web
/// send and those a caller reads (connectrpc.com's CORS guidance); `None` without origins.
pub fn cors(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, String> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|origin| {
                origin
                    .trim()
                    .parse::<HeaderValue>()
                    .map_err(|_| format!("--cors-allow-origin {origin:?} is not a header value"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(parsed)
    };
    let names = |names: &[&'static str]| {
        names
            .iter()
            .map(|name| http::HeaderName::from_static(name))
            .collect::<Vec<_>>()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST])
            .allow_headers(names(&[
                "content-type",
                "content-encoding",
                "connect-protocol-version",
                "connect-timeout-ms",
                "connect-accept-encoding",
                "connect-content-encoding",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "authorization",
                "traceparent",
                "tracestate",
            ]))
            .expose_headers(names(&[
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "x-facade-attempts",
                "x-facade-replayed",
                "x-facade-coalesced",
                "x-amzn-requestid",
            ]))
            .max_age(Duration::from_secs(7200)),
    ))
}

/// A call refused before its body is read, answered in its own protocol: gRPC and gRPC-Web as
/// trailers-only (the status in the headers), Connect as its JSON error.
fn refusal(request: &Request<Body>, protocol: Protocol, status: Status) -> Response<Body> {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb => {
            let mut response = status.into_http::<Body>();
            if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
            }
            response
        }
        _ => connect_error(http_status(status.code()), &status),
    }
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
    fn content_types_pick_the_protocol() {
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            Protocol::of(&headers)
        };
        assert_eq!(of("application/grpc"), Protocol::Grpc);
        assert_eq!(of("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(of("application/grpc-web-text+proto"), Protocol::GrpcWeb);
        assert_eq!(of("application/json; charset=utf-8"), Protocol::ConnectJson);
        assert_eq!(of("Application/Proto"), Protocol::ConnectProto);
        assert_eq!(of("text/plain"), Protocol::Other);
        assert_eq!(Protocol::of(&HeaderMap::new()), Protocol::Other);
        // Every protocol has a series slot of its own.
        assert_eq!(
            Protocol::Other.slot() + 1,
            crate::call::metrics::PROTOCOL_SLOTS
        );
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
