//! The tonic service: converts the proto request into a validated domain request, runs the call through
//! the middleware within the caller's deadline, and converts the outcome back, with the number of AWS
//! attempts in `x-facade-attempts`. Codes are chosen in [`crate::status`], never here.

pub mod deadline;

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument, Span};

use crate::{
    auth::{Callers, Refusal, certificate_subject},
    domain::{AssociationRequest, RehydrationType, UnvalidatedRequest},
    lifecycle::Drain,
    metrics::Metrics,
    middleware::{UpstreamCall, UpstreamStack},
    proto::{
        self, CreatePersistentContactAssociationRequest,
        CreatePersistentContactAssociationResponse, contact_service_server::ContactService,
    },
    status::{CallError, FailedCall},
    telemetry,
    upstream::UpstreamErrorKind,
};

/// The RPC's full name, as gRPC and trace backends write it.
const RPC_METHOD: &str = "amazonconnect.v1.ContactService/CreatePersistentContactAssociation";

/// Response metadata key carrying AWS's request id on success.
pub const AWS_REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// Response and error metadata key carrying how many AWS attempts the call made.
pub const ATTEMPTS_HEADER: &str = "x-facade-attempts";

/// `amazonconnect.v1.ContactService`, backed by Amazon Connect through the middleware.
#[derive(Clone, Debug)]
pub struct ContactApi {
    upstream: UpstreamStack,
    default_deadline: Duration,
    drain: Drain,
    metrics: Arc<Metrics>,
    callers: Option<Arc<Callers>>,
}

impl ContactApi {
    pub fn new(
        upstream: UpstreamStack,
        default_deadline: Duration,
        drain: Drain,
        metrics: Arc<Metrics>,
        callers: Option<Arc<Callers>>,
    ) -> Self {
        Self {
            upstream,
            default_deadline,
            drain,
            metrics,
            callers,
        }
    }
}

impl ContactApi {
    async fn associate(
        &self,
        request: Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Status> {
        self.authorize(&request)
            .map_err(|refused| Status::from(*refused))?;
        let budget = deadline::call_budget(request.metadata(), self.default_deadline);
        let unvalidated = unvalidated(request.into_inner());
        let instance_id = unvalidated.instance_id.clone();
        let caller_token =
            (!unvalidated.client_token.is_empty()).then(|| unvalidated.client_token.clone());
        let request = AssociationRequest::parse(unvalidated).map_err(|invalid| FailedCall {
            error: invalid.into(),
            instance_id,
            client_token: caller_token,
            metadata: attempts_metadata(0),
        })?;

        let span = Span::current();
        span.record("client_token", request.client_token().as_str());
        let request = Arc::new(request);
        let deadline = Instant::now() + budget;
        let call = UpstreamCall::new(request.clone(), deadline);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout_at(deadline, self.upstream.call(call.clone())) => {
                outcome.unwrap_or(Err(CallError::DeadlineExceeded { budget }))
            }
            () = self.drain.expired() => Err(CallError::ShuttingDown),
        };
        span.record("attempts", i64::from(call.attempts()));
        let mut metadata = attempts_metadata(call.attempts());
        let association = match outcome {
            Ok(association) => association,
            Err(error) => return Err(failed(error, &request, metadata).into()),
        };
        if let Some(id) = &association.request_id {
            span.record("aws_request_id", id.as_str());
            if let Ok(value) = id.parse() {
                metadata.insert(AWS_REQUEST_ID_HEADER, value);
            }
        }
        let response = CreatePersistentContactAssociationResponse {
            continued_from_contact_id: association.continued_from_contact_id,
            client_token: request.client_token().to_string(),
        };
        Ok(Response::from_parts(metadata, response, Default::default()))
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
        // The `otel.*` and `rpc.*` fields name and classify the span for trace backends
        // (OpenTelemetry's RPC conventions); the others are what a log line needs.
        let span = tracing::info_span!(
            "rpc",
            otel.name = RPC_METHOD,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.grpc.status_code = tracing::field::Empty,
            method = RPC_METHOD,
            instance_id = request.get_ref().instance_id.as_str(),
            caller = tracing::field::Empty,
            client_token = tracing::field::Empty,
            attempts = 0i64,
            aws_request_id = tracing::field::Empty,
            grpc_code = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, request.metadata());
        let result = self.associate(request).instrument(span.clone()).await;
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        recorded.answered(code);
        span.record("grpc_code", tracing::field::debug(code));
        span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            span.record("otel.status_code", "ERROR");
        }
        span.record("latency_ms", started.elapsed().as_secs_f64() * 1000.0);
        span.in_scope(|| tracing::info!("rpc finished"));
        result
    }
}

impl ContactApi {
    /// With an auth file, only its callers may call, each on its own instances.
    fn authorize(
        &self,
        request: &Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<(), Box<FailedCall>> {
        let Some(callers) = &self.callers else {
            return Ok(());
        };
        let tls_subject = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|der| certificate_subject(der)));
        let instance_id = &request.get_ref().instance_id;
        let error = match callers.authorize(request.metadata(), tls_subject.as_deref(), instance_id)
        {
            Ok(caller) => {
                Span::current().record("caller", caller);
                self.metrics.caller_call(caller);
                return Ok(());
            }
            Err(Refusal::Unauthenticated) => CallError::Unauthenticated,
            Err(Refusal::NotAllowed { caller }) => {
                Span::current().record("caller", caller.as_str());
                CallError::CallerNotAllowed { caller }
            }
        };
        tracing::warn!(error = %error, "call refused");
        Err(Box::new(FailedCall {
            error,
            instance_id: instance_id.clone(),
            client_token: None,
            metadata: attempts_metadata(0),
        }))
    }
}

/// The codes OpenTelemetry's gRPC conventions count as a server's own failure; the others (bad
/// input, not found, throttled…) are the caller's answer, not an error of this span.
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
        other => tracing::debug!(error = %other, "call failed"),
    }
    if let CallError::Upstream(upstream) = &error
        && let Some(id) = &upstream.request_id
    {
        Span::current().record("aws_request_id", id.as_str());
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
