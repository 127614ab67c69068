//! Why a call failed: every refusal and failure as a typed error, from the edge's (a body that is
//! not the message, a content type not served) to AWS's. Each knows, next to its variant, its gRPC
//! code, its ErrorInfo reason and domain, when to come back and its google.rpc details; its message
//! is its `Display`. [`crate::status`] turns one into the answer every protocol writes, and the
//! call's log line takes its reason from the same value, never from a status already encoded. Why
//! each code was chosen is the table in [`crate::status`]'s documentation.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, metadata::MetadataMap};
use tonic_types::ErrorDetails;

use crate::{
    clip,
    domain::ValidationError,
    status::{
        AWS_DOMAIN, FACADE_DOMAIN, OVERLOADED_RETRY_DELAY, THROTTLED_RETRY_DELAY,
        UNAVAILABLE_RETRY_DELAY, insert_header,
    },
    upstream::{UpstreamError, UpstreamErrorKind},
};

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// AWS's own message, or what went wrong on the way to it.
    #[error("{}", .0.message)]
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
    /// The initial contact already continues a past chat: one the facade remembers (another source
    /// or type than this call's), or one Amazon Connect reports while the facade has forgotten it.
    #[error("{}", already_associated(initial_contact_id, existing))]
    AlreadyAssociated {
        initial_contact_id: String,
        existing: ExistingAssociation,
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
    /// The facade reset the connection under the body (a bound on what a peer may hold): no answer
    /// reaches the peer, but the call's line says why it ended.
    #[error("{0}")]
    ConnectionReset(String),
}

/// What is known of the association a contact already has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExistingAssociation {
    /// Remembered by the facade: what was asked, and AWS's answer.
    Remembered {
        rehydration_type: &'static str,
        source_contact_id: String,
        continued_from_contact_id: String,
    },
    /// Amazon Connect refused the association as already enabled, and the facade does not
    /// remember it (its store forgot: a Redis restart, a failover, an eviction). The contact it
    /// continues from, when AWS said (DescribeContact, with `--reconcile-associations`).
    Forgotten {
        continued_from_contact_id: Option<String>,
        /// The refused association's `x-amzn-RequestId`.
        aws_request_id: Option<String>,
    },
}

