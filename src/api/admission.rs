//! The admission step: every request passes here once, before anything reads its body. It reads the
//! request's [`Protocol`] and stamps its [`Deadline`] (both kept as request extensions for the later
//! steps); a call of the RPC is then counted by protocol, refused when `--max-open-requests` calls
//! are open ([`OpenRequestsFull`]), and its caller authenticated from the headers alone: a stranger
//! is answered at once, in its protocol's words, never waited for. Refusals are counted and logged
//! as failed calls through [`Refusals`].

use std::task::{Context, Poll};

use http::{Request, Response, header};
use tokio::time::Instant;
use tonic::body::Body;
use tower::{BoxError, Layer, Service};

use super::{error_writer, protocol::Protocol};
use crate::{
    auth::{self, AdmittedCaller, CallerMetrics, LiveCallers, Refusal},
    call::{
        Refusals,
        deadline::{self, CallerTimeout, Deadline, DefaultDeadline},
    },
    error::CallError,
    proto::RPC_PATH,
    serving::request_buffers::OpenRequestsFull,
    status::ErrorAnswer,
};

/// Admits requests: see the module's documentation.
#[derive(Clone, Debug)]
pub(crate) struct AdmissionLayer {
    refusals: Refusals,
    callers: Option<LiveCallers>,
    caller_metrics: CallerMetrics,
    default_deadline: DefaultDeadline,
}

impl AdmissionLayer {
    pub fn new(
        refusals: Refusals,
        callers: Option<LiveCallers>,
        caller_metrics: CallerMetrics,
        default_deadline: DefaultDeadline,
    ) -> Self {
        Self {
            refusals,
            callers,
            caller_metrics,
            default_deadline,
        }
    }

    /// The deadline of a request arriving now in `protocol`.
    fn deadline(&self, protocol: Protocol, headers: &http::HeaderMap) -> Deadline {
        let asked = if protocol.is_connect() {
            CallerTimeout::read(
                headers.get("connect-timeout-ms"),
                deadline::parse_connect_timeout,
            )
        } else {
            CallerTimeout::read(headers.get("grpc-timeout"), deadline::parse_grpc_timeout)
        };
        Deadline::new(Instant::now(), asked, self.default_deadline.get())
    }

    /// Lets a call of the RPC in, on its headers alone, and records who it is from.
    fn admit<B>(
        &self,
        protocol: Protocol,
        request: &mut Request<B>,
    ) -> Result<(), Box<ErrorAnswer>> {
        let metrics = self.refusals.metrics();
        metrics.protocol_call(protocol.slot(), protocol.label());
        // Another content type is refused by the Connect edge, which names the ones served.
        if protocol == Protocol::Other {
            return Ok(());
        }
        if request.extensions().get::<OpenRequestsFull>().is_some() {
            metrics.open_request_refused();
            return Err(Box::new(
                self.refusals
                    .refuse(CallError::Overloaded, request.extensions()),
            ));
        }
        let Some(callers) = &self.callers else {
            return Ok(());
        };
        let (_, certificate) = auth::peer(request.extensions());
        let set = callers.current();
        match set
            .callers
            .authenticate(request.headers(), certificate.as_ref())
        {
            Ok(who) => {
                request.extensions_mut().insert(AdmittedCaller { set, who });
                Ok(())
            }
            Err(refusal) => {
                let cause = match refusal {
                    Refusal::Token(token) => {
                        self.caller_metrics.token_refused(token.cause());
                        Some(token.cause())
                    }
                    _ => None,
                };
                Err(Box::new(self.refusals.refuse_because(
                    CallError::Unauthenticated,
                    cause,
                    request.extensions(),
                )))
            }
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            admission: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Admission<S> {
    inner: S,
    admission: AdmissionLayer,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Admission<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let protocol = Protocol::of(request.headers());
        let deadline = self.admission.deadline(protocol, request.headers());
        request.extensions_mut().insert(protocol);
        request.extensions_mut().insert(deadline);
        if request.uri().path() == RPC_PATH
            && let Err(answer) = self.admission.admit(protocol, &mut request)
        {
            let content_type = request.headers().get(header::CONTENT_TYPE);
            let response = error_writer::write(protocol, content_type, *answer);
            return Box::pin(async move { Ok(response) });
        }
        // Called here, not in the future: the service polled ready is the one called, and the
        // stack need not be cloned for the request.
        let answer = self.inner.call(request);
        Box::pin(async move { answer.await.map_err(Into::into) })
    }
}
