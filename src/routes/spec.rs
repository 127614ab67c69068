//! The routes file (`--routes`): which Connect instances go to which AWS account and region, with
//! which identity and quota. Parsed and checked as a whole, so a file with any mistake is refused
//! with its name and line, and the routes in use stay.
//!
//! ```yaml
//! routes:
//!   - name: uk-prod                  # metrics, logs and errors name the route by this
//!     instances: ["11111111-2222-3333-4444-555555555555"]
//!     region: eu-west-2
//!     role_arn: arn:aws:iam::111122223333:role/connect-facade   # optional: assumed over the default chain
//!     external_id: "…"               # optional, with role_arn
//!     endpoint_url: "…"              # optional (VPC endpoints, tests)
//!     rate_limit: 2                  # optional: this account and region's quota (default: the flags')
//!     burst: 4
//!   - name: us-test
//!     instances: ["*"]               # the default route, optional
//!     region: us-east-1
//! ```

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use crate::quota::AccountKey;

/// One route, as written.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    pub instances: Vec<String>,
    pub region: String,
    #[serde(default)]
    pub role_arn: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Without the external id, which is a shared secret between the accounts.
impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSpec")
            .field("name", &self.name)
            .field("instances", &self.instances)
            .field("region", &self.region)
            .field("role_arn", &self.role_arn)
            .field("endpoint_url", &self.endpoint_url)
            .field("rate_limit", &self.rate_limit)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RouteSpec {
    /// The AWS account of its role, if it assumes one.
    pub fn account(&self) -> Option<&str> {
        self.role_arn.as_deref().and_then(role_arn_account)
    }

    /// The account and region this route's calls count against: the quota key, the adaptive rate
    /// and the circuit breaker are per key, so two routes to the same account and region share them.
    /// A route with no role uses the facade's own identity: its key is the region alone (the key a
    /// facade without routes uses).
    pub fn quota_key(&self) -> AccountKey {
        AccountKey::new(self.account(), &self.region)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    routes: Vec<RouteSpec>,
}

/// A routes file that cannot be used; the message names the file (and the line, for syntax).
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("cannot read routes file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid routes file {path}: {source}")]
    Parse {
        path: String,
        source: serde_norway::Error,
    },
    #[error("invalid routes file {path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// Reads and checks a routes file.
pub fn read(path: &Path) -> Result<Vec<RouteSpec>, RoutesError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&text, &name)
}

/// Parses and checks the YAML text of a routes file; `name` says where it came from in errors.
pub fn parse(text: &str, name: &str) -> Result<Vec<RouteSpec>, RoutesError> {
    let file: RoutesFile = serde_norway::from_str(text).map_err(|source| RoutesError::Parse {
        path: name.to_owned(),
        source,
    })?;
    check(&file.routes).map_err(|problem| RoutesError::Invalid {
        path: name.to_owned(),
        problem,
    })?;
    Ok(file.routes)
}

/// The route serving `instance_id` among `specs`, as the route table picks it: the route that
/// names it, else the default (`*`).
pub fn route_for<'a>(specs: &'a [RouteSpec], instance_id: &str) -> Option<&'a RouteSpec> {
    let names = |spec: &&RouteSpec, id: &str| spec.instances.iter().any(|i| i == id);
    specs
        .iter()
        .find(|spec| names(spec, instance_id))
        .or_else(|| specs.iter().find(|spec| names(spec, "*")))
}

/// The account of `arn:aws:iam::ACCOUNT:role/NAME` (any partition).
pub fn role_arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource))
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.len() > "role/".len()
                && resource.starts_with("role/") =>
        {
            Some(account)
        }
        _ => None,
    }
}

