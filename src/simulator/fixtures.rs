//! The simulator's world, as data: instances and their contacts, fault rules, the request-rate quota and
//! the accepted access keys. Read from YAML or JSON (JSON is YAML), documented in `fixtures/demo.yaml`,
//! which is also the built-in default.

use std::path::Path;

use serde::Deserialize;

use super::{
    faults::Fault,
    identity::{AccountFixture, role_account},
};

/// Everything the simulator starts from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    #[serde(default)]
    pub instances: Vec<InstanceFixture>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The account's request-rate quota; none means unlimited.
    #[serde(default)]
    pub quota: Option<QuotaFixture>,
    /// When not empty, requests signed with any other access key id are refused as AWS refuses
    /// unknown keys (403 UnrecognizedClientException).
    #[serde(default)]
    pub access_key_ids: Vec<String>,
    /// AWS accounts, with their long-term keys and the roles STS AssumeRole issues credentials
    /// for; an instance with an `account` answers only that account's principals.
    #[serde(default)]
    pub accounts: Vec<AccountFixture>,
}

/// An Amazon Connect instance and its contacts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFixture {
    pub id: String,
    #[serde(default)]
    pub contacts: Vec<ContactFixture>,
    /// For load tests: any initial contact id not listed is a fresh active chat on every call, and
    /// calls with one are not remembered (no replay, never "already enabled"), so one request can be
    /// sent any number of times and the simulator's memory stays flat.
    #[serde(default)]
    pub open_chats: bool,
    /// The account it lives in (one of `accounts`): calls signed by another account's principals
    /// are AccessDeniedException. Any account when absent.
    #[serde(default)]
    pub account: Option<String>,
    /// The region it lives in: calls signed for another region do not find it. Any when absent.
    #[serde(default)]
    pub region: Option<String>,
}

/// One contact: a segment of a customer interaction.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactFixture {
    pub id: String,
    pub channel: Channel,
    pub state: ContactState,
    /// The contact this one followed in the same session (after a transfer, a survey...).
    #[serde(default)]
    pub previous_contact_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    Chat,
    Voice,
    Task,
    Email,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContactState {
    Active,
    Ended,
}

/// A token bucket: `rate_per_second` sustained, `burst` at once (Connect's default is 2 and 5).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFixture {
    pub rate_per_second: f64,
    pub burst: u32,
}

/// The fixtures could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FixturesError {
    #[error("cannot read fixtures file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid fixtures in {path}: {source}")]
    Parse {
        path: String,
        source: serde_norway::Error,
    },
    #[error("invalid fixtures in {path}: {problem}")]
    Inconsistent { path: String, problem: String },
}

const DEMO: &str = include_str!("../../fixtures/demo.yaml");

impl Fixtures {
    /// The built-in fixtures: the documentation's C1/C2/C3 example and active chats to call from.
    pub fn demo() -> Self {
        Self::parse(DEMO, "built-in fixtures").expect("the built-in fixtures are valid")
    }

    /// The fixtures file at `path`, or the built-in demo when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, FixturesError> {
        path.map_or_else(|| Ok(Self::demo()), Self::from_path)
    }

    /// Reads a YAML or JSON fixtures file.
    pub fn from_path(path: &Path) -> Result<Self, FixturesError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixturesError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parses YAML or JSON text; `name` says where it came from in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, FixturesError> {
        let fixtures: Fixtures =
            serde_norway::from_str(text).map_err(|source| FixturesError::Parse {
                path: name.to_owned(),
                source,
            })?;
        fixtures
            .check()
            .map_err(|problem| FixturesError::Inconsistent {
                path: name.to_owned(),
                problem,
            })?;
        Ok(fixtures)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(quota) = self.quota
            && (!(quota.rate_per_second > 0.0 && quota.rate_per_second.is_finite())
                || quota.burst == 0)
        {
            return Err("quota needs rate_per_second > 0 and burst >= 1".to_owned());
        }
        for account in &self.accounts {
            for role in &account.roles {
                if role_account(&role.arn) != Some(account.id.as_str()) {
                    return Err(format!(
                        "role {} is not an IAM role ARN of account {}",
                        role.arn, account.id
                    ));
                }
            }
        }
        for instance in &self.instances {
            if let Some(account) = &instance.account
                && !self.accounts.iter().any(|a| &a.id == account)
            {
                return Err(format!(
                    "instance {} lives in account {account}, which `accounts` does not list",
                    instance.id
                ));
            }
            for contact in &instance.contacts {
                if let Some(previous) = &contact.previous_contact_id
                    && !instance.contacts.iter().any(|c| &c.id == previous)
                {
                    return Err(format!(
                        "contact {} of instance {} follows unknown contact {previous}",
                        contact.id, instance.id
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fixtures_hold_the_documented_session() {
        let demo = Fixtures::demo();
        let contacts = &demo.instances[0].contacts;
        let c3 = contacts.iter().find(|c| c.id == "C3").unwrap();
        assert_eq!(c3.previous_contact_id.as_deref(), Some("C2"));
        assert!(demo.faults.is_empty() && demo.quota.is_none());
    }

    #[test]
    fn the_bench_fixtures_are_an_open_instance_with_the_documented_session() {
        let bench =
            Fixtures::parse(include_str!("../../fixtures/bench.yaml"), "bench.yaml").unwrap();
        assert!(bench.instances[0].open_chats);
        assert_eq!(bench.instances[0].contacts.len(), 3);
        assert!(bench.faults.is_empty() && bench.quota.is_none());
    }

    #[test]
    fn json_fixtures_are_read_too() {
        let fixtures = Fixtures::parse(
            r#"{"instances": [{"id": "i", "contacts": [{"id": "a", "channel": "CHAT", "state": "ENDED"}]}],
                "faults": [{"kind": "error", "code": "ThrottlingException", "times": 2}],
                "quota": {"rate_per_second": 2, "burst": 5}}"#,
            "inline",
        )
        .unwrap();
        assert_eq!(fixtures.instances[0].contacts[0].channel, Channel::Chat);
        assert_eq!(fixtures.faults[0].times, Some(2));
    }

    #[test]
    fn a_dangling_previous_contact_is_refused() {
        let err = Fixtures::parse(
            "instances: [{id: i, contacts: [{id: a, channel: CHAT, state: ENDED, previous_contact_id: zz}]}]",
            "inline",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown contact zz"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Fixtures::parse("instancez: []", "inline").is_err());
    }
}
