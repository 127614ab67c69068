//! The tonic service: converts the proto request into a validated domain request, runs the call within
//! the caller's deadline, and converts the outcome back. Codes are chosen in [`crate::status`], never here.

pub mod deadline;

use std::time::Duration;

use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    domain::{AssociationRequest, RehydrationType, UnvalidatedRequest},
    proto::{
        self, CreatePersistentContactAssociationRequest,
        CreatePersistentContactAssociationResponse, contact_service_server::ContactService,
    },
    status::{CallError, FailedCall},
    upstream::{ConnectUpstream, UpstreamErrorKind},
};

/// Response metadata key carrying AWS's request id on success.
pub const AWS_REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// `amazonconnect.v1.ContactService`, backed by Amazon Connect.
#[derive(Clone, Debug)]
pub struct ContactApi {
    upstream: ConnectUpstream,
    default_deadline: Duration,
}

impl ContactApi {
    pub fn new(upstream: ConnectUpstream, default_deadline: Duration) -> Self {
        Self {
            upstream,
            default_deadline,
        }
    }
}

#[tonic::async_trait]
impl ContactService for ContactApi {
    async fn create_persistent_contact_association(
        &self,
        request: Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Status> {
        let budget = deadline::call_budget(request.metadata(), self.default_deadline);
        let unvalidated = unvalidated(request.into_inner());
        let instance_id = unvalidated.instance_id.clone();
        let caller_token =
            (!unvalidated.client_token.is_empty()).then(|| unvalidated.client_token.clone());
        let request = AssociationRequest::parse(unvalidated).map_err(|invalid| FailedCall {
            error: invalid.into(),
            instance_id,
            client_token: caller_token,
            metadata: MetadataMap::new(),
        })?;

        let outcome = tokio::time::timeout(
            budget,
            self.upstream
                .create_persistent_contact_association(&request),
        )
        .await;
        let fail = |error: CallError| FailedCall {
            error,
            instance_id: request.instance_id().to_owned(),
            client_token: Some(request.client_token().to_string()),
            metadata: MetadataMap::new(),
        };
        match outcome {
            Ok(Ok(association)) => {
                let mut response = Response::new(CreatePersistentContactAssociationResponse {
                    continued_from_contact_id: association.continued_from_contact_id,
                    client_token: request.client_token().to_string(),
                });
                if let Some(value) = association.request_id.and_then(|id| id.parse().ok()) {
                    response.metadata_mut().insert(AWS_REQUEST_ID_HEADER, value);
                }
                Ok(response)
            }
            Ok(Err(upstream)) => {
                match upstream.kind {
                    UpstreamErrorKind::Credentials => tracing::error!(
                        error = %upstream,
                        "the facade's AWS credentials are missing, expired or rejected"
                    ),
                    UpstreamErrorKind::InvalidResponse | UpstreamErrorKind::Unrecognized => {
                        tracing::error!(error = %upstream, "unexpected answer from Amazon Connect")
                    }
                    _ => tracing::debug!(error = %upstream, "Amazon Connect refused the call"),
                }
                Err(fail(upstream.into()).into())
            }
            Err(_elapsed) => Err(fail(CallError::DeadlineExceeded { budget }).into()),
        }
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
