//! What `connect-facade check` asks AWS, with no side effect: who the facade is (STS
//! `GetCallerIdentity`, and the `Date` of AWS's answer, for the clock), and whether a route's
//! identity may call the operation on an instance.
//!
//! The permission is asked by calling the operation itself with contact ids that cannot exist
//! (fresh random UUIDs): IAM judges the call on the instance's ARN before Connect looks anything
//! up, so AWS answers `AccessDeniedException` without the permission and
//! `ResourceNotFoundException` with it, whose message says whether the instance or the contact was
//! missing. Nothing is associated: there is no such contact. IAM's policy simulator would answer
//! the same question but needs `iam:SimulatePrincipalPolicy`, which the facade's role should not
//! hold.

use std::{sync::Arc, time::SystemTime};

use aws_config::SdkConfig;
use aws_sdk_connect::types::RehydrationType;
use aws_sdk_sts::{
    config::{
        ConfigBag, Intercept, RuntimeComponents,
        interceptors::BeforeDeserializationInterceptorContextRef,
    },
    error::{BoxError, DisplayErrorContext, ProvideErrorMetadata},
};
use parking_lot::Mutex;

use super::{ConnectUpstream, UpstreamError};

/// Who AWS says the facade is.
#[derive(Clone, Debug)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    /// AWS's clock, from the answer's `Date`.
    pub server_date: Option<SystemTime>,
}

/// STS `GetCallerIdentity` with `config`'s credentials; the error as AWS (or the SDK) gave it.
pub async fn caller_identity(config: &SdkConfig) -> Result<CallerIdentity, String> {
    let date = ServerDate::default();
    let answer = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .customize()
        .interceptor(date.clone())
        .send()
        .await;
    match answer {
        Ok(output) => Ok(CallerIdentity {
            account: output.account.unwrap_or_default(),
            arn: output.arn.unwrap_or_default(),
            server_date: date.get(),
        }),
        Err(error) => Err(match (error.code(), error.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => DisplayErrorContext(&error).to_string(),
        }),
    }
}

/// Records the `Date` header of the answer.
#[derive(Clone, Debug, Default)]
struct ServerDate(Arc<Mutex<Option<SystemTime>>>);

impl ServerDate {
    fn get(&self) -> Option<SystemTime> {
        *self.0.lock()
    }
}

impl Intercept for ServerDate {
    fn name(&self) -> &'static str {
        "ServerDate"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(date) = context.response().headers().get("date") {
            *self.0.lock() = httpdate::parse_http_date(date).ok();
        }
        Ok(())
    }
}

/// What AWS answered the permission probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The answer; an `Ok` would mean the random contact existed.
    pub outcome: Result<(), UpstreamError>,
    /// AWS's clock, from the answer's `Date`.
    pub server_date: Option<SystemTime>,
}

impl ConnectUpstream {
    /// Calls the operation on `instance_id` for contacts that cannot exist (see the module's
    /// documentation).
    pub async fn probe(&self, instance_id: &str) -> Probe {
        let unknown = || uuid::Uuid::new_v4().to_string();
        let answer = self
            .client
            .create_persistent_contact_association()
            .instance_id(instance_id)
            .initial_contact_id(unknown())
            .rehydration_type(RehydrationType::FromSegment)
            .source_contact_id(unknown())
            .client_token(unknown())
            .send()
            .await;
        match answer {
            Ok(_) => Probe {
                outcome: Ok(()),
                server_date: None,
            },
            Err(error) => Probe {
                server_date: error
                    .raw_response()
                    .and_then(|response| response.headers().get("date"))
                    .and_then(|date| httpdate::parse_http_date(date).ok()),
                outcome: Err(error.into()),
            },
        }
    }
}
