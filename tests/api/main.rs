//! One integration-test binary (each `tests/*.rs` would link the whole SDK again): the real facade over
//! the real SDK and the simulator, called with a real gRPC client.

mod admin;
mod association;
mod auth;
mod config_file;
mod connections;
mod discovery;
mod errors;
mod fairness;
mod fleet_fairness;
mod forgotten;
mod hardening;
mod identities;
mod lifecycle;
mod log_floods;
mod observability;
mod peer_bounds;
mod preflight;
mod process;
mod protocols;
mod quota;
mod reloads;
mod replay;
mod resilience;
mod routes;
mod stalled;
mod support;
mod tls;
mod topologies;
mod traces;
mod validation;
