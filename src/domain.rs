//! Validated requests: a caller's input is parsed once, here, into a type that cannot exist unless it
//! respects the limits of Amazon Connect's API model, so nothing downstream checks again.
//!
//! The limits mirror the `connect` 2017-08-08 model for CreatePersistentContactAssociation: InstanceId
//! 1–100 characters, contact ids 1–256, ClientToken at most 500, RehydrationType required. Lengths count
//! Unicode scalar values, as Smithy's `@length` does. Ids are otherwise passed through untouched (slashes,
//! spaces and non-ASCII included): escaping them for the URL is the SDK's job.
//!
//! Every violation is reported, not just the first, so a caller fixes a request in one round trip.
//! Violations are named by the proto field, which is the name the caller knows.

use std::fmt;

/// How much of a past chat the new chat continues from (see the proto for the C1/C2/C3 example).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RehydrationType {
    /// Continue the whole past session, given its first contact.
    EntirePastSession,
    /// Continue from one segment of the past session.
    FromSegment,
}

impl RehydrationType {
    /// The value Amazon Connect uses on the wire.
    pub(crate) fn as_aws_str(self) -> &'static str {
        match self {
            RehydrationType::EntirePastSession => "ENTIRE_PAST_SESSION",
            RehydrationType::FromSegment => "FROM_SEGMENT",
        }
    }
}

/// The API model's limits, in Unicode scalar values.
pub(crate) mod limits {
    pub(crate) const INSTANCE_ID_MAX: usize = 100;
    pub(crate) const CONTACT_ID_MAX: usize = 256;
    pub(crate) const CLIENT_TOKEN_MAX: usize = 500;
}

/// An idempotency token: the caller's own, or one generated for a caller that sent none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientToken {
    value: String,
    generated: bool,
}

impl ClientToken {
    /// A fresh random token (a UUID v4), for a caller that sent none. uuid's `fast-rng` draws it
    /// from a thread-local CSPRNG: without it every call made a `getrandom` system call.
    pub(crate) fn generate() -> Self {
        Self {
            value: uuid::Uuid::new_v4().to_string(),
            generated: true,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.value
    }

    /// Whether the facade made this token up (the caller sent none).
    pub(crate) fn was_generated(&self) -> bool {
        self.generated
    }
}

impl fmt::Display for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// A CreatePersistentContactAssociation request that respects every limit of the API model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociationRequest {
    instance_id: String,
    initial_contact_id: String,
    rehydration_type: RehydrationType,
    source_contact_id: String,
    client_token: ClientToken,
}

/// The fields of a request as the caller sent them, before validation.
#[derive(Clone, Debug, Default)]
pub(crate) struct UnvalidatedRequest {
    pub instance_id: String,
    pub initial_contact_id: String,
    /// `None` when the caller left it unspecified or sent a value this version does not know.
    pub rehydration_type: Option<RehydrationType>,
    pub source_contact_id: String,
    /// Empty means "generate one".
    pub client_token: String,
}

impl AssociationRequest {
    /// Parses a caller's request, reporting every violated field at once. A refused request is
    /// handed back with the error, so its instance and token can be reported without copying
    /// them beforehand on every call.
    pub(crate) fn parse(raw: UnvalidatedRequest) -> Result<Self, Box<Refused>> {
        let mut violations = Vec::new();
        check_length(
            &mut violations,
            "instance_id",
            &raw.instance_id,
            1,
            limits::INSTANCE_ID_MAX,
        );
        check_length(
            &mut violations,
            "initial_contact_id",
            &raw.initial_contact_id,
            1,
            limits::CONTACT_ID_MAX,
        );
        check_length(
            &mut violations,
            "source_contact_id",
            &raw.source_contact_id,
            1,
            limits::CONTACT_ID_MAX,
        );
        check_length(
            &mut violations,
            "client_token",
            &raw.client_token,
            0,
            limits::CLIENT_TOKEN_MAX,
        );
        if raw.rehydration_type.is_none() {
            violations.push(FieldViolation {
                field: "rehydration_type",
                description: "is required: set REHYDRATION_TYPE_ENTIRE_PAST_SESSION or \
                              REHYDRATION_TYPE_FROM_SEGMENT"
                    .to_owned(),
            });
        }
        match raw.rehydration_type {
            Some(rehydration_type) if violations.is_empty() => Ok(Self {
                instance_id: raw.instance_id,
                initial_contact_id: raw.initial_contact_id,
                rehydration_type,
                source_contact_id: raw.source_contact_id,
                client_token: if raw.client_token.is_empty() {
                    ClientToken::generate()
                } else {
                    ClientToken {
                        value: raw.client_token,
                        generated: false,
                    }
                },
            }),
            _ => Err(Box::new(Refused {
                error: ValidationError { violations },
                request: raw,
            })),
        }
    }

    pub(crate) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub(crate) fn initial_contact_id(&self) -> &str {
        &self.initial_contact_id
    }

    pub(crate) fn rehydration_type(&self) -> RehydrationType {
        self.rehydration_type
    }

    pub(crate) fn source_contact_id(&self) -> &str {
        &self.source_contact_id
    }

    pub(crate) fn client_token(&self) -> &ClientToken {
        &self.client_token
    }
}

fn check_length(
    violations: &mut Vec<FieldViolation>,
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) {
    let length = value.chars().count();
    if length < min {
        violations.push(FieldViolation {
            field,
            description: "is required and must not be empty".to_owned(),
        });
    } else if length > max {
        violations.push(FieldViolation {
            field,
            description: format!("must be at most {max} characters, got {length}"),
        });
    }
}

/// One field that breaks a limit, named by its proto field name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

