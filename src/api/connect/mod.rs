//! The Connect protocol's unary calls (connectrpc.com `docs/protocol.md`) on the gRPC port: JSON
//! (`application/json`, proto3 JSON from pbjson's generated code) or binary (`application/proto`),
//! over HTTP/1.1 and HTTP/2. gRPC and gRPC-Web pass on to tonic.
//!
//! A Connect call is decoded ([`decode`]) into the same [`crate::call::Call`] a gRPC call becomes, with the HTTP
//! headers as its metadata and the request's extensions (protocol, deadline, client certificate,
//! authenticated caller): every later step is the same. A request the edge cannot read is an
//! [`EdgeRefusal`], counted and logged through [`Refusals`]. The answer is 200 with the message and
//! the response metadata (`x-amzn-requestid`, `x-facade-attempts`…) as headers, or the error writer's.
//!
//! No maintained Rust crate serves the Connect protocol from a tonic service (the `connectrpc` crate
//! generates its own message types and server), hence this module; it handles the one unary RPC.

mod decode;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prost::Message;
use tonic::body::Body;
use tower::{BoxError, Layer, Service};

use super::{
    error_writer::{self, connect_error, http_status},
    protocol::{JSON, PROTO, Protocol},
};
use crate::{
    call::{CallService, Refusals},
    clip,
    error::{CallError, EdgeRefusal},
    proto::RPC_PATH,
    status::ErrorAnswer,
};

/// Serves Connect calls itself and passes gRPC and gRPC-Web on.
#[derive(Clone, Debug)]
pub(crate) struct ConnectLayer {
    /// Shared: the stack is cloned for every request.
    calls: Arc<CallService>,
    refusals: Refusals,
    max_message_size: usize,
}

impl ConnectLayer {
    pub fn new(calls: CallService, refusals: Refusals, max_message_size: usize) -> Self {
        Self {
            calls: Arc::new(calls),
            refusals,
            max_message_size,
        }
    }
}

impl<S> Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Connect {
            inner,
            edge: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Connect<S> {
    inner: S,
    edge: ConnectLayer,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> Service<Request<Body>> for Connect<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let protocol = Protocol::of_request(&request);
        if protocol.is_grpc() {
            let answer = self.inner.call(request);
            return Box::pin(async move {
                let response = answer.await.map_err(Into::into)?;
                Ok(response.map(Body::new))
            });
        }
        let edge = self.edge.clone();
        Box::pin(async move {
            Ok(match protocol {
                _ if request.uri().path() != RPC_PATH => {
                    // Not a call of the RPC: answered, but neither counted nor logged as one.
                    let refusal = EdgeRefusal::NoSuchProcedure {
                        path: clip::echo(request.uri().path()),
                        served: RPC_PATH,
                    };
                    edge_response(&refusal, CallError::from(refusal.clone()).into())
                }
                _ if request.method() != Method::POST => {
                    edge.refused(EdgeRefusal::MethodNotAllowed, request.extensions())
                }
                Protocol::ConnectJson | Protocol::ConnectProto => {
                    edge.unary(request, protocol).await
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
                    edge.refused(refusal, request.extensions())
                }
            })
        })
    }
}

impl ConnectLayer {
    /// One Connect unary call.
    async fn unary(self, request: Request<Body>, protocol: Protocol) -> Response<Body> {
        let call = match decode::call(request, protocol, self.max_message_size).await {
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
            Err(answer) => error_writer::write(protocol, None, answer),
        }
    }

    /// A request to the RPC the edge refused, counted and logged as a failed call, in Connect's
    /// words.
    fn refused(&self, refusal: EdgeRefusal, extensions: &http::Extensions) -> Response<Body> {
        let answer = self.refusals.refuse(refusal.clone().into(), extensions);
        edge_response(&refusal, answer)
    }
}

/// The Connect answer to a refusal: its code's HTTP status, or the one HTTP has for it (404 for
/// another path, 405 for another method with `Allow`, 415 for another content type with
/// `Accept-Post`).
fn edge_response(refusal: &EdgeRefusal, answer: ErrorAnswer) -> Response<Body> {
    let http = match refusal {
        EdgeRefusal::NoSuchProcedure { .. } => StatusCode::NOT_FOUND,
        EdgeRefusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        EdgeRefusal::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => http_status(answer.code),
    };
    let mut response = connect_error(http, answer);
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
