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
//! only answers for requests stuck before the handler, and counts and logs those of the RPC as
//! failed calls ([`Refusals::record`]: the gRPC series, the sampled line with the peer and the
//! cause `request_not_in_time`), so a peer trickling bodies is seen. tower-http's `TimeoutLayer`
//! answers a bare 408 whatever the protocol, hence this one.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, header};
use tonic::{Code, body::Body};
use tower::{BoxError, Layer, Service};

use super::{error_writer, protocol::Protocol};
use crate::{
    auth,
    call::{
        Refusals,
        deadline::{Deadline, DefaultDeadline},
    },
    proto::RPC_PATH,
    status::ErrorAnswer,
};

/// How long after the handler's own deadline this layer answers.
const SLACK: Duration = Duration::from_millis(5);

/// Answers DEADLINE_EXCEEDED for a request still unanswered at its deadline.
#[derive(Clone, Debug)]
pub struct ExpiryLayer {
    default_deadline: DefaultDeadline,
    refusals: Refusals,
}

impl ExpiryLayer {
    pub fn new(default_deadline: DefaultDeadline, refusals: Refusals) -> Self {
        Self {
            default_deadline,
            refusals,
        }
    }
}

impl<S> Layer<S> for ExpiryLayer {
    type Service = Expiry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Expiry {
            inner,
            default_deadline: self.default_deadline.clone(),
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Expiry<S> {
    inner: S,
    default_deadline: DefaultDeadline,
    refusals: Refusals,
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
        // The RPC's requests are calls to log; health and reflection are not.
        let refusals = (request.uri().path() == RPC_PATH).then(|| self.refusals.clone());
        let peer = auth::peer_address(request.extensions());
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
                    let answer = expired(budget);
                    if let Some(refusals) = refusals {
                        refusals.record(
                            &answer,
                            "DEADLINE_EXCEEDED",
                            Some("request_not_in_time"),
                            peer,
                        );
                    }
                    Ok(error_writer::write(protocol, content_type.as_ref(), answer))
                }
            }
        })
    }
}

/// DEADLINE_EXCEEDED for a request that did not arrive in time.
fn expired(budget: Duration) -> ErrorAnswer {
    ErrorAnswer::bare(
        Code::DeadlineExceeded,
        format!(
            "the call was not complete within its deadline ({} ms from its arrival): the request \
             did not arrive in time",
            budget.as_millis()
        ),
    )
}
