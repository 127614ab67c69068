//! The checks that ask AWS (or the simulator standing in for it): the region, the credentials the
//! default chain resolves, who STS says the facade is, the clock against AWS's, and per route its
//! role and its permission on each instance it serves.

use std::{
    future::ready,
    time::{Duration, SystemTime},
};

use aws_credential_types::provider::ProvideCredentials;

use super::{Checks, Options, Verdict, bounded};
use crate::{
    app,
    auth::Callers,
    config::ServeConfig,
    routes::spec::{RouteSpec, route_for},
    upstream::{
        CallerIdentity, Probe, RouteTarget, UpstreamBase, UpstreamError, UpstreamErrorKind,
        caller_identity,
    },
};

/// SigV4 refuses a request signed this far from AWS's clock.
const SIGV4_SKEW: Duration = Duration::from_secs(300);
/// Past this, the clock is worth fixing before it reaches [`SIGV4_SKEW`].
const SKEW_WARNING: Duration = Duration::from_secs(60);

/// Runs the AWS checks; answers the routes (`None` when they could not be built), for the callers'
/// check.
pub(super) async fn check(
    checks: &mut Checks,
    config: &ServeConfig,
    (options, callers): (&Options, Option<&Callers>),
) -> Option<Vec<RouteSpec>> {
    let timeout = checks.step_timeout;
    // The embedded simulator, started as `serve` starts it, so `check --simulator` checks the
    // chain `serve --simulator` would use.
    let simulator = match app::embedded_simulator(config).await {
        Ok(simulator) => simulator,
        Err(error) => {
            let failed = Verdict::fail(error.to_string(), "see the simulator's fixtures file");
            checks.run("simulator", "region", ready(failed)).await;
            return None;
        }
    };
    let settings = app::upstream_settings(config, simulator.as_ref());
    let base = match bounded(
        timeout,
        "the AWS configuration chain",
        UpstreamBase::load(&settings),
    )
    .await
    {
        Ok(base) => base,
        Err(failed) => {
            checks.run("region", "region", ready(failed)).await;
            return None;
        }
    };

    let mut routes = None;
    checks
        .run("region", "region", async {
            match app::route_specs(config, &base) {
                Ok(specs) => {
                    let verdict =
                        Verdict::Pass(describe_routes(&specs, &base, simulator.is_some()));
                    routes = Some(specs);
                    verdict
                }
                Err(error) => Verdict::fail(
                    error.to_string(),
                    "set AWS_REGION (or a region in the AWS_PROFILE's config), or pass --region",
                ),
            }
        })
        .await;
    let specs = routes?;
    let first_region = specs[0].region.clone();

    let default_target = RouteTarget {
        region: &first_region,
        role_arn: None,
        external_id: None,
        endpoint_url: None,
    };
    let provider = base.credentials(default_target).await;
    let resolved = checks
        .run("credentials", "credentials", async {
            match bounded(
                timeout,
                "the credential chain",
                provider.provide_credentials(),
            )
            .await
            {
                Ok(Ok(credentials)) => Verdict::Pass(format!(
                    "from the {} provider, access key {}",
                    provider_name(&credentials),
                    clip_key(credentials.access_key_id())
                )),
                Ok(Err(error)) => Verdict::fail(
                    format!(
                        "no credentials: {}; the checks that call AWS did not run",
                        aws_sdk_connect::error::DisplayErrorContext(&error)
                    ),
                    "give the facade an identity: IRSA or EKS Pod Identity in Kubernetes, \
                     AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                ),
                Err(failed) => failed,
            }
        })
        .await;
    if !resolved {
        return Some(specs);
    }

    let mut identity = None;
    checks
        .run("identity", "identity", async {
            let sts = base.config_in(&first_region);
            match bounded(timeout, "STS", caller_identity(&sts)).await {
                Ok(Ok(found)) => {
                    let verdict =
                        Verdict::Pass(format!("account {} as {}", found.account, found.arn));
                    identity = Some(found);
                    verdict
                }
                Ok(Err(error)) => Verdict::fail(
                    format!("STS GetCallerIdentity refused the credentials: {error}"),
                    "the credentials resolve but AWS does not accept them: check they are \
                     current (a session token expires) and belong to this partition",
                ),
                Err(failed) => failed,
            }
        })
        .await;
    let Some(identity) = identity else {
        return Some(specs);
    };
    checks
        .run(
            "clock",
            "clock",
            ready(clock(identity.server_date, SystemTime::now())),
        )
        .await;

    for spec in &specs {
        let target = RouteTarget {
            region: &spec.region,
            role_arn: spec.role_arn.as_deref(),
            external_id: spec.external_id.as_deref(),
            endpoint_url: spec.endpoint_url.as_deref(),
        };
        if let Some(role) = &spec.role_arn {
            let provider = base.credentials(target).await;
            let assumed = checks
                .run(
                    format!("route {}: assume {role}", spec.name),
                    "roles",
                    assume_role(timeout, &provider, spec, &identity),
                )
                .await;
            if !assumed {
                continue;
            }
        }
        let instances = instances_for(spec, &specs, callers, &options.instances);
        if instances.is_empty() {
            let unchecked = Verdict::warn(
                format!(
                    "route {} serves instances no file names (`*`): its permission could not be \
                     checked",
                    spec.name
                ),
                "name an instance it serves: connect-facade check --instance INSTANCE_ID",
            );
            checks
                .run(
                    format!("route {}: permission", spec.name),
                    "permission",
                    ready(unchecked),
                )
                .await;
            continue;
        }
        let client = base.route(target).await;
        for instance in instances {
            checks
                .run(
                    format!("route {}: instance {instance}", spec.name),
                    "permission",
                    async {
                        match bounded(timeout, "Amazon Connect", client.probe(&instance)).await {
                            Ok(probe) => judge(&probe, &instance, spec, &identity),
                            Err(failed) => failed,
                        }
                    },
                )
                .await;
            if config.quota.reconcile_associations {
                checks
                    .run(
                        format!("route {}: instance {instance}: DescribeContact", spec.name),
                        "permission",
                        async {
                            let unknown = uuid::Uuid::new_v4().to_string();
                            let described = client.contact_links(&instance, &unknown);
                            match bounded(timeout, "Amazon Connect", described).await {
                                Ok(answer) => judge_describe(answer, &instance, spec, &identity),
                                Err(failed) => failed,
                            }
                        },
                    )
                    .await;
            }
        }
    }
    Some(specs)
}

/// The routes, their regions and where their calls go.
fn describe_routes(specs: &[RouteSpec], base: &UpstreamBase, simulator: bool) -> String {
    let endpoint = match base.endpoint_url() {
        Some(url) if simulator => format!("the embedded simulator at {url}"),
        Some(url) => url.to_owned(),
        None => "AWS's endpoints".to_owned(),
    };
    let routes: Vec<String> = specs
        .iter()
        .map(|spec| format!("{} in {}", spec.name, spec.region))
        .collect();
    format!("{} (calls go to {endpoint})", routes.join(", "))
}

/// Which provider of the chain answered. `Credentials` has no getter for it, only its `Debug`
/// (which redacts the secret), so it is read from there.
fn provider_name(credentials: &aws_credential_types::Credentials) -> String {
    let shown = format!("{credentials:?}");
    shown
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "unnamed".to_owned(), |(name, _)| name.to_owned())
}

