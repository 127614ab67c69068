//! A failed call's answer: the [`ErrorAnswer`] every protocol writes (the gRPC status with its
//! google.rpc details, the Connect JSON error), built once from the typed [`CallError`], which knows
//! its own code, reason and details. Why each failure gets its code is this table:
//!
//! Errors follow the google.rpc error model (AIP-193): every error carries a `google.rpc.ErrorInfo`
//! whose `reason` is UPPER_SNAKE, whose `domain` says who decided (`connect.amazonaws.com` when AWS
//! answered the error, [`FACADE_DOMAIN`] when the facade did), and whose metadata carries the AWS code
//! and request id, the client token and the instance, so a caller can correlate and retry safely.
//!
//! Codes are chosen by what the caller should do next, not by AWS's HTTP status:
//! - InvalidParameterException is the caller's argument: INVALID_ARGUMENT.
//! - InvalidRequestException means the contacts are in the wrong state (not ended, already associated):
//!   retrying will not help until that changes, hence FAILED_PRECONDITION.
//! - ThrottlingException is a quota: RESOURCE_EXHAUSTED, with a RetryInfo saying when to come back.
//! - InternalServiceException, other 5xx and an unreachable AWS are transient: UNAVAILABLE, the one code
//!   gRPC clients retry on their own (gRFC A6, AIP-194).
//! - The facade's own credentials failing is the operator's problem, not the caller's: INTERNAL with
//!   reason AWS_CREDENTIALS (the handler also logs it at error level).
//! - An AWS code the facade does not know: UNKNOWN, with the code in ErrorInfo.
//! - The facade's own protections: its rate limit and overload bound answer RESOURCE_EXHAUSTED (with
//!   RetryInfo, and QuotaFailure for the rate limit), an open circuit breaker UNAVAILABLE with RetryInfo.
//!   ErrorInfo's reason says whose limit it was: RATE_LIMITED (the account's quota, shared by every
//!   caller), CALLER_RATE_LIMITED (the caller's own `max_rate`), OVERLOADED (the facade's capacity).
//! - A client token reused with other fields: INVALID_ARGUMENT, reason CLIENT_TOKEN_REUSED, and a
//!   BadRequest naming `client_token`.
//! - A contact the facade remembers associated with another source or type: FAILED_PRECONDITION,
//!   reason ALREADY_ASSOCIATED, the existing association in ErrorInfo's metadata and a
//!   PreconditionFailure.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    clip,
    error::{CallError, RatePolicy},
};

/// ErrorInfo domain for errors AWS answered.
pub const AWS_DOMAIN: &str = "connect.amazonaws.com";
/// ErrorInfo domain for errors the facade itself decided.
pub const FACADE_DOMAIN: &str = "connect-facade";

/// How long a throttled caller is told to wait: Connect's default quota refills a token every 500 ms,
/// and one second leaves room for the other callers sharing the account.
pub(crate) const THROTTLED_RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long a caller refused for overload is told to wait.
pub(crate) const OVERLOADED_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long a caller is told to wait after a transient AWS failure.
pub(crate) const UNAVAILABLE_RETRY_DELAY: Duration = Duration::from_millis(200);

impl RatePolicy {
    /// `RateLimit-Policy`: the burst as the quota, over the seconds the rate takes to refill it.
    pub(crate) fn header(&self) -> String {
        let window = (f64::from(self.burst.max(1)) / self.rate.max(0.001))
            .ceil()
            .max(1.0);
        format!("\"{}\";q={};w={window}", self.name, self.burst.max(1))
    }

    /// `RateLimit`: nothing remains (the call was refused), and when some will.
    pub(crate) fn remaining(&self, retry_after: Option<Duration>) -> String {
        let reset = retry_after.map_or(1, |delay| delay.as_secs_f64().ceil().max(1.0) as u64);
        format!("\"{}\";r=0;t={reset}", self.name)
    }
}

/// gRFC A6's trailer telling gRPC's built-in retry when to try again.
pub(crate) const PUSHBACK_TRAILER: &str = "grpc-retry-pushback-ms";

/// A failed call with what the caller needs to correlate and retry it.
#[derive(Debug)]
pub(crate) struct FailedCall {
    pub error: CallError,
    pub instance_id: String,
    /// The token sent (or that would have been sent) to AWS; `None` if there is none to report.
    pub client_token: Option<String>,
    /// Extra response metadata (headers/trailers) to send with the status.
    pub metadata: MetadataMap,
}

