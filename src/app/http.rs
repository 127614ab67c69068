//! The HTTP stack every connection is served with, outermost first, in request order: CORS, the
//! admission step, the expiry of requests past their deadline, the Connect protocol, gRPC-Web, then
//! tonic's routes (health, reflection, the RPC); and the bounds on what one peer may send or hold.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use tonic::{body::Body, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_web::GrpcWebLayer;
use tower::{BoxError, ServiceBuilder, util::BoxCloneService};

use super::StartupError;
use crate::{
    api::{admission::AdmissionLayer, connect::ConnectLayer, expiry::ExpiryLayer, grpc},
    call::{CallService, Refusals, deadline::DefaultDeadline},
    config::ServeConfig,
    proto,
    serving::{listener::AdmissionLimits, serve::ConnectionSettings},
};

/// The service every request is served by.
pub(super) type HttpService = BoxCloneService<http::Request<Body>, http::Response<Body>, BoxError>;

/// The stack, outermost first.
pub(super) fn stack(
    cors: Option<tower_http::cors::CorsLayer>,
    admission: AdmissionLayer,
    connect: ConnectLayer,
    routes: Routes,
    (default_deadline, refusals): (DefaultDeadline, Refusals),
) -> HttpService {
    BoxCloneService::new(
        ServiceBuilder::new()
            .option_layer(cors)
            .layer(admission)
            // Outside the Connect edge, which reads a body: no request outlives its deadline,
            // however little of it has arrived.
            .layer(ExpiryLayer::new(default_deadline, refusals))
            .layer(connect)
            .layer(GrpcWebLayer::new())
            .service(routes),
    )
}

/// The gRPC services: health, reflection (both versions) and the RPC through its adapter.
pub(super) fn grpc_routes(
    calls: CallService,
    health: HealthServer<impl Health>,
    max_message_size: usize,
) -> Result<Routes, StartupError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    // grpcurl 1.8 speaks only v1alpha reflection, buf curl only v1: serve both.
    Ok(Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(grpc::service(calls, max_message_size)))
}

/// Bounds on what one peer may send or hold, sized to this API.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConnectionLimits {
    /// The longest any request may take from its arrival, its body's read included.
    pub default_deadline: Duration,
    pub max_message_size: usize,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub connection_window: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_connection_age: Duration,
    pub idle_timeout: Duration,
    pub max_connection_buffer: usize,
    pub max_buffered_requests: usize,
    pub max_open_requests: usize,
    pub admission: AdmissionLimits,
}

impl From<&ServeConfig> for ConnectionLimits {
    fn from(config: &ServeConfig) -> Self {
        let peers = &config.peers;
        Self {
            default_deadline: config.retries.default_deadline,
            max_message_size: peers.max_message_size,
            max_concurrent_streams: peers.max_concurrent_streams,
            max_header_list_size: peers.max_header_list_size,
            connection_window: peers.connection_window,
            keepalive_interval: peers.keepalive_interval,
            keepalive_timeout: peers.keepalive_timeout,
            max_connection_age: peers.max_connection_age,
            idle_timeout: peers.idle_timeout,
            max_connection_buffer: peers.max_connection_buffer,
            max_buffered_requests: peers.max_buffered_requests,
            max_open_requests: peers.max_open_requests as usize,
            admission: AdmissionLimits {
                max_connections: peers.max_connections as usize,
                handshake_timeout: peers.handshake_timeout,
                await_first_bytes: true,
                evict_idle_after: Some(peers.evict_idle_after).filter(|after| !after.is_zero()),
            },
        }
    }
}

impl ConnectionLimits {
    /// What each connection is served with.
    pub(super) fn connection_settings(&self, grace: Duration) -> ConnectionSettings {
        ConnectionSettings {
            max_header_list_size: self.max_header_list_size,
            max_concurrent_streams: self.max_concurrent_streams,
            connection_window: self.connection_window,
            stream_window: self.stream_window(),
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            max_connection_age: self.max_connection_age,
            grace,
            idle_timeout: self.idle_timeout,
            max_connection_buffer: self.max_connection_buffer,
        }
    }

    /// Room for the largest accepted message and its gRPC frame header, within the connection's
    /// window and HTTP/2's largest.
    fn stream_window(&self) -> u32 {
        let message = u32::try_from(self.max_message_size.saturating_add(5)).unwrap_or(u32::MAX);
        message.max(65_535).min(self.connection_window.max(65_535))
    }
}

/// The limits on peers a reload may change, as the listener (each connection it admits) and the
/// server (each connection it serves) read them; open connections keep theirs.
#[derive(Clone, Debug)]
pub(crate) struct LivePeers {
    admission: Arc<watch::Sender<AdmissionLimits>>,
    connections: Arc<watch::Sender<ConnectionSettings>>,
}

impl LivePeers {
    pub(super) fn new(limits: &ConnectionLimits, grace: Duration) -> Self {
        Self {
            admission: Arc::new(watch::Sender::new(limits.admission)),
            connections: Arc::new(watch::Sender::new(limits.connection_settings(grace))),
        }
    }

    /// What the listener admits within, from now on.
    pub(super) fn admission(&self) -> watch::Receiver<AdmissionLimits> {
        self.admission.subscribe()
    }

    /// How new connections are served, from now on.
    pub(super) fn connections(&self) -> watch::Receiver<ConnectionSettings> {
        self.connections.subscribe()
    }

    /// Puts `config`'s limits on peers in force for new connections; answers whether any changed.
    pub(crate) fn apply(&self, config: &ServeConfig) -> bool {
        let limits = ConnectionLimits::from(config);
        let admission = self.admission.send_if_modified(|current| {
            let changed = *current != limits.admission;
            *current = limits.admission;
            changed
        });
        let settings = limits.connection_settings(config.listening.shutdown_grace);
        let connections = self.connections.send_if_modified(|current| {
            let changed = *current != settings;
            *current = settings;
            changed
        });
        admission || connections
    }
}