/// An access key id's ends: enough to tell keys apart in a log, not to use one.
fn clip_key(key: &str) -> String {
    if key.len() <= 8 {
        return "****".to_owned();
    }
    format!("{}…{}", &key[..4], &key[key.len() - 4..])
}

/// The clock against AWS's, from the `Date` of its answer (one-second resolution).
fn clock(server: Option<SystemTime>, local: SystemTime) -> Verdict {
    let Some(server) = server else {
        return Verdict::warn(
            "AWS's answer carried no Date: the clock could not be compared",
            "run NTP (chrony) on the node",
        );
    };
    let (skew, ahead) = match local.duration_since(server) {
        Ok(skew) => (skew, true),
        Err(behind) => (behind.duration(), false),
    };
    let described = format!(
        "this clock is {}s {} AWS's",
        skew.as_secs(),
        if ahead { "ahead of" } else { "behind" }
    );
    let fix = "synchronise the node's clock (NTP, chrony): AWS refuses requests signed more than 5 \
               minutes away from its time";
    if skew >= SIGV4_SKEW {
        Verdict::fail(described, fix)
    } else if skew >= SKEW_WARNING {
        Verdict::warn(described, fix)
    } else {
        Verdict::Pass(format!("{described} (SigV4 allows 300s)"))
    }
}