fn already_associated(initial_contact_id: &str, existing: &ExistingAssociation) -> String {
    let contact = clip::echo(initial_contact_id);
    match existing {
        ExistingAssociation::Remembered {
            rehydration_type,
            source_contact_id,
            ..
        } => format!(
            "contact {contact} already continues a past chat ({rehydration_type} from {}); a retry \
             of that call gets its answer with the same fields",
            clip::echo(source_contact_id)
        ),
        ExistingAssociation::Forgotten {
            continued_from_contact_id,
            ..
        } => format!(
            "contact {contact} already continues a past chat{}, which the facade does not remember \
             (Amazon Connect refused the association as already enabled): if this call retries one \
             that may have succeeded, treat the association as done",
            continued_from_contact_id
                .as_deref()
                .map(|id| format!(" (from contact {})", clip::echo(id)))
                .unwrap_or_default()
        ),
    }
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

impl CallError {
    /// The gRPC code: what the caller should do next.
    pub fn code(&self) -> Code {
        match self {
            Self::Invalid(_) | Self::ClientTokenReused => Code::InvalidArgument,
            Self::Upstream(upstream) => upstream_outcome(upstream.kind).0,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::RateLimited { .. } | Self::CallerRateLimited { .. } | Self::Overloaded => {
                Code::ResourceExhausted
            }
            Self::AlreadyAssociated { .. } => Code::FailedPrecondition,
            Self::InstanceNotRouted { .. } => Code::NotFound,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::CallerNotAllowed { .. } => Code::PermissionDenied,
            Self::ShuttingDown | Self::CircuitOpen { .. } => Code::Unavailable,
            Self::Edge(refusal) => refusal.code(),
        }
    }

    /// The ErrorInfo reason, UPPER_SNAKE: what its answer carries and its log line reports.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "INVALID_FIELDS",
            Self::Upstream(upstream) => upstream_outcome(upstream.kind).1,
            Self::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::CallerRateLimited { .. } => "CALLER_RATE_LIMITED",
            Self::ClientTokenReused => "CLIENT_TOKEN_REUSED",
            Self::AlreadyAssociated { .. } => "ALREADY_ASSOCIATED",
            Self::InstanceNotRouted { .. } => "INSTANCE_NOT_ROUTED",
            Self::Overloaded => "OVERLOADED",
            Self::Unauthenticated => "CALLER_UNKNOWN",
            Self::CallerNotAllowed { .. } => "CALLER_NOT_ALLOWED",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::CircuitOpen { .. } => "CIRCUIT_OPEN",
            Self::Edge(refusal) => refusal.reason(),
        }
    }

    /// Who decided: AWS, when it answered the error; the facade otherwise.
    pub fn domain(&self) -> &'static str {
        match self {
            Self::Upstream(upstream) if upstream.answered_by_aws() => AWS_DOMAIN,
            _ => FACADE_DOMAIN,
        }
    }

    /// When the caller may come back (RetryInfo), where waiting helps.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Self::Upstream(upstream) => upstream_outcome(upstream.kind).2,
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::CallerRateLimited { retry_after, .. } => Some(*retry_after),
            Self::Overloaded => Some(OVERLOADED_RETRY_DELAY),
            Self::ShuttingDown => Some(UNAVAILABLE_RETRY_DELAY),
            Self::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The google.rpc details beyond ErrorInfo and RetryInfo, ErrorInfo's own metadata, and the
    /// response headers this failure adds.
    pub(crate) fn describe(
        &self,
        details: &mut ErrorDetails,
        info: &mut HashMap<String, String>,
        metadata: &mut MetadataMap,
    ) {
        match self {
            Self::Invalid(invalid) => {
                for violation in &invalid.violations {
                    details.add_bad_request_violation(violation.field, &violation.description);
                }
            }
            Self::RateLimited {
                subject,
                description,
                retry_after,
                policy,
            } => {
                if let Some(policy) = policy {
                    insert_header(metadata, "ratelimit-policy", &policy.header());
                    insert_header(metadata, "ratelimit", &policy.remaining(*retry_after));
                }
                details.add_quota_failure_violation(subject, description);
            }
            Self::CallerRateLimited {
                caller, max_rate, ..
            } => {
                details.add_quota_failure_violation(
                    format!("caller:{caller}"),
                    format!("caller {caller} may make at most {max_rate} calls/s (its max_rate in the auth file)"),
                );
                info.insert("caller".to_owned(), caller.clone());
            }
            Self::ClientTokenReused => {
                details.add_bad_request_violation(
                    "client_token",
                    "already used within the replay window by a call with other fields",
                );
            }
            Self::AlreadyAssociated {
                initial_contact_id,
                existing,
            } => {
                details.add_precondition_failure_violation(
                    "ALREADY_ASSOCIATED",
                    format!("contact:{}", clip::echo(initial_contact_id)),
                    "Amazon Connect allows one persistent chat association per contact",
                );
                match existing {
                    ExistingAssociation::Remembered {
                        rehydration_type,
                        source_contact_id,
                        continued_from_contact_id,
                    } => {
                        info.insert("remembered".to_owned(), "true".to_owned());
                        info.insert("rehydrationType".to_owned(), (*rehydration_type).to_owned());
                        info.insert("sourceContactId".to_owned(), clip::echo(source_contact_id));
                        info.insert(
                            "continuedFromContactId".to_owned(),
                            clip::echo(continued_from_contact_id),
                        );
                    }
                    ExistingAssociation::Forgotten {
                        continued_from_contact_id,
                        aws_request_id,
                    } => {
                        info.insert("remembered".to_owned(), "false".to_owned());
                        info.insert(
                            "awsErrorCode".to_owned(),
                            "InvalidRequestException".to_owned(),
                        );
                        if let Some(id) = aws_request_id {
                            info.insert("awsRequestId".to_owned(), id.clone());
                        }
                        if let Some(id) = continued_from_contact_id {
                            info.insert("continuedFromContactId".to_owned(), clip::echo(id));
                        }
                    }
                }
            }
            Self::CallerNotAllowed { caller } => {
                info.insert("caller".to_owned(), caller.clone());
            }
            Self::Upstream(upstream) => {
                if let Some(aws_code) = &upstream.aws_code {
                    info.insert("awsErrorCode".to_owned(), aws_code.clone());
                }
                if let Some(request_id) = &upstream.request_id {
                    info.insert("awsRequestId".to_owned(), request_id.clone());
                    details.set_request_info(request_id, "");
                }
            }
            _ => {}
        }
    }
}

