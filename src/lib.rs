//! connect-facade: Amazon Connect's CreatePersistentContactAssociation as a gRPC service, so services in
//! any language can rehydrate a past chat without an AWS SDK, credentials, retries or throttling of
//! their own.
//!
//! A call flows one way: [`api`] (the edge: admission, the Connect, gRPC and gRPC-Web adapters) →
//! `call` (the call as one service: permit, parse, route, caller rate, replay) → `middleware` (retry,
//! breaker, rate limit over the [`quota`] store) → [`upstream`] (aws-sdk-connect) → back as a typed
//! `error::CallError` that [`status`] turns into the answer every protocol writes. Around them:
//! [`config`], [`app`] (startup as a value), [`lifecycle`] (one shutdown, one task tracker),
//! `serving` (connections, TLS, reloads, readiness, metrics endpoint), [`telemetry`], `metrics` and
//! the [`simulator`], an Amazon Connect that speaks the real wire format, used by every test.
//!
//! The book's "Architecture" chapter follows a call function by function; its "Glossary" names each
//! word once.

pub mod admin;
pub mod api;
pub mod app;
pub(crate) mod auth;
pub(crate) mod call;
pub(crate) mod clip;
pub mod config;
pub(crate) mod domain;
pub(crate) mod error;
pub mod lifecycle;
pub(crate) mod metrics;
pub(crate) mod middleware;
pub mod preflight;
pub mod quota;
pub(crate) mod reload;
pub(crate) mod replay;
pub(crate) mod routes;
pub(crate) mod serving;
pub(crate) mod signals;
pub mod simulator;
pub mod status;
pub(crate) mod store;
pub mod telemetry;
pub mod upstream;

/// Code generated from `proto/amazonconnect/v1/contact_service.proto`.
pub mod proto {
    tonic::include_proto!("amazonconnect.v1");
    // proto3 JSON (serde) for the messages, for the Connect protocol.
    include!(concat!(env!("OUT_DIR"), "/amazonconnect.v1.serde.rs"));

    /// The contract's descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("contact_service_descriptor");

    macro_rules! rpc_method {
        () => {
            "amazonconnect.v1.ContactService/CreatePersistentContactAssociation"
        };
    }

    /// The RPC's full name, as gRPC and trace backends write it.
    pub(crate) const RPC_METHOD: &str = rpc_method!();

    /// The RPC's HTTP path (gRPC, gRPC-Web and the Connect protocol alike).
    pub const RPC_PATH: &str = concat!("/", rpc_method!());

    /// The service's name, for health checks.
    pub(crate) use contact_service_server::SERVICE_NAME;

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_rpc_is_named_after_the_generated_service() {
            assert_eq!(
                super::RPC_METHOD,
                format!("{}/CreatePersistentContactAssociation", super::SERVICE_NAME)
            );
        }
    }
}
