//! The call to Amazon Connect: one aws-sdk-connect client per route (one, without `--routes`), each
//! derived from one base configuration built at startup from aws-config's default chain (AWS_REGION,
//! AWS_PROFILE, web identity/IRSA, AWS_ENDPOINT_URL[_CONNECT], static keys), with `--region` and
//! `--endpoint-url` as overrides. A route's `endpoint_url`, else `--endpoint-url`, wins over the
//! environment's endpoint. Every client shares the base's HTTP client, so one connection pool.
//!
//! A route with a `role_arn` gets aws-config's AssumeRole provider over the base credentials (IRSA in
//! Kubernetes). Each client has an identity cache of its own, which refreshes the assumed credentials
//! before they expire; sharing one would hold at most 64 identities (smithy-rs #4607).
//!
//! The SDK's retry and timeout behaviour is set here and only here. The SDK's own retries are switched
//! off: a retry layer inside the SDK would multiply with any retry around it and could sleep past the
//! caller's deadline, so the facade owns retries above this module. Timeouts bound each attempt and
//! its connection set-up, so a dead endpoint costs a bounded time rather than the caller's whole deadline.
//! The SDK's stalled-stream protection is off too: it ends a body that moves no byte for 5 s, but this
//! operation's bodies are a few hundred bytes and the attempt timeout (5 s by default) already ends any
//! stalled attempt, while the protection's throughput tracking on every body poll cost about 2% of
//! the facade's instructions per call (docs/BENCHMARKS.md).

mod error;
mod preflight;

use std::time::Duration;

use aws_config::{
    BehaviorVersion, SdkConfig, identity::IdentityCache, retry::RetryConfig,
    stalled_stream_protection::StalledStreamProtectionConfig, sts::AssumeRoleProvider,
    timeout::TimeoutConfig,
};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_connect::{
    config::{Credentials, Region},
    operation::RequestId,
};

pub use error::{UpstreamError, UpstreamErrorKind, kind_of_code};
pub use preflight::{CallerIdentity, Probe, caller_identity};

use crate::domain::AssociationRequest;

/// How to reach Amazon Connect; anything left `None` comes from aws-config's default chain.
#[derive(Clone, Debug, Default)]
pub struct UpstreamSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// Fixed credentials, used instead of the default chain (the embedded simulator, tests).
    pub static_credentials: Option<StaticCredentials>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
}

/// An access key pair. Its `Debug` hides the secret so it can never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The AWS client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error(
        "no AWS region is configured: set AWS_REGION (or a region in the AWS_PROFILE's config), \
         or pass --region / CONNECT_FACADE_REGION; to run without AWS, use --simulator"
    )]
    NoRegion,
}

/// A successful association.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Association {
    pub continued_from_contact_id: String,
    /// `x-amzn-RequestId`.
    pub request_id: Option<String>,
}

/// The session name the facade's assumed-role sessions carry (AWS CloudTrail shows it).
pub const SESSION_NAME: &str = "connect-facade";

/// Where one route's calls go, and as whom.
#[derive(Clone, Copy, Debug)]
pub struct RouteTarget<'a> {
    pub region: &'a str,
    pub role_arn: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub endpoint_url: Option<&'a str>,
}

/// The configuration every route's client derives from.
#[derive(Clone, Debug)]
pub struct UpstreamBase {
    config: SdkConfig,
    /// `--endpoint-url`: explicit, so it wins over `AWS_ENDPOINT_URL_CONNECT` as a route's does.
    endpoint_url: Option<String>,
}

impl UpstreamBase {
    /// Resolves the default chain once, at startup.
    pub async fn load(settings: &UpstreamSettings) -> Self {
        Self {
            config: base_loader(settings).load().await,
            endpoint_url: settings.endpoint_url.clone(),
        }
    }

