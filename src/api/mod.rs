//! The protocol adapters, as connect-go's `protocol_*.go` files sit around its one handler: each
//! turns its wire form into a [`Call`] and the call's outcome back, and nothing else (no
//! validation, quota or error choice lives here).
//!
//! - [`GrpcAdapter`]: the tonic service `amazonconnect.v1.ContactService`, for gRPC and gRPC-Web
//!   (tonic-web turns gRPC-Web into gRPC before the service sees it);
//! - [`protocols`]: the Connect protocol, a layer in front of tonic's routes that also lets every
//!   call to the RPC in, or refuses it, on its headers alone;
//! - [`expiry`]: no request outlives its deadline, however little of it has arrived.

pub(crate) mod expiry;
pub mod protocols;

use tonic::{Request, Response, Status};

use crate::{
    call::{Call, CallService, Wire, deadline},
    proto::{
        CreatePersistentContactAssociationRequest, CreatePersistentContactAssociationResponse,
        contact_service_server::ContactService,
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
            timeout: deadline::grpc_timeout(&metadata),
            metadata,
            extensions,
            wire: Wire::Grpc,
        };
        self.calls.call(call).await
    }
}
