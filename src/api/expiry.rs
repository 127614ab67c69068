//! Every request is answered by its deadline, counted from its arrival, whatever stage it is in:
//! the body's read included. A peer that sends headers and then nothing (no body, half a gRPC
//! message, a `Content-Length` never met) would otherwise hold its stream, its buffers and a
//! connection slot until `--max-connection-age`; with this layer it holds them for the call's
//! budget at most (the caller's `grpc-timeout` or `Connect-Timeout-Ms`, capped by
//! `--default-deadline`), then gets DEADLINE_EXCEEDED (Connect: `deadline_exceeded`, HTTP 504),
//! never tonic's CANCELLED, and the request, its body and its buffers are dropped at once.
//!
//! The deadline is the one the admission step stamped. A call that reached its handler answers by
//! itself at the same deadline (with its logs and metrics); this layer fires [`SLACK`] later, so it
//! only answers for requests stuck before the handler. tower-http's `TimeoutLayer` answers a bare
//! 408 whatever the protocol, hence this one.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response, header};
use tonic::{Code, body::Body};
use tower::{BoxError, Layer, Service};

use super::{error_writer, protocol::Protocol};
use crate::{
    call::deadline::{Deadline, DefaultDeadline},
    status::ErrorAnswer,
};

/// How long after the handler's own deadline this layer answers.
const SLACK: Duration = Duration::from_millis(5);

/// Answers DEADLINE_EXCEEDED for a request still unanswered at its deadline.
#[derive(Clone, Debug)]
pub struct ExpiryLayer {
    default_deadline: DefaultDeadline,
}

impl ExpiryLayer {
    pub fn new(default_deadline: DefaultDeadline) -> Self {
        Self { default_deadline }
    }
}

impl<S> Layer<S> for ExpiryLayer {
    type Service = Expiry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Expiry {
            inner,
            default_deadline: self.default_deadline.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Expiry<S> {
    inner: S,
    default_deadline: DefaultDeadline,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Expiry<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let protocol = Protocol::of_request(&request);
        let deadline = Deadline::of(request.extensions(), self.default_deadline.get());
        let (budget, expires) = (deadline.budget, deadline.at + SLACK);
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(expires, answer).await {
                Ok(answered) => answered.map_err(Into::into),
                Err(_) => {
                    tracing::debug!(
                        ?budget,
                        ?protocol,
                        "deadline passed before the call was handled"
                    );
                    Ok(expired(protocol, content_type, budget))
                }
            }
        })
    }
}

/// DEADLINE_EXCEEDED as the request's protocol says it.
fn expired(
    protocol: Protocol,
    content_type: Option<HeaderValue>,
    budget: Duration,
) -> Response<Body> {
    let answer = ErrorAnswer::bare(
        Code::DeadlineExceeded,
        format!(
            "the call was not complete within its deadline ({} ms from its arrival): the request \
             did not arrive in time",
            budget.as_millis()
        ),
    );
    error_writer::write(protocol, content_type.as_ref(), answer)
}
