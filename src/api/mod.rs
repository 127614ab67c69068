//! The tonic service: converts the proto request into a validated domain request, checks the caller
//! (its credentials and its own rate), answers it from [`crate::replay`] when its token was answered
//! or is in flight, else runs the call through the middleware within the caller's deadline, and
//! converts the outcome back, with the number of AWS attempts in `x-facade-attempts`. Codes are
//! chosen in [`crate::status`], never here.

mod call_log;
pub mod deadline;
pub mod expiry;
mod metrics;
pub mod protocols;

pub use call_log::CALL_LOG_TARGET;
pub use metrics::{PROTOCOL_SLOTS, RpcMetrics, go_code_name};

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tonic_types::StatusExt;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    auth::{self, Authenticated, CallerMetrics, CallerRefusal, CallerShare, Callers, Refusal},
    clip,
    domain::{AssociationRequest, RehydrationType, Rejected, UnvalidatedRequest},
    lifecycle::Drain,
    middleware::UpstreamCall,
    proto::{
        self, CreatePersistentContactAssociationRequest,
        CreatePersistentContactAssociationResponse, RPC_METHOD,
        contact_service_server::ContactService,
    },
    quota::caller_rate::CallerRates,
    replay::{Answered, Replayer},
    routes::router::{Route, Router},
    status::{CallError, FailedCall},
    telemetry,
    upstream::UpstreamErrorKind,
};

/// Response metadata key carrying AWS's request id on success.
pub const AWS_REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// Response and error metadata key carrying how many AWS attempts the call made.
pub const ATTEMPTS_HEADER: &str = "x-facade-attempts";

/// Response metadata (`true`) on an answer replayed from the cache: AWS was not called.
pub const REPLAYED_HEADER: &str = "x-facade-replayed";

/// Response metadata (`true`) on an answer shared with an identical call in flight.
pub const COALESCED_HEADER: &str = "x-facade-coalesced";

/// What stands between a valid request and its route: who may call, each caller's own rate, and
/// the replay cache.
#[derive(Clone, Debug, Default)]
pub struct Guards {
    pub callers: Option<Arc<Callers>>,
    pub replayer: Option<Arc<Replayer>>,
}

/// `amazonconnect.v1.ContactService`, backed by Amazon Connect through the middleware.
#[derive(Clone, Debug)]
pub struct ContactApi {
    router: Arc<Router>,
    default_deadline: Duration,
    drain: Drain,
    metrics: Arc<RpcMetrics>,
    caller_metrics: CallerMetrics,
    callers: Option<Arc<Callers>>,
    caller_rates: Option<Arc<CallerRates>>,
    replayer: Option<Arc<Replayer>>,
    failed_lines: Arc<call_log::FailedCallLines>,
}

impl ContactApi {
    pub fn new(
        router: Arc<Router>,
        default_deadline: Duration,
        drain: Drain,
        metrics: Arc<RpcMetrics>,
        caller_metrics: CallerMetrics,
        guards: Guards,
    ) -> Self {
        let caller_rates = guards
            .callers
            .as_ref()
            .map(|callers| CallerRates::new(&callers.shares()))
            .filter(CallerRates::any)
            .map(Arc::new);
        let metrics_for_lines = metrics.clone();
        Self {
            router,
            default_deadline,
            drain,
            metrics,
            caller_metrics,
            callers: guards.callers,
            caller_rates,
            replayer: guards.replayer,
            failed_lines: Arc::new(call_log::FailedCallLines::new(
                call_log::FAILED_CALL_LINES_PER_SECOND,
                metrics_for_lines,
            )),
        }
    }
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
    reason: Option<String>,
}

impl CallRecord {
    fn client_token(&self) -> Option<&str> {
        match &self.request {
            Some(request) => Some(request.client_token().as_str()),
            None => self.refused_token.as_deref(),
        }
    }
}