/// A request [`AssociationRequest::parse`] refused, and why.
#[derive(Clone, Debug)]
pub(crate) struct Refused {
    pub error: ValidationError,
    pub request: UnvalidatedRequest,
}

/// All the ways a request breaks the API model's limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", summary(.violations))]
pub struct ValidationError {
    pub violations: Vec<FieldViolation>,
}

fn summary(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> UnvalidatedRequest {
        UnvalidatedRequest {
            instance_id: "instance".into(),
            initial_contact_id: "new-chat".into(),
            rehydration_type: Some(RehydrationType::FromSegment),
            source_contact_id: "C2".into(),
            client_token: String::new(),
        }
    }

    fn fields(err: ValidationError) -> Vec<&'static str> {
        err.violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn an_empty_request_names_every_required_field() {
        let err = AssociationRequest::parse(UnvalidatedRequest::default()).unwrap_err();
        assert_eq!(
            fields(err.error),
            [
                "instance_id",
                "initial_contact_id",
                "source_contact_id",
                "rehydration_type"
            ]
        );
    }

    #[test]
    fn limits_are_inclusive_and_count_characters_not_bytes() {
        let mut raw = valid();
        raw.instance_id = "é".repeat(limits::INSTANCE_ID_MAX);
        raw.initial_contact_id = "ü".repeat(limits::CONTACT_ID_MAX);
        raw.source_contact_id = "x".repeat(limits::CONTACT_ID_MAX);
        raw.client_token = "t".repeat(limits::CLIENT_TOKEN_MAX);
        assert!(AssociationRequest::parse(raw).is_ok());
    }

    #[test]
    fn one_character_over_each_limit_is_rejected() {
        let mut raw = valid();
        raw.instance_id = "i".repeat(limits::INSTANCE_ID_MAX + 1);
        raw.initial_contact_id = "c".repeat(limits::CONTACT_ID_MAX + 1);
        raw.source_contact_id = "c".repeat(limits::CONTACT_ID_MAX + 1);
        raw.client_token = "t".repeat(limits::CLIENT_TOKEN_MAX + 1);
        let err = AssociationRequest::parse(raw).unwrap_err().error;
        assert_eq!(
            fields(err.clone()),
            [
                "instance_id",
                "initial_contact_id",
                "source_contact_id",
                "client_token"
            ]
        );
        assert_eq!(
            err.violations[0].description,
            "must be at most 100 characters, got 101"
        );
    }

    #[test]
    fn a_missing_token_is_generated_and_a_given_one_kept() {
        let generated = AssociationRequest::parse(valid()).unwrap();
        assert!(generated.client_token().was_generated());
        assert!(uuid::Uuid::parse_str(generated.client_token().as_str()).is_ok());

        let mut raw = valid();
        raw.client_token = "caller-token".into();
        let kept = AssociationRequest::parse(raw).unwrap();
        assert_eq!(kept.client_token().as_str(), "caller-token");
        assert!(!kept.client_token().was_generated());
    }

    #[test]
    fn ids_pass_through_unchanged() {
        let mut raw = valid();
        raw.initial_contact_id = "a/b c?d#é".into();
        let parsed = AssociationRequest::parse(raw).unwrap();
        assert_eq!(parsed.initial_contact_id(), "a/b c?d#é");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Any Unicode at all, control characters and non-BMP included, up to `max` characters.
    fn any_text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
    }

    fn within(value: &str, min: usize, max: usize) -> bool {
        (min..=max).contains(&value.chars().count())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_and_accepts_exactly_what_the_limits_allow(
            instance_id in any_text(limits::INSTANCE_ID_MAX + 20),
            initial_contact_id in any_text(limits::CONTACT_ID_MAX + 20),
            source_contact_id in any_text(limits::CONTACT_ID_MAX + 20),
            client_token in any_text(limits::CLIENT_TOKEN_MAX + 20),
            rehydration_type in prop::option::of(prop_oneof![
                Just(RehydrationType::EntirePastSession),
                Just(RehydrationType::FromSegment),
            ]),
        ) {
            let mut expected = Vec::new();
            if !within(&instance_id, 1, limits::INSTANCE_ID_MAX) { expected.push("instance_id"); }
            if !within(&initial_contact_id, 1, limits::CONTACT_ID_MAX) { expected.push("initial_contact_id"); }
            if !within(&source_contact_id, 1, limits::CONTACT_ID_MAX) { expected.push("source_contact_id"); }
            if !within(&client_token, 0, limits::CLIENT_TOKEN_MAX) { expected.push("client_token"); }
            if rehydration_type.is_none() { expected.push("rehydration_type"); }
            let raw = UnvalidatedRequest {
                instance_id: instance_id.clone(),
                initial_contact_id: initial_contact_id.clone(),
                rehydration_type,
                source_contact_id: source_contact_id.clone(),
                client_token: client_token.clone(),
            };
            match AssociationRequest::parse(raw) {
                Ok(parsed) => {
                    prop_assert!(expected.is_empty());
                    prop_assert_eq!(parsed.instance_id(), instance_id.as_str());
                    prop_assert_eq!(parsed.initial_contact_id(), initial_contact_id.as_str());
                    prop_assert_eq!(parsed.source_contact_id(), source_contact_id.as_str());
                    if !client_token.is_empty() {
                        prop_assert_eq!(parsed.client_token().as_str(), client_token.as_str());
                    }
                }
                Err(refused) => {
                    let fields: Vec<_> = refused.error.violations.iter().map(|v| v.field).collect();
                    prop_assert_eq!(fields, expected);
                    prop_assert_eq!(refused.request.instance_id, instance_id);
                }
            }
        }
    }
}