    /// Where Connect is called when no route says: `--endpoint-url`, else the environment's
    /// (`AWS_ENDPOINT_URL`); `None` for AWS's own endpoints.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url
            .as_deref()
            .or_else(|| self.config.endpoint_url())
    }

    /// The region of the default chain (or `--region`), if any.
    pub fn region(&self) -> Option<String> {
        self.config.region().map(ToString::to_string)
    }

    /// The client for one route. Assuming a role makes no call yet: the first call does, and the
    /// client's identity cache keeps the credentials and refreshes them before they expire.
    pub async fn route(&self, target: RouteTarget<'_>) -> ConnectUpstream {
        let mut builder = self
            .config
            .to_builder()
            .region(Region::new(target.region.to_owned()));
        if target.role_arn.is_some() {
            builder = builder.credentials_provider(self.credentials(target).await);
        }
        let mut config = aws_sdk_connect::config::Builder::from(&builder.build())
            .identity_cache(IdentityCache::lazy().build());
        // Set on the service's own configuration: the SDK takes `AWS_ENDPOINT_URL_CONNECT` over an
        // endpoint of the shared configuration, and explicit configuration must win over the
        // environment, as the AWS SDKs document for their own settings.
        if let Some(url) = target.endpoint_url.or(self.endpoint_url.as_deref()) {
            config = config.endpoint_url(url);
        }
        let config = config.build();
        ConnectUpstream {
            client: aws_sdk_connect::Client::from_conf(config),
        }
    }

    /// Whose credentials a route's calls are signed with: the base's (the default chain), or
    /// aws-config's AssumeRole provider over them for a route with a `role_arn`.
    pub async fn credentials(&self, target: RouteTarget<'_>) -> SharedCredentialsProvider {
        let base = self
            .config
            .credentials_provider()
            .unwrap_or_else(|| SharedCredentialsProvider::new(NoCredentials));
        let Some(role_arn) = target.role_arn else {
            return base;
        };
        // STS gets the SDK's standard retries: unlike Connect's calls, nothing above retries it.
        let sts = self
            .config
            .to_builder()
            .region(Region::new(target.region.to_owned()))
            .retry_config(RetryConfig::standard())
            .build();
        let mut provider = AssumeRoleProvider::builder(role_arn).session_name(SESSION_NAME);
        if let Some(id) = target.external_id {
            provider = provider.external_id(id);
        }
        SharedCredentialsProvider::new(provider.configure(&sts).build().await)
    }

    /// The base configuration in `region`, for the other AWS services the facade asks (STS).
    pub(crate) fn config_in(&self, region: &str) -> SdkConfig {
        self.config
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build()
    }
}

/// A chain that found nothing: only when the base was built without a credentials provider,
/// which aws-config's default loader never does.
#[derive(Debug)]
struct NoCredentials;

impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no credentials provider is configured",
            ),
        ))
    }
}

/// The default chain with the facade's retry, timeout and credential overrides.
fn base_loader(settings: &UpstreamSettings) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .operation_attempt_timeout(settings.attempt_timeout)
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(keys) = &settings.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            None,
            None,
            "connect-facade-static",
        ));
    }
    loader
}

/// One route's Amazon Connect client.
#[derive(Clone, Debug)]
pub struct ConnectUpstream {
    client: aws_sdk_connect::Client,
}

/// What DescribeContact says of a contact's persistent chat association.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactLinks {
    /// The contact its chat was rehydrated from ("For persistent chat, the RelatedContactId
    /// depicts the contactId used to source chat rehydration", the Administrator Guide): the
    /// association's ContinuedFromContactId.
    pub related_contact_id: Option<String>,
    /// The root contact of its contact tree: for a rehydrated chat, the first contact of the past
    /// session it continues.
    pub contact_association_id: Option<String>,
    /// `x-amzn-RequestId`.
    pub request_id: Option<String>,
}

impl ConnectUpstream {
    /// DescribeContact, for what a contact's association is (`--reconcile-associations`).
    pub async fn contact_links(
        &self,
        instance_id: &str,
        contact_id: &str,
    ) -> Result<ContactLinks, UpstreamError> {
        let output = self
            .client
            .describe_contact()
            .instance_id(instance_id)
            .contact_id(contact_id)
            .send()
            .await?;
        let request_id = output.request_id().map(str::to_owned);
        let contact = output.contact();
        Ok(ContactLinks {
            related_contact_id: contact
                .and_then(|c| c.related_contact_id())
                .map(str::to_owned),
            contact_association_id: contact
                .and_then(|c| c.contact_association_id())
                .map(str::to_owned),
            request_id,
        })
    }

    /// One attempt at CreatePersistentContactAssociation.
    pub async fn create_persistent_contact_association(
        &self,
        request: &AssociationRequest,
    ) -> Result<Association, UpstreamError> {
        let output = self
            .client
            .create_persistent_contact_association()
            .instance_id(request.instance_id())
            .initial_contact_id(request.initial_contact_id())
            .rehydration_type(request.rehydration_type().as_aws_str().into())
            .source_contact_id(request.source_contact_id())
            .client_token(request.client_token().as_str())
            .send()
            .await?;
        let request_id = output.request_id().map(str::to_owned);
        match output.continued_from_contact_id {
            Some(continued_from_contact_id) => Ok(Association {
                continued_from_contact_id,
                request_id,
            }),
            None => Err(UpstreamError {
                kind: UpstreamErrorKind::InvalidResponse,
                aws_code: None,
                message: "AWS answered without ContinuedFromContactId".to_owned(),
                request_id,
            }),
        }
    }
}
