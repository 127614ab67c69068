//! The call, as one service whatever the protocol it came in: [`CallService::call`] takes what the
//! protocol adapters in [`crate::api`] read off the wire (the message, the caller's credentials and
//! trace context in the metadata, the connection's extensions, the caller's own timeout, the
//! protocol) and runs the call's steps, in request order, in [`CallService::run`]:
//!
//! 1. **permit**: with an auth file, the caller the edge authenticated, on its own instances only;
//! 2. **deadline**: the one the edge stamped on arrival ([`deadline::Deadline`]);
//! 3. **parse**: the message becomes a validated [`AssociationRequest`] (every violation named);
//! 4. **route**: the account and region that serve the instance, taken once (a reload never moves
//!    a call in flight);
//! 5. **caller rate**: the caller's own `max_rate`;
//! 6. **replay and coalesce**: an answer kept for the contact, or the identical call in flight;
//! 7. **the route's stack**: the middleware and the AWS call, within the deadline and the drain.
//!
//! Every call, and every request refused before it became one ([`Refusals`]), is counted
//! in the gRPC metrics and gets one `rpc finished` log line whose reason comes from its typed error
//! ([`CallError::reason`]). Codes are chosen next to the errors, never here.

mod call_log;
pub(crate) mod deadline;
pub(crate) mod metrics;
pub(crate) mod recent;
mod reconcile;
mod refusals;

pub use metrics::RpcMetrics;
pub(crate) use refusals::Refusals;

use std::sync::Arc;

use deadline::DefaultDeadline;

use tokio::time::Instant;
use tonic::{Code, Response, metadata::MetadataMap};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    auth::{
        self, AdmittedCaller, CallerMetrics, CallerRefusal, CallerSet, CallerShare, LiveCallers,
        Refusal,
    },
    clip,
    domain::{AssociationRequest, Refused, RehydrationType, UnvalidatedRequest},
    error::CallError,
    lifecycle::Lifecycle,
    middleware::UpstreamCall,
    proto::{
        self, CreatePersistentContactAssociationRequest,
        CreatePersistentContactAssociationResponse, RPC_METHOD,
    },
    replay::{Answered, Replayer},
    routes::router::{Route, Router},
    status::{ErrorAnswer, FailedCall},
    telemetry,
    upstream::UpstreamErrorKind,
};

/// Response metadata key carrying AWS's request id on success.
pub(crate) const AWS_REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// Response and error metadata key carrying how many AWS attempts the call made.
pub(crate) const ATTEMPTS_HEADER: &str = "x-facade-attempts";

/// Response metadata (`true`) on an answer replayed from the cache: AWS was not called.
pub(crate) const REPLAYED_HEADER: &str = "x-facade-replayed";

/// Response metadata (`true`) on an answer shared with an identical call in flight.
pub(crate) const COALESCED_HEADER: &str = "x-facade-coalesced";

/// The protocol a call came in, for its trace (`rpc.system`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// gRPC, or gRPC-Web (tonic-web turns it into gRPC before the service sees it).
    Grpc,
    /// The Connect protocol's unary call, JSON or binary.
    Connect,
}

impl Wire {
    fn rpc_system(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Connect => "connect_rpc",
        }
    }
}

/// One call, as a protocol adapter read it off the wire.
#[derive(Debug)]
pub(crate) struct Call {
    pub message: CreatePersistentContactAssociationRequest,
    /// The request's headers: the caller's credentials and trace context.
    pub metadata: MetadataMap,
    /// The connection's and the edge's: peer address, client certificate, the protocol, the
    /// deadline and the caller authenticated from the headers.
    pub extensions: http::Extensions,
    pub wire: Wire,
}

/// What stands between a valid request and its route: who may call, each caller's own rate, and
/// the replay cache.
#[derive(Clone, Debug, Default)]
pub struct Guards {
    pub callers: Option<LiveCallers>,
    pub replayer: Option<Arc<Replayer>>,
}

/// The call's metrics: the gRPC series and the callers'.
#[derive(Clone, Debug)]
pub struct CallMetrics {
    pub rpc: Arc<RpcMetrics>,
    pub callers: CallerMetrics,
}

