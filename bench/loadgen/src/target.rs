//! The two ways of making the call: over gRPC, or with aws-sdk-connect directly. Both send the same
//! request: the documentation's session (C1), rehydrated into `bench-chat` in the bench fixtures'
//! open instance, so every call succeeds and the simulator keeps no state.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aws_sdk_connect::{error::ProvideErrorMetadata, types::RehydrationType as SdkRehydrationType};
use connect_facade::proto::{
    CreatePersistentContactAssociationRequest, RehydrationType,
    contact_service_client::ContactServiceClient,
};
use prost::Message;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

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

/// Which client token the gRPC calls send.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    None,
    Unique,
    Repeat,
}

/// How each gRPC call is made beyond its message: token, caller, deadline, retry.
#[derive(Clone, Debug)]
pub struct CallShape {
    tokens: TokenMode,
    repeated: String,
    bearer: Option<MetadataValue<Ascii>>,
    deadline: Option<Duration>,
    retry_after_timeout: bool,
    instance_id: Option<String>,
    chats: NewChats,
}

/// A new chat per call: the facade remembers each association by its initial contact and replays a
/// repeat (AWS allows one per contact), so calls meant to reach AWS each name a contact of their
/// own, unique to this run (the facade's memory outlives a run).
#[derive(Clone, Debug)]
pub struct NewChats {
    run: String,
    calls: Arc<AtomicUsize>,
}

