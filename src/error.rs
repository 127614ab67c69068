//! Why a call failed: every refusal and failure as a typed error, from the edge's (a body that is
//! not the message, a content type not served) to AWS's. The gRPC status, its ErrorInfo reason and
//! details are chosen from these in one place, [`crate::status`]; the call's log line takes its
//! reason from the same place, never from a status already encoded.

use std::time::Duration;

use crate::{domain::ValidationError, upstream::UpstreamError};

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the call's deadline of {budget:?} passed before Amazon Connect answered")]
    DeadlineExceeded { budget: Duration },
    /// The facade's own rate limit (protecting the account's AWS quota) has no token in time.
    #[error("rate limit reached for {subject}: {description}")]
    RateLimited {
        /// What is limited, e.g. `region:eu-west-2` or `instance:ID`.
        subject: String,
        description: String,
        /// When a token will be free, if known.
        retry_after: Option<Duration>,
        /// The limit, for the IETF `RateLimit-Policy` and `RateLimit` headers.
        policy: Option<RatePolicy>,
    },
    /// The caller's own `max_rate` (auth file) is spent.
    #[error("caller {caller} is over its own limit of {max_rate} calls/s")]
    CallerRateLimited {
        caller: String,
        max_rate: f64,
        retry_after: Duration,
    },
    /// The client token was used by an earlier call with other fields.
    #[error(
        "client_token was already used with other fields; use a new token for a new request, or the same fields to retry"
    )]
    ClientTokenReused,
    /// The initial contact already continues a past chat (remembered by the facade): another
    /// source or type than the association it has.
    #[error(
        "contact {initial_contact_id} already continues a past chat: {rehydration_type} from {source_contact_id}, continued from {continued_from_contact_id}"
    )]
    AlreadyAssociated {
        initial_contact_id: String,
        rehydration_type: &'static str,
        source_contact_id: String,
        continued_from_contact_id: String,
    },
    /// No route serves the instance (`--routes` without a match or a default route).
    #[error(
        "no route serves instance {instance_id}: add it to a route of the routes file, or a default route (\"*\")"
    )]
    InstanceNotRouted { instance_id: String },
    /// Too many calls are already in flight or waiting.
    #[error("too many calls in progress; try again shortly")]
    Overloaded,
    /// The caller presented no credentials the auth file knows.
    #[error(
        "unknown caller: send `authorization: Bearer <token>` or a client certificate the auth file lists"
    )]
    Unauthenticated,
    /// A known caller asked for an instance it was not granted.
    #[error("caller {caller} may not use this instance")]
    CallerNotAllowed { caller: String },
    /// The server is shutting down and the call did not finish within the grace period.
    #[error("the server is shutting down; retry with the same client_token")]
    ShuttingDown,
    /// Amazon Connect failed repeatedly; calls fail fast until the cool-down ends.
    #[error("Amazon Connect is failing; calls are paused for {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    /// The request never became a call: the edge could not read it in its protocol.
    #[error(transparent)]
    Edge(#[from] EdgeRefusal),
}

/// A request refused by the edge, in its protocol's terms, before it is a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EdgeRefusal {
    /// A path other than the RPC's (the one procedure served over HTTP).
    #[error("no procedure {path}: the one served over HTTP is {served}")]
    NoSuchProcedure { path: String, served: &'static str },
    /// The Connect protocol calls a unary procedure with POST.
    #[error("only POST calls the procedure")]
    MethodNotAllowed,
    /// Neither Connect's nor gRPC's content types.
    #[error(
        "content type {content_type:?} is not served: send application/json or application/proto (Connect), or application/grpc, application/grpc-web"
    )]
    UnsupportedContentType { content_type: String },
    #[error("content encoding {encoding:?} is not supported: send gzip or identity")]
    UnsupportedEncoding { encoding: String },
    #[error("connect-protocol-version must be 1")]
    ProtocolVersion,
    #[error("connect-timeout-ms must be 1 to 10 digits")]
    Timeout,
    #[error("the request body is larger than the limit of {limit} bytes{}", if *.inflated { " once inflated" } else { "" })]
    TooLarge { limit: usize, inflated: bool },
    /// The body could not be read, inflated or decoded as the request message.
    #[error("{0}")]
    Malformed(String),
}

/// A rate limit as the IETF RateLimit headers name it (draft-ietf-httpapi-ratelimit-headers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatePolicy {
    /// `account`, `instance` or `caller` (its fleet-wide share).
    pub name: &'static str,
    /// Requests per second now (AWS's throttling or a fallback may have lowered it).
    pub rate: f64,
    pub burst: u32,
}
