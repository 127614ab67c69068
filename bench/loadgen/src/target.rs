//! The two ways of making the call: over gRPC, or with aws-sdk-connect directly. Both send the same
//! request: the documentation's session (C1), rehydrated into `bench-chat` in the bench fixtures'
//! open instance, so every call succeeds and the simulator keeps no state.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use aws_sdk_connect::{error::ProvideErrorMetadata, types::RehydrationType as SdkRehydrationType};
use connect_facade::proto::{
    CreatePersistentContactAssociationRequest, RehydrationType,
    contact_service_client::ContactServiceClient,
};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

pub const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";
pub const INITIAL_CONTACT: &str = "bench-chat";
pub const SOURCE_CONTACT: &str = "C1";

/// The request every gRPC call sends (no client token: the server makes one, as for real callers).
pub fn request() -> CreatePersistentContactAssociationRequest {
    CreatePersistentContactAssociationRequest {
        instance_id: INSTANCE.into(),
        initial_contact_id: INITIAL_CONTACT.into(),
        rehydration_type: RehydrationType::EntirePastSession.into(),
        source_contact_id: SOURCE_CONTACT.into(),
        client_token: String::new(),
    }
}

/// The request as a gRPC message on the wire: uncompressed flag, big-endian length, protobuf.
pub fn framed_request() -> Vec<u8> {
    let body = request().encode_to_vec();
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// A call's outcome: `Ok`, or the error's code (gRPC code name, AWS error code, or a transport kind).
pub type Outcome = Result<(), String>;

#[derive(Clone)]
pub enum Target {
    Grpc {
        clients: Arc<Vec<ContactServiceClient<Channel>>>,
        next: Arc<AtomicUsize>,
    },
    Sdk(aws_sdk_connect::Client),
}

impl Target {
    /// `urls`: one server, or several separated by commas (replicas behind one Service), whose
    /// connections are opened in turn so the calls spread evenly over them.
    pub async fn grpc(urls: &str, connections: usize) -> Result<Self, String> {
        let endpoints = urls
            .split(',')
            .map(|url| {
                Endpoint::from_shared(url.to_owned())
                    .map(|endpoint| endpoint.tcp_nodelay(true))
                    .map_err(|err| format!("bad URL {url}: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut clients = Vec::with_capacity(connections);
        for index in 0..connections.max(endpoints.len()) {
            let endpoint = &endpoints[index % endpoints.len()];
            // Each connect() is its own HTTP/2 connection.
            let channel = endpoint
                .connect()
                .await
                .map_err(|err| format!("cannot connect to {}: {err}", endpoint.uri()))?;
            clients.push(ContactServiceClient::new(channel));
        }
        Ok(Self::Grpc {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The SDK as a team calling AWS itself would set it up (default config), against `url`.
    pub async fn sdk(url: &str) -> Self {
        let credentials = aws_credential_types::Credentials::new(
            "AKIDBENCH",
            "bench-secret",
            None,
            None,
            "bench",
        );
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(credentials)
            .load()
            .await;
        Self::Sdk(aws_sdk_connect::Client::new(&config))
    }

    pub async fn call(&self) -> Outcome {
        match self {
            Self::Grpc { clients, next } => {
                let index = next.fetch_add(1, Ordering::Relaxed) % clients.len();
                let mut client = clients[index].clone();
                client
                    .create_persistent_contact_association(request())
                    .await
                    .map(drop)
                    .map_err(|status| format!("{:?}", status.code()))
            }
            Self::Sdk(client) => client
                .create_persistent_contact_association()
                .instance_id(INSTANCE)
                .initial_contact_id(INITIAL_CONTACT)
                .rehydration_type(SdkRehydrationType::EntirePastSession)
                .source_contact_id(SOURCE_CONTACT)
                // What a careful direct caller must do (the SDK does not), and what the facade does.
                .client_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .map(drop)
                .map_err(|err| err.code().unwrap_or("dispatch").to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framed_request_is_a_grpc_message() {
        let framed = framed_request();
        assert_eq!(framed[0], 0, "uncompressed");
        let length = u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, framed.len() - 5);
        let decoded = CreatePersistentContactAssociationRequest::decode(&framed[5..]).unwrap();
        assert_eq!(decoded, request());
    }
}
