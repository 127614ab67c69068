//! The cost of the gRPC hop alone: the same service, answering at once with a fixed result.

use std::net::SocketAddr;

use connect_facade::proto::{
    CreatePersistentContactAssociationRequest, CreatePersistentContactAssociationResponse,
    contact_service_server::{ContactService, ContactServiceServer},
};
use tonic::{Request, Response, Status};

struct Bare;

#[tonic::async_trait]
impl ContactService for Bare {
    async fn create_persistent_contact_association(
        &self,
        request: Request<CreatePersistentContactAssociationRequest>,
    ) -> Result<Response<CreatePersistentContactAssociationResponse>, Status> {
        Ok(Response::new(CreatePersistentContactAssociationResponse {
            continued_from_contact_id: "C3".into(),
            client_token: request.into_inner().client_token,
        }))
    }
}

pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    let addr = listener.local_addr().map_err(|err| err.to_string())?;
    // The address on stdout, for scripts that bind port 0.
    println!("{addr}");
    // TCP_NODELAY as `Server::serve` sets it by default: tonic ignores `tcp_nodelay` for a listener
    // passed to `serve_with_incoming`, so the incoming stream sets it.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(ContactServiceServer::new(Bare))
        .serve_with_incoming(incoming)
        .await
        .map_err(|err| err.to_string())
}
