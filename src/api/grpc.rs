//! gRPC and gRPC-Web (tonic-web turns gRPC-Web into gRPC before tonic sees it): the tonic service
//! `amazonconnect.v1.ContactService`, whose one method turns the tonic request into a [`Call`]. The
//! message size limit is set here, and so is the code its refusal answers.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use tonic::{Request, Response, Status, codec::CompressionEncoding};
use tower::{
    Service,
    util::{MapResponse, future::MapResponseFuture},
};

use crate::{
    call::{Call, CallService, Wire},
    proto::{
        CreatePersistentContactAssociationRequest, CreatePersistentContactAssociationResponse,
        contact_service_server::{ContactService, ContactServiceServer},
    },
};

/// The gRPC service: a tonic request becomes a [`Call`].
#[derive(Clone, Debug)]
pub(crate) struct GrpcAdapter {
    calls: CallService,
}

impl GrpcAdapter {
    pub fn new(calls: CallService) -> Self {
        Self { calls }
    }
}

#[tonic::async_trait]
impl ContactService for GrpcAdapter {
    async fn create_persistent_contact_association(
        &self,
        request: Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let call = Call {
            message,
            metadata,
            extensions,
            wire: Wire::Grpc,
        };
        self.calls.call(call).await.map_err(Status::from)
    }
}

/// The tonic service as the server routes it: gzip understood, a message over `max_message_size`
/// refused with RESOURCE_EXHAUSTED.
pub(crate) fn service(calls: CallService, max_message_size: usize) -> SizeLimited {
    let server = ContactServiceServer::new(GrpcAdapter::new(calls))
        .max_decoding_message_size(max_message_size)
        .accept_compressed(CompressionEncoding::Gzip);
    SizeLimited(MapResponse::new(server, oversized_is_resource_exhausted))
}

type Answer = http::Response<tonic::body::Body>;

/// The tonic service, whose refusal of a message over its size limit says RESOURCE_EXHAUSTED.
#[derive(Clone)]
pub(crate) struct SizeLimited(MapResponse<ContactServiceServer<GrpcAdapter>, fn(Answer) -> Answer>);

impl tonic::server::NamedService for SizeLimited {
    const NAME: &'static str = crate::proto::SERVICE_NAME;
}

impl Service<http::Request<tonic::body::Body>> for SizeLimited {
    type Response = Answer;
    type Error = Infallible;
    type Future = MapResponseFuture<
        <ContactServiceServer<GrpcAdapter> as Service<http::Request<tonic::body::Body>>>::Future,
        fn(Answer) -> Answer,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.call(request)
    }
}

/// tonic answers a message over the decoding limit with OUT_OF_RANGE, where gRPC specifies
/// RESOURCE_EXHAUSTED ("message larger than configured limit", doc/statuscodes.md). The service
/// never answers OUT_OF_RANGE itself, so the code is rewritten in the (trailers-only) answer.
fn oversized_is_resource_exhausted(mut response: Answer) -> Answer {
    let status = response.headers().get("grpc-status");
    if status.is_some_and(|code| code == "11") {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}
