//! Classifies what aws-sdk-connect returned into the few outcomes a caller must tell apart.
//!
//! The classification is by AWS error code, because the SDK's model marks none of this operation's
//! errors as retryable and because AWS sometimes answers codes that are not in the model (credential
//! errors such as `UnrecognizedClientException` come from the service front door, not the operation).
//! An answer with no error code, or one this facade does not know, is judged by its HTTP status: 5xx is
//! a service failure (transient); otherwise a missing code is an answer the facade cannot parse and an
//! unknown one is reported as such.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_connect::{
    error::{ProvideErrorMetadata, SdkError},
    operation::RequestId,
};

/// What went wrong with a call to Amazon Connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// `InvalidParameterException`: AWS refused a parameter.
    InvalidParameter,
    /// `InvalidRequestException`: the request is well formed but the contacts are not in a state
    /// that allows it (not a chat, not ended, already associated...).
    InvalidRequest,
    /// `ResourceNotFoundException`: the instance or a contact does not exist.
    ResourceNotFound,
    /// `AccessDeniedException`: the facade's AWS identity may not call this operation.
    AccessDenied,
    /// `ThrottlingException`: the account's request-rate quota is spent.
    Throttling,
    /// `InternalServiceException` or any other 5xx answer.
    ServiceUnavailable,
    /// The facade's own AWS credentials are missing, expired or refused.
    Credentials,
    /// AWS could not be reached: connection refused or reset, DNS, timeout.
    Transport,
    /// AWS answered something that cannot be parsed.
    InvalidResponse,
    /// AWS answered an error code this facade does not know.
    Unrecognized,
}

/// A failed call to Amazon Connect, with what AWS said about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    /// The exact AWS error code, when AWS answered with one.
    pub aws_code: Option<String>,
    /// AWS's own message where it gave one, else a description of the failure.
    pub message: String,
    /// `x-amzn-RequestId`, when AWS answered.
    pub request_id: Option<String>,
}

impl UpstreamError {
    /// Whether the error is an answer from AWS (as opposed to a failure before or around the call).
    pub(crate) fn answered_by_aws(&self) -> bool {
        self.aws_code.is_some() || self.request_id.is_some()
    }

    /// Whether AWS refused the association because the initial contact already has one: an
    /// `InvalidRequestException` whose message says so. The code alone is not enough (it also
    /// means "not an ended chat", "not an active chat", a token reused with other fields), so the
    /// message decides, in the forms [`ALREADY_ASSOCIATED_MESSAGES`] lists.
    pub(crate) fn is_already_associated(&self) -> bool {
        if self.aws_code.as_deref() != Some("InvalidRequestException") {
            return false;
        }
        let message = self.message.to_ascii_lowercase();
        ALREADY_ASSOCIATED_MESSAGES
            .iter()
            .any(|words| words.iter().all(|word| message.contains(word)))
    }
}

/// The words of each message form in which Amazon Connect says a contact already has its
/// persistent chat association (all of a form's words, in any case): the simulator's and the
/// documentation's ("Persistent chat is already enabled for contact …"), and the forms its sibling
/// operations use for the same state ("… already has a persistent chat …", "… is already
/// associated …", "association already exists").
const ALREADY_ASSOCIATED_MESSAGES: &[&[&str]] = &[
    &["persistent chat", "already enabled"],
    &["already has a persistent chat"],
    &["already", "associated"],
    &["association already exists"],
];

/// AWS codes that mean the caller's credentials (here: the facade's own) are not accepted.
const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "RequestExpired",
];

/// Classifies an AWS error code alone.
pub fn kind_of_code(code: &str) -> UpstreamErrorKind {
    match code {
        "InvalidParameterException" => UpstreamErrorKind::InvalidParameter,
        "InvalidRequestException" => UpstreamErrorKind::InvalidRequest,
        "ResourceNotFoundException" => UpstreamErrorKind::ResourceNotFound,
        "AccessDeniedException" => UpstreamErrorKind::AccessDenied,
        "ThrottlingException" => UpstreamErrorKind::Throttling,
        "InternalServiceException" | "ServiceUnavailableException" => {
            UpstreamErrorKind::ServiceUnavailable
        }
        code if CREDENTIAL_CODES.contains(&code) => UpstreamErrorKind::Credentials,
        _ => UpstreamErrorKind::Unrecognized,
    }
}

