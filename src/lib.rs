//! connect-facade: Amazon Connect's CreatePersistentContactAssociation as a gRPC service, so services in
//! any language can rehydrate a past chat without an AWS SDK, credentials, retries or throttling of
//! their own.
//!
//! A call flows in one direction through these modules:
//!
//! 1. [`api`]: the edge. One admission step reads the protocol, stamps the deadline, lets the call
//!    in (open requests) and authenticates its caller, on the headers alone; then the Connect
//!    protocol is decoded, or tonic takes gRPC and gRPC-Web; either becomes a [`call::Call`] (and
//!    what the edge cannot read is refused as a typed [`error::EdgeRefusal`]);
//! 2. [`call`]: the call as one service, its steps in request order: [`auth`] (the caller's
//!    instances), the deadline, [`domain`] (the request parsed once into a validated [`domain::AssociationRequest`],
//!    every violated field reported, a client token generated when the caller sent none),
//!    [`routes`] (the account and region serving the instance), the caller's own rate, [`replay`]
//!    (an answer kept for the contact, or the identical call in flight), then the route's stack;
//! 3. [`middleware`]: tower layers shed overload, retry within the deadline and a budget, break the
//!    circuit while AWS fails, and hold calls to the account's request-rate quota, whose buckets live
//!    in a [`quota`] store (this process, or Redis shared by every replica, through [`store`]);
//! 4. [`upstream`]: the one aws-sdk-connect client calls AWS and classifies what comes back;
//! 5. [`status`]: every [`error::CallError`] becomes a gRPC status with google.rpc details, and
//!    its ErrorInfo reason, in one place.
//!
//! Around them: [`config`] (flags, environment and the configuration file, in groups), [`app`]
//! (startup, and the serving stack with reflection and health), [`serving`] (which connections are admitted and how each is
//! served, TLS, reloads on change or SIGHUP, readiness and graceful shutdown, the metrics endpoint),
//! [`telemetry`] (logs and traces), [`metrics`]
//! (the one Prometheus registry, into which each part registers its own families) and
//! [`simulator`], an Amazon Connect that speaks the real wire format, used when no AWS account is
//! at hand and by every test (with its own model of the operation, so the facade's mistakes are
//! caught rather than mirrored).

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
pub mod quota;
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