impl EdgeRefusal {
    fn code(&self) -> Code {
        match self {
            Self::NoSuchProcedure { .. }
            | Self::MethodNotAllowed
            | Self::UnsupportedEncoding { .. } => Code::Unimplemented,
            Self::TooLarge { .. } | Self::ConnectionReset(_) => Code::ResourceExhausted,
            Self::UnsupportedContentType { .. }
            | Self::ProtocolVersion
            | Self::Timeout
            | Self::Malformed(_) => Code::InvalidArgument,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NoSuchProcedure { .. } => "NO_SUCH_PROCEDURE",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::UnsupportedContentType { .. } => "UNSUPPORTED_CONTENT_TYPE",
            Self::UnsupportedEncoding { .. } => "UNSUPPORTED_ENCODING",
            Self::ProtocolVersion => "UNSUPPORTED_PROTOCOL_VERSION",
            Self::Timeout => "INVALID_TIMEOUT",
            Self::TooLarge { .. } => "MESSAGE_TOO_LARGE",
            Self::Malformed(_) => "MALFORMED_MESSAGE",
            Self::ConnectionReset(_) => "CONNECTION_RESET",
        }
    }
}

/// Code, ErrorInfo reason and RetryInfo delay for each kind of upstream failure.
pub(crate) fn upstream_outcome(kind: UpstreamErrorKind) -> (Code, &'static str, Option<Duration>) {
    match kind {
        UpstreamErrorKind::InvalidParameter => (Code::InvalidArgument, "INVALID_PARAMETER", None),
        UpstreamErrorKind::InvalidRequest => (Code::FailedPrecondition, "INVALID_REQUEST", None),
        UpstreamErrorKind::ResourceNotFound => (Code::NotFound, "RESOURCE_NOT_FOUND", None),
        UpstreamErrorKind::AccessDenied => (Code::PermissionDenied, "ACCESS_DENIED", None),
        UpstreamErrorKind::Throttling => (
            Code::ResourceExhausted,
            "THROTTLED",
            Some(THROTTLED_RETRY_DELAY),
        ),
        UpstreamErrorKind::ServiceUnavailable => (
            Code::Unavailable,
            "SERVICE_UNAVAILABLE",
            Some(UNAVAILABLE_RETRY_DELAY),
        ),
        UpstreamErrorKind::Transport => (
            Code::Unavailable,
            "UPSTREAM_UNREACHABLE",
            Some(UNAVAILABLE_RETRY_DELAY),
        ),
        UpstreamErrorKind::Credentials => (Code::Internal, "AWS_CREDENTIALS", None),
        UpstreamErrorKind::InvalidResponse => (Code::Internal, "UPSTREAM_RESPONSE_INVALID", None),
        UpstreamErrorKind::Unrecognized => (Code::Unknown, "UNRECOGNIZED_AWS_ERROR", None),
    }
}