async fn assume_role(
    timeout: Duration,
    provider: &aws_credential_types::provider::SharedCredentialsProvider,
    spec: &RouteSpec,
    identity: &CallerIdentity,
) -> Verdict {
    match bounded(timeout, "STS", provider.provide_credentials()).await {
        Ok(Ok(credentials)) => Verdict::Pass(match credentials.expiry() {
            Some(expiry) => format!(
                "credentials issued until {}",
                humantime::format_rfc3339_seconds(expiry)
            ),
            None => "credentials issued".to_owned(),
        }),
        Ok(Err(error)) => {
            let external_id = if spec.external_id.is_some() {
                ", with the condition sts:ExternalId equal to the route's external_id"
            } else {
                ""
            };
            Verdict::fail(
                aws_sdk_connect::error::DisplayErrorContext(&error).to_string(),
                format!(
                    "the role must exist and its trust policy must let {} call sts:AssumeRole{external_id}; \
                     the facade's own policy needs sts:AssumeRole on the role",
                    identity.arn
                ),
            )
        }
        Err(failed) => failed,
    }
}

/// The instances to probe for `spec`: those it names, those callers name that it serves, and
/// those given with `--instance` that it serves; in that order, once each.
fn instances_for(
    spec: &RouteSpec,
    specs: &[RouteSpec],
    callers: Option<&Callers>,
    asked: &[String],
) -> Vec<String> {
    let served = |id: &&String| route_for(specs, id).is_some_and(|r| r.name == spec.name);
    let named = spec.instances.iter().filter(|id| *id != "*");
    let by_callers = callers
        .into_iter()
        .flat_map(|callers| callers.instances().flat_map(|(_, ids)| ids.iter()))
        .filter(|id| *id != "*")
        .filter(served);
    let by_flag = asked.iter().filter(served);
    let mut instances: Vec<String> = Vec::new();
    for id in named.chain(by_callers).chain(by_flag) {
        if !instances.contains(id) {
            instances.push(id.clone());
        }
    }
    instances
}

/// What DescribeContact on a contact that cannot exist says of `--reconcile-associations`'
/// permission: ResourceNotFound is past IAM.
fn judge_describe(
    answer: Result<crate::upstream::ContactLinks, crate::upstream::UpstreamError>,
    instance: &str,
    spec: &RouteSpec,
    identity: &CallerIdentity,
) -> Verdict {
    let error = match answer {
        Ok(_) => return Verdict::Pass("may call DescribeContact".to_owned()),
        Err(error) => error,
    };
    match error.kind {
        UpstreamErrorKind::ResourceNotFound | UpstreamErrorKind::InvalidParameter => {
            Verdict::Pass(format!(
                "may call DescribeContact (--reconcile-associations; AWS: {})",
                error.message
            ))
        }
        UpstreamErrorKind::AccessDenied => {
            let account = spec.account().unwrap_or(&identity.account);
            Verdict::fail(
                format!(
                    "--reconcile-associations needs DescribeContact: AccessDeniedException: {}",
                    error.message
                ),
                format!(
                    "allow connect:DescribeContact on arn:aws:connect:{}:{account}:instance/{instance}/contact/* \
                     in the policy of {}: deploy/iam-policy-reconcile.json; or turn \
                     --reconcile-associations off (forgotten associations are then answered \
                     ALREADY_ASSOCIATED without asking AWS which chat they continue)",
                    spec.region,
                    spec.role_arn.as_deref().unwrap_or(&identity.arn)
                ),
            )
        }
        _ => Verdict::warn(
            format!("DescribeContact could not be judged: {}", described(&error)),
            "see the instance's line above",
        ),
    }
}