fn check(routes: &[RouteSpec]) -> Result<(), String> {
    if routes.is_empty() {
        return Err("no routes: list at least one (instances: [\"*\"] for all)".to_owned());
    }
    let mut names = HashMap::new();
    let mut instances: HashMap<&str, &str> = HashMap::new();
    let mut keys: HashMap<AccountKey, &RouteSpec> = HashMap::new();
    for route in routes {
        let name = route.name.as_str();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid_name {
            return Err(format!(
                "route name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.' (it names metrics)"
            ));
        }
        if names.insert(name, ()).is_some() {
            return Err(format!("route {name} is listed twice"));
        }
        if route.instances.is_empty() {
            return Err(format!(
                "route {name} lists no instances (use [\"*\"] for the default route)"
            ));
        }
        for instance in &route.instances {
            if instance.is_empty()
                || instance.chars().count() > crate::domain::limits::INSTANCE_ID_MAX
            {
                return Err(format!(
                    "route {name}: instance {instance:?} must be 1 to 100 characters"
                ));
            }
            if let Some(other) = instances.insert(instance, name) {
                return Err(if instance == "*" {
                    format!("routes {other} and {name} are both the default route (\"*\")")
                } else {
                    format!("instance {instance} is in routes {other} and {name}")
                });
            }
        }
        let region_ok = !route.region.is_empty()
            && route
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(format!(
                "route {name}: region {:?} is not an AWS region name",
                route.region
            ));
        }
        if let Some(arn) = &route.role_arn
            && role_arn_account(arn).is_none()
        {
            return Err(format!(
                "route {name}: role_arn {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ));
        }
        if route.external_id.is_some() && route.role_arn.is_none() {
            return Err(format!(
                "route {name}: external_id needs role_arn (it is sent when assuming the role)"
            ));
        }
        if let Some(url) = &route.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "route {name}: endpoint_url {url:?} must be an http:// or https:// URL"
            ));
        }
        if route
            .rate_limit
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(format!("route {name}: rate_limit must be above 0"));
        }
        if route.burst == Some(0) {
            return Err(format!("route {name}: burst must be at least 1"));
        }
        // One account and region has one quota: its routes must agree on it.
        let key = route.quota_key();
        if let Some(first) = keys.get(&key) {
            if (first.rate_limit, first.burst) != (route.rate_limit, route.burst) {
                return Err(format!(
                    "routes {} and {name} call the same account and region but give it different \
                     rate_limit or burst",
                    first.name
                ));
            }
        } else {
            keys.insert(key, route);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"routes:
  - name: uk-prod
    instances: ["11111111-2222-3333-4444-555555555555"]
    region: eu-west-2
    role_arn: arn:aws:iam::111122223333:role/connect-facade
    external_id: shared-secret
    rate_limit: 2
    burst: 4
  - name: us-test
    instances: ["*"]
    region: us-east-1
"#;

    fn problem(text: &str) -> String {
        parse(text, "routes.yaml").unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_parses_with_its_keys() {
        let routes = parse(GOOD, "routes.yaml").unwrap();
        assert_eq!(routes[0].quota_key().as_str(), "111122223333:eu-west-2");
        assert_eq!(routes[1].quota_key().as_str(), "us-east-1");
        assert_eq!(routes[0].account(), Some("111122223333"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = problem("routes:\n  - name: a\n    instances: [x]\n    regoin: eu-west-2\n");
        assert!(
            err.contains("routes.yaml") && err.contains("line 4"),
            "{err}"
        );
        assert!(problem("routes: []\n").contains("no routes"));
        let twice = "routes:\n  - {name: a, instances: [x], region: r}\n  - {name: b, instances: [x], region: r}\n";
        assert!(problem(twice).contains("instance x is in routes a and b"));
        let defaults = "routes:\n  - {name: a, instances: ['*'], region: r}\n  - {name: b, instances: ['*'], region: r}\n";
        assert!(problem(defaults).contains("both the default route"));
        let arn = "routes:\n  - {name: a, instances: [x], region: r, role_arn: 'arn:aws:iam::1:role/x'}\n";
        assert!(problem(arn).contains("not an IAM role ARN"));
        let external = "routes:\n  - {name: a, instances: [x], region: r, external_id: e}\n";
        assert!(problem(external).contains("needs role_arn"));
        let name = "routes:\n  - {name: 'a b', instances: [x], region: r}\n";
        assert!(problem(name).contains("route name"));
        let quota = "routes:\n  - {name: a, instances: [x], region: r, rate_limit: 2}\n  - {name: b, instances: [y], region: r, rate_limit: 3}\n";
        assert!(problem(quota).contains("different rate_limit"));
    }

    #[test]
    fn the_example_overlays_routes_are_valid() {
        let routes = parse(
            include_str!("../../deploy/k8s/overlays/example/routes.yaml"),
            "deploy/k8s/overlays/example/routes.yaml",
        )
        .unwrap();
        assert!(routes.iter().any(|r| r.instances == ["*"]));
    }

    #[test]
    fn debug_output_hides_the_external_id() {
        let routes = parse(GOOD, "routes.yaml").unwrap();
        assert!(!format!("{routes:?}").contains("shared-secret"));
    }
}
