//! The account key: which AWS account and region a call counts against. The quota's bucket, the
//! circuit breaker and the per-key metrics are per account key, so two routes to the same account
//! and region share them.

use std::fmt;

/// An AWS account and region, or the region alone for the facade's own identity (whose account
/// is not known without asking AWS).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountKey(String);

impl AccountKey {
    pub fn new(account: Option<&str>, region: &str) -> Self {
        Self(match account {
            Some(account) => format!("{account}:{region}"),
            None => region.to_owned(),
        })
    }

    /// `ACCOUNT:REGION` (or `REGION`): the form of metrics labels, Redis keys and log lines, which
    /// dashboards and a running fleet depend on.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// As callers read it, in a QuotaFailure's subject: `account:ACCOUNT,region:REGION`, or
/// `region:REGION`.
impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once(':') {
            Some((account, region)) => write!(f, "account:{account},region:{region}"),
            None => write!(f, "region:{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_read_the_account_and_the_region_by_name() {
        let routed = AccountKey::new(Some("222222222222"), "eu-west-2");
        assert_eq!(routed.as_str(), "222222222222:eu-west-2");
        assert_eq!(routed.to_string(), "account:222222222222,region:eu-west-2");
        let own = AccountKey::new(None, "us-east-1");
        assert_eq!(own.as_str(), "us-east-1");
        assert_eq!(own.to_string(), "region:us-east-1");
    }
}