/// What the permission probe's answer says (see [`crate::upstream::Probe`]).
fn judge(probe: &Probe, instance: &str, spec: &RouteSpec, identity: &CallerIdentity) -> Verdict {
    let error = match &probe.outcome {
        Ok(()) => {
            return Verdict::Pass(
                "may call CreatePersistentContactAssociation (AWS accepted the probe)".to_owned(),
            );
        }
        Err(error) => error,
    };
    let account = spec.account().unwrap_or(&identity.account);
    let resource = format!(
        "arn:aws:connect:{}:{account}:instance/{instance}/contact/*",
        spec.region
    );
    match error.kind {
        UpstreamErrorKind::ResourceNotFound => match missing(error) {
            Missing::Contact => Verdict::Pass(format!(
                "may call CreatePersistentContactAssociation (AWS: {})",
                error.message
            )),
            Missing::Instance => Verdict::fail(
                format!(
                    "no instance {instance} in account {account}, region {}: {}",
                    spec.region, error.message
                ),
                format!(
                    "check the instance id, and that route {} names the account (role_arn) and \
                     region the instance lives in",
                    spec.name
                ),
            ),
            Missing::Unknown => Verdict::warn(
                format!("AWS answered ResourceNotFoundException: {}", error.message),
                "the permission is held; check the instance id",
            ),
        },
        // Parameters are judged after IAM: the identity got past it.
        UpstreamErrorKind::InvalidParameter | UpstreamErrorKind::InvalidRequest => {
            Verdict::Pass(format!(
                "may call CreatePersistentContactAssociation (AWS: {})",
                error.message
            ))
        }
        UpstreamErrorKind::AccessDenied => Verdict::fail(
            format!("AccessDeniedException: {}", error.message),
            format!(
                "allow connect:CreatePersistentContactAssociation on {resource} (and on the \
                 instance's own ARN) in the policy of {}: deploy/iam-policy.json",
                spec.role_arn.as_deref().unwrap_or(&identity.arn)
            ),
        ),
        UpstreamErrorKind::Throttling => Verdict::warn(
            "AWS throttled the probe: the permission could not be judged",
            "run the check again in a moment",
        ),
        UpstreamErrorKind::Credentials => Verdict::fail(
            format!("AWS refused the credentials: {}", error.message),
            "see the credentials and identity lines",
        ),
        UpstreamErrorKind::Transport => Verdict::fail(
            format!("Amazon Connect could not be reached: {}", error.message),
            "check the endpoint (route endpoint_url, --endpoint-url, AWS_ENDPOINT_URL) and the \
             network between here and it",
        ),
        _ => Verdict::fail(
            described(error),
            "AWS answered something the probe does not expect: see the message",
        ),
    }
}

fn described(error: &UpstreamError) -> String {
    match &error.aws_code {
        Some(code) => format!("{code}: {}", error.message),
        None => error.message.clone(),
    }
}

/// Which resource a ResourceNotFoundException's message says is missing.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    Instance,
    Contact,
    Unknown,
}

fn missing(error: &UpstreamError) -> Missing {
    let message = error.message.to_ascii_lowercase();
    if message.contains("contact") {
        Missing::Contact
    } else if message.contains("instance") {
        Missing::Instance
    } else {
        Missing::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found(message: &str) -> UpstreamError {
        UpstreamError {
            kind: UpstreamErrorKind::ResourceNotFound,
            aws_code: Some("ResourceNotFoundException".into()),
            message: message.into(),
            request_id: None,
        }
    }

    #[test]
    fn a_not_found_answer_says_whether_the_instance_or_the_contact_is_missing() {
        assert_eq!(
            missing(&not_found("Contact 5f0c… not found")),
            Missing::Contact
        );
        assert_eq!(
            missing(&not_found("Instance abc not found in this region")),
            Missing::Instance
        );
        assert_eq!(missing(&not_found("Not found")), Missing::Unknown);
    }

    #[test]
    fn the_clock_fails_past_sigv4s_skew_and_warns_past_a_minute() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(clock(Some(now - Duration::from_secs(2)), now).passed());
        assert!(matches!(
            clock(Some(now + Duration::from_secs(90)), now),
            Verdict::Warn { message, .. } if message.contains("90s behind")
        ));
        assert!(matches!(
            clock(Some(now - Duration::from_secs(400)), now),
            Verdict::Fail { message, .. } if message.contains("400s ahead of")
        ));
        assert!(matches!(clock(None, now), Verdict::Warn { .. }));
    }

    #[test]
    fn an_access_key_shows_only_its_ends() {
        assert_eq!(clip_key("AKIDCONNECTFACADESIM"), "AKID…ESIM");
        assert_eq!(clip_key("short"), "****");
    }
}
