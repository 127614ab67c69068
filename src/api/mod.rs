//! The edge: what turns a request on the wire into a [`crate::call::Call`] and its outcome back, as
//! connect-go's `protocol_*.go` files sit around its one handler. No validation, quota or error
//! choice lives here. In request order:
//!
//! - [`cors`]: a browser's preflight, answered first;
//! - [`admission`]: the protocol read once, the deadline stamped once, a call of the RPC let in
//!   (open requests) and its caller authenticated, on its headers alone;
//! - [`expiry`]: no request outlives its deadline, however little of it has arrived;
//! - [`connect`]: the Connect protocol, decoded into a call; gRPC and gRPC-Web pass on;
//! - [`grpc`]: the tonic service, whose request becomes a call.
//!
//! [`error_writer`] answers a refusal or a failure in the request's protocol.

pub(crate) mod admission;
pub(crate) mod connect;
pub(crate) mod cors;
pub mod error_writer;
pub(crate) mod expiry;
pub(crate) mod grpc;
pub mod protocol;