/// A failure's answer before any protocol encodes it: the gRPC status and the Connect error are
/// each written from this value.
#[derive(Debug)]
pub struct ErrorAnswer {
    pub code: Code,
    pub message: String,
    /// Boxed: most answers are passed along untouched, and the details are large.
    pub details: Box<ErrorDetails>,
    pub metadata: MetadataMap,
}

impl ErrorAnswer {
    /// An answer with no details (a request that was never a call).
    pub fn bare(code: Code, message: String) -> Self {
        Self {
            code,
            message,
            details: Box::default(),
            metadata: MetadataMap::new(),
        }
    }
}

impl From<FailedCall> for ErrorAnswer {
    fn from(failed: FailedCall) -> Self {
        let FailedCall {
            error,
            instance_id,
            client_token,
            mut metadata,
        } = failed;
        let mut info = HashMap::new();
        // The caller's own values, quoted within bounds: an invalid one may be any length.
        // (A call refused on its headers has no instance yet.)
        if !instance_id.is_empty() {
            info.insert("instanceId".to_owned(), clip::echo(&instance_id));
        }
        if let Some(token) = client_token {
            info.insert("clientToken".to_owned(), clip::echo(&token));
        }
        let mut details = ErrorDetails::new();
        error.describe(&mut details, &mut info, &mut metadata);
        let code = error.code();
        if let Some(delay) = error.retry_delay() {
            details.set_retry_info(Some(delay));
            // gRPC's own retry policy reads when to come back from a trailer, not from RetryInfo.
            if matches!(code, Code::ResourceExhausted | Code::Unavailable) {
                insert_header(
                    &mut metadata,
                    PUSHBACK_TRAILER,
                    &delay.as_millis().to_string(),
                );
            }
        }
        details.set_error_info(error.reason(), error.domain(), info);
        Self {
            code,
            message: error.to_string(),
            details: Box::new(details),
            metadata,
        }
    }
}

impl From<ErrorAnswer> for Status {
    fn from(answer: ErrorAnswer) -> Self {
        Status::with_error_details_and_metadata(
            answer.code,
            answer.message,
            *answer.details,
            answer.metadata,
        )
    }
}

/// A failure that is no call's (a request to another path): there is nothing to correlate.
impl From<CallError> for ErrorAnswer {
    fn from(error: CallError) -> Self {
        FailedCall {
            error,
            instance_id: String::new(),
            client_token: None,
            metadata: MetadataMap::new(),
        }
        .into()
    }
}