/// CreatePersistentContactAssociation, backed by Amazon Connect through the routes' middleware.
#[derive(Clone, Debug)]
pub struct CallService {
    router: Arc<Router>,
    default_deadline: DefaultDeadline,
    lifecycle: Lifecycle,
    metrics: CallMetrics,
    /// Whether only an auth file's callers may call (the edge admitted them).
    callers: bool,
    replayer: Option<Arc<Replayer>>,
    refusals: Refusals,
}

/// What a call's log line (and, when exporting, its span) reports once the call has its answer;
/// filled in as the call goes, then written once, because every field recorded on a span separately
/// costs the log formatter a re-serialisation.
#[derive(Debug, Default)]
struct CallRecord {
    /// The validated request, whose client token (the caller's or a generated one) the call used.
    request: Option<Arc<AssociationRequest>>,
    /// The token of a request refused as invalid, if it had one.
    refused_token: Option<String>,
    attempts: u32,
    aws_request_id: Option<String>,
    /// The route the call took (with `--routes`, its name; `default` without).
    route: Option<Arc<Route>>,
    /// A failed call's ErrorInfo reason (`RATE_LIMITED`, `THROTTLED`, `CIRCUIT_OPEN`…), so logs
    /// answer the questions metrics and alerts ask.
    reason: Option<&'static str>,
    /// Who called, once known (with an auth file).
    caller: Option<Arc<str>>,
}

impl CallRecord {
    fn client_token(&self) -> Option<&str> {
        match &self.request {
            Some(request) => Some(request.client_token().as_str()),
            None => self.refused_token.as_deref(),
        }
    }
}

impl CallService {
    pub fn new(
        router: Arc<Router>,
        default_deadline: DefaultDeadline,
        lifecycle: Lifecycle,
        metrics: CallMetrics,
        refusals: Refusals,
        guards: Guards,
    ) -> Self {
        Self {
            router,
            default_deadline,
            lifecycle,
            refusals,
            metrics,
            callers: guards.callers.is_some(),
            replayer: guards.replayer,
        }
    }