impl ContactApi {
    async fn associate(
        &self,
        request: Request<CreatePersistentContactAssociationRequest>,
        record: &mut CallRecord,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Status> {
        let caller = self
            .authorize(&request)
            .map_err(|refused| Status::from(*refused))?;
        let budget = deadline::call_budget(request.metadata(), self.default_deadline);
        let deadline = deadline::deadline(request.extensions(), budget);
        let request = match AssociationRequest::parse(unvalidated(request.into_inner())) {
            Ok(request) => Arc::new(request),
            Err(rejected) => {
                let Rejected { error, request } = *rejected;
                let caller_token =
                    (!request.client_token.is_empty()).then_some(request.client_token);
                record.refused_token.clone_from(&caller_token);
                return Err(FailedCall {
                    error: error.into(),
                    instance_id: request.instance_id,
                    client_token: caller_token,
                    metadata: attempts_metadata(0),
                }
                .into());
            }
        };
        record.request = Some(request.clone());
        // The route is taken once: a reload meanwhile does not move this call. It is taken before
        // the caller's own rate, so that refusal's log line names the route too, and a call to an
        // unrouted instance learns that (a permanent error) rather than to retry later.
        let Some(route) = self.router.route(request.instance_id()) else {
            let error = CallError::InstanceNotRouted {
                instance_id: request.instance_id().to_owned(),
            };
            return Err(failed(error, &request, attempts_metadata(0)).into());
        };
        route.calls.inc();
        record.route = Some(route.clone());
        if let Some(rates) = &self.caller_rates
            && let Err(retry_after) = rates.check(&caller)
        {
            self.caller_metrics
                .refused(caller.name.as_deref(), CallerRefusal::CallerRate);
            let error = CallError::CallerRateLimited {
                caller: caller.label().to_owned(),
                max_rate: caller.max_rate.unwrap_or_default(),
                retry_after,
            };
            return Err(failed(error, &request, attempts_metadata(0)).into());
        }
        let call = UpstreamCall::new(request.clone(), deadline, caller);
        let answered = tokio::select! {
            answered = tokio::time::timeout_at(deadline, self.answer(&route, &call)) => {
                answered.unwrap_or(Err(CallError::DeadlineExceeded { budget }))
            }
            () = self.drain.expired() => Err(CallError::ShuttingDown),
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
                return Err(failed(error, &request, metadata).into());
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
    async fn answer(&self, route: &Route, call: &UpstreamCall) -> Result<Answered, CallError> {
        let own = || {
            let upstream = route.stack.clone();
            let call = call.clone();
            async move { upstream.call(call).await }
        };
        match &self.replayer {
            Some(replayer) => {
                replayer
                    .answer(&route.key, &call.request, call.deadline, own)
                    .await
            }
            None => Ok(Answered::Called(own().await)),
        }
    }
}

#[tonic::async_trait]
impl ContactService for ContactApi {
    async fn create_persistent_contact_association(
        &self,
        request: Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Status> {
        let started = Instant::now();
        let recorded = self.metrics.rpc_started();
        // Only what is known now is a span field (recording one later re-serialises the span's
        // fields for the log formatter); the outcome is the fields of the `rpc finished` event.
        // `otel.*` name and classify the span for trace backends.
        let span = tracing::info_span!(
            "rpc",
            otel.name = RPC_METHOD,
            otel.kind = "server",
            method = RPC_METHOD,
            instance_id = %clip::Logged(&request.get_ref().instance_id),
            peer = request.remote_addr().map(tracing::field::display),
            caller = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, request.metadata());
        let mut record = CallRecord::default();
        let result = self
            .associate(request, &mut record)
            .instrument(span.clone())
            .await;
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        recorded.answered(code);
        if let Err(status) = &result {
            record.reason = reason(status);
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if code == Code::Ok || self.failed_lines.admit() {
            span.in_scope(|| call_log::write(code, &record, latency_ms));
        }
        if telemetry::exporting() {
            annotate_server_span(&span, code, record);
        }
        result
    }
}

/// The server span's attributes under OpenTelemetry's RPC conventions, plus what a trace search
/// needs; set on the exported span only, so logs pay nothing for them.
fn annotate_server_span(span: &Span, code: Code, record: CallRecord) {
    span.set_attribute("rpc.system", "grpc");
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

impl ContactApi {
    /// Who is calling, from the headers alone, before the body is read. A stranger's call is
    /// answered here: UNAUTHENTICATED, counted and logged (sampled) as the handler would have.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Option<Authenticated>, Box<Status>> {
        let Some(callers) = &self.callers else {
            return Ok(None);
        };
        let (_, tls_subject) = auth::peer(extensions);
        callers
            .authenticate(headers, tls_subject.as_deref())
            .map(Some)
            .map_err(|_| Box::new(self.refuse_on_headers(CallError::Unauthenticated, extensions)))
    }

    /// A call refused on its headers, before its body is read: counted and logged (sampled, with
    /// the peer's address) as the handler counts and logs the calls it refuses.
    pub fn refuse_on_headers(&self, error: CallError, extensions: &http::Extensions) -> Status {
        let recorded = self.metrics.rpc_started();
        let status = Status::from(FailedCall {
            error,
            instance_id: String::new(),
            client_token: None,
            metadata: attempts_metadata(0),
        });
        recorded.answered(status.code());
        if self.failed_lines.admit() {
            let (peer, _) = auth::peer(extensions);
            let span = tracing::info_span!(
                "rpc",
                method = RPC_METHOD,
                peer = peer.map(tracing::field::display),
            );
            let record = CallRecord {
                reason: reason(&status),
                ..CallRecord::default()
            };
            span.in_scope(|| call_log::write(status.code(), &record, 0.0));
        }
        status
    }

    /// With an auth file, only its callers may call, each on its own instances. The edge has
    /// usually authenticated the call already ([`Self::authenticate`]).
    fn authorize(
        &self,
        request: &Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<CallerShare, Box<FailedCall>> {
        let Some(callers) = &self.callers else {
            return Ok(CallerShare::anonymous());
        };
        let instance_id = &request.get_ref().instance_id;
        let who = match request.extensions().get::<Authenticated>() {
            Some(who) => Ok(*who),
            None => {
                let (_, tls_subject) = auth::peer(request.extensions());
                callers.authenticate(request.metadata().as_ref(), tls_subject.as_deref())
            }
        };
        let error = match who.and_then(|who| callers.permit(who, instance_id)) {
            Ok(caller) => {
                Span::current().record("caller", caller.label());
                self.caller_metrics.call(caller.label());
                return Ok(caller.clone());
            }
            Err(Refusal::Unauthenticated) => CallError::Unauthenticated,
            Err(Refusal::NotAllowed { caller }) => {
                Span::current().record("caller", caller.as_str());
                CallError::CallerNotAllowed { caller }
            }
        };
        // The call's own line (sampled under floods) says why, with the peer's address.
        tracing::debug!(error = %error, "call refused");
        Err(Box::new(FailedCall {
            error,
            instance_id: instance_id.clone(),
            client_token: None,
            metadata: attempts_metadata(0),
        }))
    }
}

/// A failed call's ErrorInfo reason, for its log line.
fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
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

fn attempts_metadata(attempts: u32) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(ATTEMPTS_HEADER, attempts.into());
    metadata
}

/// Logs a failed call as its cause deserves, and gives it what the caller needs to retry safely.
fn failed(error: CallError, request: &AssociationRequest, metadata: MetadataMap) -> FailedCall {
    match &error {
        CallError::Upstream(upstream) if upstream.kind == UpstreamErrorKind::Credentials => {
            tracing::error!(error = %upstream, "the facade's AWS credentials are missing, expired or rejected")
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
    FailedCall {
        error,
        instance_id: request.instance_id().to_owned(),
        client_token: Some(request.client_token().to_string()),
        metadata,
    }
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