impl NewChats {
    pub fn new() -> Self {
        Self {
            run: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The request, for the next new chat.
    pub fn request(&self) -> CreatePersistentContactAssociationRequest {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        CreatePersistentContactAssociationRequest {
            initial_contact_id: format!("{INITIAL_CONTACT}-{}-{call}", self.run),
            ..request()
        }
    }
}

impl CallShape {
    pub fn from_args(args: &crate::RunArgs) -> Result<Self, String> {
        if args.retry_after_timeout && args.tokens == TokenMode::Repeat {
            return Err(
                "--retry-after-timeout needs --tokens unique or none (a repeated token is a replay already)".into(),
            );
        }
        let bearer = args
            .bearer
            .as_ref()
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .map_err(|_| "--bearer must be printable ASCII".to_owned())?;
        Ok(Self {
            tokens: args.tokens,
            repeated: uuid::Uuid::new_v4().to_string(),
            bearer,
            deadline: args.deadline,
            retry_after_timeout: args.retry_after_timeout,
            instance_id: args.instance_id.clone(),
            chats: NewChats::new(),
        })
    }

    fn token(&self) -> String {
        match self.tokens {
            TokenMode::None => String::new(),
            TokenMode::Unique => uuid::Uuid::new_v4().to_string(),
            TokenMode::Repeat => self.repeated.clone(),
        }
    }

    /// One call's message: a new chat with its token, unless it repeats a token on purpose (then it
    /// repeats the call whole, contact included, and the facade replays it).
    fn message(&self) -> CreatePersistentContactAssociationRequest {
        let fields = if self.tokens == TokenMode::Repeat {
            request()
        } else {
            self.chats.request()
        };
        let mut message = CreatePersistentContactAssociationRequest {
            client_token: self.token(),
            ..fields
        };
        if let Some(instance_id) = &self.instance_id {
            message.instance_id.clone_from(instance_id);
        }
        message
    }

    fn request(
        &self,
        message: CreatePersistentContactAssociationRequest,
    ) -> tonic::Request<CreatePersistentContactAssociationRequest> {
        let mut request = tonic::Request::new(message);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        if let Some(deadline) = self.deadline {
            request.set_timeout(deadline);
        }
        request
    }
}

#[derive(Clone)]
pub enum Target {
    Grpc {
        clients: Arc<Vec<ContactServiceClient<Channel>>>,
        next: Arc<AtomicUsize>,
        shape: Arc<CallShape>,
    },
    Sdk(aws_sdk_connect::Client),
    /// The Connect protocol: unary POSTs over h2c, one client (one connection) per slot.
    Connect {
        clients: Arc<Vec<ConnectClient>>,
        next: Arc<AtomicUsize>,
        url: Arc<str>,
        binary: bool,
        chats: NewChats,
    },
}

type ConnectClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

impl Target {
    /// `urls`: one server, or several separated by commas (replicas behind one Service), whose
    /// connections are opened in turn so the calls spread evenly over them. `ca`: the PEM
    /// certificate that https:// servers are trusted by.
    pub async fn grpc(
        urls: &str,
        connections: usize,
        shape: CallShape,
        ca: Option<&[u8]>,
    ) -> Result<Self, String> {
        let endpoints = urls
            .split(',')
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.to_owned())
                    .map(|endpoint| endpoint.tcp_nodelay(true))
                    .map_err(|err| format!("bad URL {url}: {err}"))?;
                match ca {
                    Some(ca) => endpoint
                        .tls_config(
                            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
                        )
                        .map_err(|err| format!("TLS for {url}: {err}")),
                    None => Ok(endpoint),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut clients = Vec::with_capacity(connections);
        for index in 0..connections.max(endpoints.len()) {
            let endpoint = &endpoints[index % endpoints.len()];
            // Each connect() is its own HTTP/2 connection.
            let channel = endpoint
                .connect()
                .await
                .map_err(|err| format!("cannot connect to {}: {err:?}", endpoint.uri()))?;
            clients.push(ContactServiceClient::new(channel));
        }
        Ok(Self::Grpc {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
            shape: Arc::new(shape),
        })
    }

    /// The Connect protocol against the facade at `url`, over `connections` h2c connections.
    pub fn connect(url: &str, connections: usize, binary: bool) -> Result<Self, String> {
        let clients = (0..connections.max(1))
            .map(|_| {
                // TCP_NODELAY, as the gRPC channels set it: without it a small request waits on
                // Nagle's algorithm and the server's delayed ACK (about 40 ms).
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_nodelay(true);
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .http2_only(true)
                    .build(connector)
            })
            .collect();
        let url = format!(
            "{}/amazonconnect.v1.ContactService/CreatePersistentContactAssociation",
            url.trim_end_matches('/')
        );
        url.parse::<http::Uri>()
            .map_err(|err| format!("bad URL {url}: {err}"))?;
        Ok(Self::Connect {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
            url: Arc::from(url),
            binary,
            chats: NewChats::new(),
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
            Self::Grpc {
                clients,
                next,
                shape,
            } => {
                let index = next.fetch_add(1, Ordering::Relaxed) % clients.len();
                let mut client = clients[index].clone();
                let message = shape.message();
                let mut outcome = client
                    .create_persistent_contact_association(shape.request(message.clone()))
                    .await;
                // The retry asks for the same association, with the same token (none stays none:
                // the facade then makes another, as for a client that keeps no token).
                if shape.retry_after_timeout
                    && outcome
                        .as_ref()
                        .is_err_and(|status| status.code() == tonic::Code::DeadlineExceeded)
                {
                    outcome = client
                        .create_persistent_contact_association(shape.request(message))
                        .await;
                }
                outcome
                    .map(drop)
                    .map_err(|status| format!("{:?}", status.code()))
            }
            Self::Connect {
                clients,
                next,
                url,
                binary,
                chats,
            } => {
                let index = next.fetch_add(1, Ordering::Relaxed) % clients.len();
                let request = chats.request();
                let (content_type, body) = if *binary {
                    ("application/proto", request.encode_to_vec())
                } else {
                    (
                        "application/json",
                        serde_json::to_vec(&request).map_err(|err| err.to_string())?,
                    )
                };
                let call = http::Request::post(url.as_ref())
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .map_err(|err| err.to_string())?;
                let response = clients[index]
                    .request(call)
                    .await
                    .map_err(|_| "transport".to_owned())?;
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .map_err(|_| "transport".to_owned())?
                    .to_bytes();
                if status.is_success() {
                    return Ok(());
                }
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|error| error["code"].as_str().map(str::to_owned));
                Err(code.unwrap_or_else(|| status.as_str().to_owned()))
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