    /// Runs one call, counted, traced and logged once.
    pub(crate) async fn call(
        &self,
        call: Call,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, ErrorAnswer> {
        let started = Instant::now();
        let recorded = self.metrics.rpc.rpc_started();
        let peer = auth::peer_address(&call.extensions);
        // Only what is known now is a span field (recording one later re-serialises the span's
        // fields for the log formatter); the outcome is the fields of the `rpc finished` event.
        // `otel.*` name and classify the span for trace backends.
        let span = tracing::info_span!(
            "rpc",
            otel.name = RPC_METHOD,
            otel.kind = "server",
            method = RPC_METHOD,
            instance_id = %clip::Logged(&call.message.instance_id),
            peer = peer.map(tracing::field::display),
            caller = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, &call.metadata);
        let wire = call.wire;
        let mut record = CallRecord::default();
        let result = self.run(call, &mut record).instrument(span.clone()).await;
        let result = result.map_err(|failed| {
            let reason = failed.error.reason();
            record.reason = Some(reason);
            log_failure(&failed.error);
            let instance_id = failed.instance_id.clone();
            let answer = ErrorAnswer::from(*failed);
            self.refusals.recent().record(
                answer.code,
                reason,
                record.caller.as_deref(),
                &instance_id,
            );
            answer
        });
        let code = result.as_ref().err().map_or(Code::Ok, |answer| answer.code);
        recorded.answered(code);

        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if code == Code::Ok || self.refusals.lines().admit(peer.map(|peer| peer.ip())) {
            span.in_scope(|| call_log::write(code, &record, latency_ms));
        }
        if telemetry::exporting() {
            annotate_server_span(&span, wire, code, record);
        }
        result
    }

    /// The call's steps, in request order.
    async fn run(
        &self,
        call: Call,
        record: &mut CallRecord,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Box<FailedCall>> {
        let (caller, caller_set) = self.permit(&call)?;
        record.caller = caller.name.clone();
        let deadline::Deadline {
            at: deadline,
            budget,
            ..
        } = deadline::Deadline::of(&call.extensions, self.default_deadline.get());
        let request = match AssociationRequest::parse(unvalidated(call.message)) {
            Ok(request) => Arc::new(request),
            Err(refused) => {
                let Refused { error, request } = *refused;
                let caller_token =
                    (!request.client_token.is_empty()).then_some(request.client_token);
                record.refused_token.clone_from(&caller_token);
                return Err(Box::new(FailedCall {
                    error: error.into(),
                    instance_id: request.instance_id,
                    client_token: caller_token,
                    metadata: attempts_metadata(0),
                }));
            }
        };
        record.request = Some(request.clone());
        // A deadline already past (`grpc-timeout: 0m`, `Connect-Timeout-Ms: 0`) is answered as one,
        // in every protocol alike, and AWS is not asked to do what nobody waits for.
        if deadline <= Instant::now() {
            let error = CallError::DeadlineExceeded { budget };
            return Err(failed(error, &request, attempts_metadata(0)));
        }
        // The route is taken once: a reload meanwhile does not move this call. It is taken before
        // the caller's own rate, so that refusal's log line names the route too, and a call to an
        // unrouted instance learns that (a permanent error) rather than to retry later.
        let Some(route) = self.router.route(request.instance_id()) else {
            let error = CallError::InstanceNotRouted {
                instance_id: request.instance_id().to_owned(),
            };
            return Err(failed(error, &request, attempts_metadata(0)));
        };
        route.calls.inc();
        record.route = Some(route.clone());
        if let Some(rates) = caller_set.as_ref().and_then(|set| set.rates.as_ref())
            && let Err(retry_after) = rates.check(&caller)
        {
            self.metrics
                .callers
                .refused(caller.name.as_deref(), CallerRefusal::CallerRate);
            let error = CallError::CallerRateLimited {
                caller: caller.label().to_owned(),
                max_rate: caller.max_rate.unwrap_or_default(),
                retry_after,
            };
            return Err(failed(error, &request, attempts_metadata(0)));
        }
        let call = UpstreamCall::new(request.clone(), deadline, caller);
        let answered = tokio::select! {
            answered = tokio::time::timeout_at(deadline, self.answer(&route, &call)) => {
                answered.unwrap_or(Err(CallError::DeadlineExceeded { budget }))
            }
            () = self.lifecycle.expired() => Err(CallError::ShuttingDown),
        };
        record.attempts = call.attempts();
        let mut metadata = attempts_metadata(call.attempts());
        let outcome = match answered {
            Ok(Answered::Called(outcome)) => outcome,
            Ok(Answered::Replayed(association)) => {
                metadata.insert(REPLAYED_HEADER, "true".parse().expect("ASCII"));
                Ok(association)
            }
            Ok(Answered::Coalesced(outcome)) => {
                metadata.insert(COALESCED_HEADER, "true".parse().expect("ASCII"));
                outcome
            }
            Err(error) => Err(error),
        };
        let association = match outcome {
            Ok(association) => association,
            Err(error) => {
                if let CallError::Upstream(upstream) = &error {
                    record.aws_request_id.clone_from(&upstream.request_id);
                }
                return Err(failed(error, &request, metadata));
            }
        };
        if let Some(id) = &association.request_id
            && let Ok(value) = id.parse()
        {
            metadata.insert(AWS_REQUEST_ID_HEADER, value);
        }
        record.aws_request_id = association.request_id;
        let response = CreatePersistentContactAssociationResponse {
            continued_from_contact_id: association.continued_from_contact_id,
            client_token: request.client_token().to_string(),
        };
        Ok(Response::from_parts(metadata, response, Default::default()))
    }

    /// The call's answer: replayed for its contact, shared with a call in flight for it, or its
    /// own. Every call goes through the replayer, a generated token's too: a caller without a token
    /// that retries after a lost answer asks for the same association with a new token.
    async fn answer(&self, route: &Arc<Route>, call: &UpstreamCall) -> Result<Answered, CallError> {
        let own = || {
            let upstream = route.stack.clone();
            let (call, route) = (call.clone(), route.clone());
            let metrics = self.metrics.rpc.clone();
            async move {
                let outcome = upstream.call(call.clone()).await;
                reconcile::settle(&route, &call.request, &metrics, outcome).await
            }
        };
        match &self.replayer {
            Some(replayer) => {
                replayer
                    .answer(route.key.as_str(), &call.request, call.deadline, own)
                    .await
            }
            None => Ok(Answered::Called(own().await)),
        }
    }

    /// With an auth file, only its callers may call, each on its own instances: the caller the
    /// admission step authenticated (a request that skipped it is a stranger).
    fn permit(
        &self,
        call: &Call,
    ) -> Result<(CallerShare, Option<Arc<CallerSet>>), Box<FailedCall>> {
        if !self.callers {
            return Ok((CallerShare::anonymous(), None));
        }
        let instance_id = &call.message.instance_id;
        let admitted = call
            .extensions
            .get::<AdmittedCaller>()
            .ok_or(Refusal::Unauthenticated);
        let error = match admitted.and_then(|admitted| {
            Ok((
                admitted.set.callers.permit(admitted.who, instance_id)?,
                admitted,
            ))
        }) {
            Ok((caller, admitted)) => {
                Span::current().record("caller", caller.label());
                self.metrics.callers.call(caller.label());
                return Ok((caller.clone(), Some(admitted.set.clone())));
            }
            Err(Refusal::Unauthenticated | Refusal::Token(_)) => CallError::Unauthenticated,
            Err(Refusal::NotAllowed { caller }) => {
                Span::current().record("caller", caller.as_str());
                CallError::CallerNotAllowed { caller }
            }
        };
        Err(Box::new(FailedCall {
            error,
            instance_id: instance_id.clone(),
            client_token: None,
            metadata: attempts_metadata(0),
        }))
    }
}

/// The server span's attributes under OpenTelemetry's RPC conventions, plus what a trace search
/// needs; set on the exported span only, so logs pay nothing for them.
fn annotate_server_span(span: &Span, wire: Wire, code: Code, record: CallRecord) {
    span.set_attribute("rpc.system", wire.rpc_system());
    span.set_attribute("rpc.grpc.status_code", code as i64);
    span.set_attribute("attempts", i64::from(record.attempts));
    if let Some(token) = record.client_token() {
        span.set_attribute("client_token", token.to_owned());
    }
    if let Some(id) = record.aws_request_id {
        span.set_attribute("aws_request_id", id);
    }
    // The other codes (bad input, not found, throttled…) are the caller's answer, not a failure.
    if is_server_error(code) {
        span.set_status(opentelemetry::trace::Status::error(format!("{code:?}")));
    }
}

/// The codes OpenTelemetry's gRPC conventions count as a server's own failure.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

pub(super) fn attempts_metadata(attempts: u32) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(ATTEMPTS_HEADER, attempts.into());
    metadata
}

/// Logs a failed call as its cause deserves: the operator's problems at error level, the caller's
/// at debug (the call's own line, sampled under floods, already says why).
fn log_failure(error: &CallError) {
    match error {
        CallError::Upstream(upstream) if upstream.kind == UpstreamErrorKind::Credentials => {
            tracing::error!(error = %upstream, "the facade's AWS credentials are missing, expired or refused")
        }
        CallError::Upstream(upstream)
            if matches!(
                upstream.kind,
                UpstreamErrorKind::InvalidResponse | UpstreamErrorKind::Unrecognized
            ) =>
        {
            tracing::error!(error = %upstream, "unexpected answer from Amazon Connect")
        }
        // An AWS message may quote the caller's ids.
        other => tracing::debug!(error = %clip::Logged(&other.to_string()), "call failed"),
    }
}

/// A failed call with what the caller needs to retry it safely.
fn failed(
    error: CallError,
    request: &AssociationRequest,
    metadata: MetadataMap,
) -> Box<FailedCall> {
    Box::new(FailedCall {
        error,
        instance_id: request.instance_id().to_owned(),
        client_token: Some(request.client_token().to_string()),
        metadata,
    })
}

fn unvalidated(request: CreatePersistentContactAssociationRequest) -> UnvalidatedRequest {
    let rehydration_type = match proto::RehydrationType::try_from(request.rehydration_type) {
        Ok(proto::RehydrationType::EntirePastSession) => Some(RehydrationType::EntirePastSession),
        Ok(proto::RehydrationType::FromSegment) => Some(RehydrationType::FromSegment),
        Ok(proto::RehydrationType::Unspecified) | Err(_) => None,
    };
    UnvalidatedRequest {
        instance_id: request.instance_id,
        initial_contact_id: request.initial_contact_id,
        rehydration_type,
        source_contact_id: request.source_contact_id,
        client_token: request.client_token,
    }
}