pub(crate) fn insert_header(metadata: &mut MetadataMap, name: &'static str, value: &str) {
    if let Ok(value) = value.parse() {
        metadata.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{FieldViolation, ValidationError},
        error::{ExistingAssociation, upstream_outcome},
        upstream::{UpstreamError, UpstreamErrorKind},
    };

    fn failed(error: CallError) -> Status {
        ErrorAnswer::from(FailedCall {
            error,
            instance_id: "inst".into(),
            client_token: Some("tok".into()),
            metadata: MetadataMap::new(),
        })
        .into()
    }

    fn upstream(kind: UpstreamErrorKind, code: Option<&str>) -> CallError {
        CallError::Upstream(UpstreamError {
            kind,
            aws_code: code.map(str::to_owned),
            message: "AWS said so".into(),
            request_id: code.map(|_| "req-1".to_owned()),
        })
    }

    #[test]
    fn throttling_is_resource_exhausted_with_retry_info_and_aws_metadata() {
        let status = failed(upstream(
            UpstreamErrorKind::Throttling,
            Some("ThrottlingException"),
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "AWS said so");
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(THROTTLED_RETRY_DELAY)
        );
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "THROTTLED");
        assert_eq!(info.domain, AWS_DOMAIN);
        assert_eq!(info.metadata["awsErrorCode"], "ThrottlingException");
        assert_eq!(info.metadata["awsRequestId"], "req-1");
        assert_eq!(info.metadata["clientToken"], "tok");
        assert_eq!(info.metadata["instanceId"], "inst");
        assert_eq!(details.request_info().unwrap().request_id, "req-1");
    }

    #[test]
    fn failures_before_aws_answered_are_the_facades_own() {
        let status = failed(upstream(UpstreamErrorKind::Transport, None));
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().domain, FACADE_DOMAIN);
        assert!(details.request_info().is_none());
    }

    #[test]
    fn validation_lists_every_field() {
        let status = failed(CallError::Invalid(ValidationError {
            violations: vec![
                FieldViolation {
                    field: "instance_id",
                    description: "is required".into(),
                },
                FieldViolation {
                    field: "client_token",
                    description: "too long".into(),
                },
            ],
        }));
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["instance_id", "client_token"]);
    }

    #[test]
    fn the_reason_logged_is_the_reason_answered_for_every_refusal() {
        use crate::error::EdgeRefusal;
        let errors = [
            upstream(UpstreamErrorKind::Throttling, Some("ThrottlingException")),
            CallError::Invalid(ValidationError { violations: vec![] }),
            CallError::DeadlineExceeded {
                budget: Duration::from_secs(1),
            },
            CallError::RateLimited {
                subject: "region:x".into(),
                description: "full".into(),
                retry_after: None,
                policy: None,
            },
            CallError::CallerRateLimited {
                caller: "c".into(),
                max_rate: 1.0,
                retry_after: Duration::from_secs(1),
            },
            CallError::ClientTokenReused,
            CallError::AlreadyAssociated {
                initial_contact_id: "a".into(),
                existing: ExistingAssociation::Remembered {
                    rehydration_type: "FROM_SEGMENT",
                    source_contact_id: "b".into(),
                    continued_from_contact_id: "c".into(),
                },
            },
            CallError::InstanceNotRouted {
                instance_id: "i".into(),
            },
            CallError::Overloaded,
            CallError::Unauthenticated,
            CallError::CallerNotAllowed { caller: "c".into() },
            CallError::ShuttingDown,
            CallError::CircuitOpen {
                retry_after: Duration::from_secs(1),
            },
            EdgeRefusal::MethodNotAllowed.into(),
            EdgeRefusal::UnsupportedContentType {
                content_type: "text/plain".into(),
            }
            .into(),
            EdgeRefusal::UnsupportedEncoding {
                encoding: "br".into(),
            }
            .into(),
            EdgeRefusal::ProtocolVersion.into(),
            EdgeRefusal::Timeout.into(),
            EdgeRefusal::TooLarge {
                limit: 1,
                inflated: true,
            }
            .into(),
            EdgeRefusal::Malformed("no".into()).into(),
            EdgeRefusal::ConnectionReset("reset".into()).into(),
            EdgeRefusal::NoSuchProcedure {
                path: "/x".into(),
                served: "/y",
            }
            .into(),
        ];
        let mut reasons = std::collections::HashSet::new();
        for error in errors {
            let logged = error.reason();
            let answered = failed(error)
                .get_error_details()
                .error_info()
                .unwrap()
                .reason
                .clone();
            assert_eq!(logged, answered);
            assert!(reasons.insert(logged), "{logged} names two failures");
        }
    }

    #[test]
    fn an_association_aws_reports_and_the_facade_forgot_is_already_associated_not_remembered() {
        let status = failed(CallError::AlreadyAssociated {
            initial_contact_id: "a".into(),
            existing: ExistingAssociation::Forgotten {
                continued_from_contact_id: Some("c".into()),
                aws_request_id: Some("req-9".into()),
            },
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "ALREADY_ASSOCIATED");
        assert_eq!(info.metadata["remembered"], "false");
        assert_eq!(info.metadata["continuedFromContactId"], "c");
        assert_eq!(info.metadata["awsRequestId"], "req-9");
        assert!(details.precondition_failure().is_some());
        assert!(status.message().contains("treat the association as done"));
    }

    #[test]
    fn each_kind_has_the_documented_code() {
        use UpstreamErrorKind::*;
        let expected = [
            (InvalidParameter, Code::InvalidArgument),
            (InvalidRequest, Code::FailedPrecondition),
            (ResourceNotFound, Code::NotFound),
            (AccessDenied, Code::PermissionDenied),
            (Throttling, Code::ResourceExhausted),
            (ServiceUnavailable, Code::Unavailable),
            (Transport, Code::Unavailable),
            (Credentials, Code::Internal),
            (InvalidResponse, Code::Internal),
            (Unrecognized, Code::Unknown),
        ];
        for (kind, code) in expected {
            assert_eq!(upstream_outcome(kind).0, code, "{kind:?}");
        }
    }
}