/// Any of the SDK's operation errors (the association, and DescribeContact for reconciliation).
impl<E> From<SdkError<E>> for UpstreamError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    fn from(err: SdkError<E>) -> Self {
        let request_id = err.request_id().map(str::to_owned);
        match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let error = service.err();
                let message = error.message().map(str::to_owned);
                match error.code() {
                    Some(code) => UpstreamError {
                        kind: match kind_of_code(code) {
                            UpstreamErrorKind::Unrecognized if (500..600).contains(&status) => {
                                UpstreamErrorKind::ServiceUnavailable
                            }
                            kind => kind,
                        },
                        aws_code: Some(code.to_owned()),
                        message: message.unwrap_or_else(|| code.to_owned()),
                        request_id,
                    },
                    None if (500..600).contains(&status) => UpstreamError {
                        kind: UpstreamErrorKind::ServiceUnavailable,
                        aws_code: None,
                        message: message.unwrap_or_else(|| format!("AWS answered HTTP {status}")),
                        request_id,
                    },
                    None => UpstreamError {
                        kind: UpstreamErrorKind::InvalidResponse,
                        aws_code: None,
                        message: format!(
                            "AWS answered HTTP {status} that could not be parsed: {}",
                            describe(&err)
                        ),
                        request_id,
                    },
                }
            }
            SdkError::ResponseError(_) => UpstreamError {
                kind: UpstreamErrorKind::InvalidResponse,
                aws_code: None,
                message: format!("AWS's answer could not be parsed: {}", describe(&err)),
                request_id,
            },
            _ if has_credentials_error(&err) => UpstreamError {
                kind: UpstreamErrorKind::Credentials,
                aws_code: None,
                message: format!(
                    "the facade has no usable AWS credentials: {}",
                    describe(&err)
                ),
                request_id,
            },
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => UpstreamError {
                kind: UpstreamErrorKind::Transport,
                aws_code: None,
                message: format!("Amazon Connect could not be reached: {}", describe(&err)),
                request_id,
            },
            // Construction failures mean the facade built a request the SDK refused: a bug here.
            _ => UpstreamError {
                kind: UpstreamErrorKind::InvalidResponse,
                aws_code: None,
                message: format!("the AWS request could not be built: {}", describe(&err)),
                request_id,
            },
        }
    }
}

fn has_credentials_error(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        next = err.source();
    }
    false
}

/// The whole chain of causes on one line: the SDK's top-level messages ("dispatch failure") say little.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(err);
    while let Some(err) = next {
        let text = err.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_request(message: &str) -> UpstreamError {
        UpstreamError {
            kind: UpstreamErrorKind::InvalidRequest,
            aws_code: Some("InvalidRequestException".to_owned()),
            message: message.to_owned(),
            request_id: Some("req-1".to_owned()),
        }
    }

    #[test]
    fn an_existing_association_is_told_by_the_code_and_the_message_together() {
        for message in [
            "Persistent chat is already enabled for contact new-chat-3",
            "persistent chat is ALREADY ENABLED for contact abc",
            "Contact abc already has a persistent chat association",
            "Contact abc is already associated with a persistent chat",
            "A persistent contact association already exists for this contact",
        ] {
            assert!(
                invalid_request(message).is_already_associated(),
                "{message}"
            );
        }
        for message in [
            "Contact C9 is not a chat contact that has ended",
            "Contact new-chat-3 is not an active chat contact",
            "ClientToken was already used with different parameters",
        ] {
            assert!(
                !invalid_request(message).is_already_associated(),
                "{message}"
            );
        }
        let mut other_code = invalid_request("Persistent chat is already enabled for contact x");
        other_code.aws_code = Some("InvalidParameterException".to_owned());
        assert!(
            !other_code.is_already_associated(),
            "the code must say it too"
        );
    }

    #[test]
    fn every_modelled_error_code_has_its_own_kind() {
        assert_eq!(
            kind_of_code("InvalidParameterException"),
            UpstreamErrorKind::InvalidParameter
        );
        assert_eq!(
            kind_of_code("InvalidRequestException"),
            UpstreamErrorKind::InvalidRequest
        );
        assert_eq!(
            kind_of_code("ResourceNotFoundException"),
            UpstreamErrorKind::ResourceNotFound
        );
        assert_eq!(
            kind_of_code("AccessDeniedException"),
            UpstreamErrorKind::AccessDenied
        );
        assert_eq!(
            kind_of_code("ThrottlingException"),
            UpstreamErrorKind::Throttling
        );
        assert_eq!(
            kind_of_code("InternalServiceException"),
            UpstreamErrorKind::ServiceUnavailable
        );
    }

    #[test]
    fn credential_rejections_are_told_apart_from_unknown_codes() {
        assert_eq!(
            kind_of_code("UnrecognizedClientException"),
            UpstreamErrorKind::Credentials
        );
        assert_eq!(
            kind_of_code("ExpiredTokenException"),
            UpstreamErrorKind::Credentials
        );
        assert_eq!(
            kind_of_code("SomethingNewException"),
            UpstreamErrorKind::Unrecognized
        );
    }
}
