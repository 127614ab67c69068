//! Who is calling, as AWS decides it: accounts with their long-term access keys, roles that STS
//! `AssumeRole` issues temporary credentials for, and which account and region each instance lives in.
//!
//! - STS `AssumeRole` (the query protocol: a form-encoded POST to `/`, answered in XML) issues an
//!   `ASIA…` key, a secret and a session token that expire after the role's `session_seconds`
//!   (whatever `DurationSeconds` asks, so tests can make sessions short). A role with an
//!   `external_id` requires it. Any known key may assume any role: trust policies are not modelled.
//! - A Connect call is signed with a key; the key's account must be the instance's, or the answer is
//!   `AccessDeniedException`, as AWS answers a principal of another account. An expired session key
//!   is `ExpiredTokenException`. An instance in another region than the signature's scope does not
//!   exist there: `ResourceNotFoundException`.
//! - Fixtures without accounts keep the old behaviour: any well-formed key is accepted (or only
//!   `access_key_ids`, when listed), and instances have no account or region.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;
use serde::Deserialize;

/// An AWS account: its long-term keys and its roles.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFixture {
    /// The 12-digit account id.
    pub id: String,
    /// Long-term access key ids of this account's principals (the facade's own identity, say).
    #[serde(default)]
    pub access_key_ids: Vec<String>,
    #[serde(default)]
    pub roles: Vec<RoleFixture>,
    /// Whether the account's long-term keys hold `connect:CreatePersistentContactAssociation`
    /// (default: true); without it every call is AccessDeniedException, whatever the instance.
    #[serde(default = "permitted")]
    pub may_associate: bool,
    /// Whether they hold `connect:DescribeContact` (default: true).
    #[serde(default = "permitted")]
    pub may_describe: bool,
}

/// A role STS lets any known principal assume.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFixture {
    /// `arn:aws:iam::ACCOUNT:role/NAME`; ACCOUNT must be the account's id.
    pub arn: String,
    /// When set, AssumeRole must send this ExternalId.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Lifetime of the credentials issued for this role (default: 3600).
    #[serde(default = "default_session_seconds")]
    pub session_seconds: u64,
    /// Whether the role's policy allows `connect:CreatePersistentContactAssociation` (default:
    /// true).
    #[serde(default = "permitted")]
    pub may_associate: bool,
    /// Whether it allows `connect:DescribeContact` (default: true).
    #[serde(default = "permitted")]
    pub may_describe: bool,
}

/// The Connect actions the simulator serves, as IAM names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Associate,
    DescribeContact,
}

impl Action {
    pub fn iam_name(self) -> &'static str {
        match self {
            Self::Associate => "connect:CreatePersistentContactAssociation",
            Self::DescribeContact => "connect:DescribeContact",
        }
    }
}

/// What a principal's policy allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub associate: bool,
    pub describe: bool,
}

impl Permissions {
    const ALL: Self = Self {
        associate: true,
        describe: true,
    };

    fn allow(self, action: Action) -> bool {
        match action {
            Action::Associate => self.associate,
            Action::DescribeContact => self.describe,
        }
    }
}

fn default_session_seconds() -> u64 {
    3600
}

fn permitted() -> bool {
    true
}

/// The account an `arn:aws:iam::ACCOUNT:role/NAME` belongs to, as STS reads it: the simulator's own
/// parser, so a mistake in the routes file's would be caught, not mirrored.
pub fn role_account(arn: &str) -> Option<&str> {
    let [prefix, partition, service, region, account, resource] =
        arn.splitn(6, ':').collect::<Vec<_>>()[..]
    else {
        return None;
    };
    let valid = prefix == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|name| !name.is_empty());
    valid.then_some(account)
}

/// Temporary credentials STS issued.
struct Session {
    account: String,
    assumed_role: String,
    expires: SystemTime,
    may: Permissions,
}

/// Who signed a request, as AWS knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub account: String,
    pub arn: String,
    /// The principal's unique id (`AIDA…` for a user, `AROA…:SESSION` for an assumed role).
    pub user_id: String,
    pub may: Permissions,
}

/// The account a key no account lists answers from (fixtures without accounts).
const ANY_ACCOUNT: &str = "123456789012";

/// Why a key may not make a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Unrecognized,
    Expired,
    /// The principal's account is not the instance's (its ARN, for the message).
    OtherAccount {
        principal: String,
    },
    /// The principal's policy does not allow the operation (its ARN and account, for the
    /// message).
    NoPermission {
        principal: String,
        account: String,
    },
    /// The instance does not exist in the signature's region.
    OtherRegion,
}

/// What an AssumeRole call is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum AssumeRoleError {
    /// The role does not exist, or the external id is wrong: AccessDenied, as STS answers both.
    AccessDenied(String),
    /// A required parameter is missing.
    Invalid(String),
}

/// Credentials issued by [`Identities::assume_role`].
#[derive(Debug)]
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: SystemTime,
    pub assumed_role_arn: String,
}

/// The accounts and the sessions issued so far.
pub struct Identities {
    /// Long-term key id → account id, and what its policy allows.
    keys: HashMap<String, (String, Permissions)>,
    roles: HashMap<String, RoleFixture>,
    /// Instance id → (account, region), for instances that say.
    instances: HashMap<String, (Option<String>, Option<String>)>,
    /// The access key ids accepted when no account lists them (the fixtures' `access_key_ids`).
    legacy_keys: Vec<String>,
    sessions: Mutex<HashMap<String, Session>>,
    assume_role_calls: AtomicU64,
}

impl Identities {
    pub fn new(
        accounts: &[AccountFixture],
        instances: impl IntoIterator<Item = (String, Option<String>, Option<String>)>,
        legacy_keys: Vec<String>,
    ) -> Self {
        let mut keys = HashMap::new();
        let mut roles = HashMap::new();
        for account in accounts {
            for key in &account.access_key_ids {
                let may = Permissions {
                    associate: account.may_associate,
                    describe: account.may_describe,
                };
                keys.insert(key.clone(), (account.id.clone(), may));
            }
            for role in &account.roles {
                roles.insert(role.arn.clone(), role.clone());
            }
        }
        Self {
            keys,
            roles,
            instances: instances
                .into_iter()
                .map(|(id, account, region)| (id, (account, region)))
                .collect(),
            legacy_keys,
            sessions: Mutex::new(HashMap::new()),
            assume_role_calls: AtomicU64::new(0),
        }
    }

    /// AssumeRole calls answered with credentials so far.
    pub fn assume_role_calls(&self) -> u64 {
        self.assume_role_calls.load(Ordering::Relaxed)
    }

    /// Who `key` belongs to: a long-term key, a session key, or (without accounts) any key or the
    /// listed ones, which answer as a user of no account in particular (`None`).
    fn known(&self, key: &str) -> Result<Option<Principal>, Refused> {
        if let Some((account, may)) = self.keys.get(key) {
            return Ok(Some(Principal {
                account: account.clone(),
                arn: format!("arn:aws:iam::{account}:user/simulated"),
                user_id: "AIDASIMULATED".to_owned(),
                may: *may,
            }));
        }
        if let Some(session) = self.sessions.lock().get(key) {
            if session.expires <= SystemTime::now() {
                return Err(Refused::Expired);
            }
            let session_name = session.assumed_role.rsplit('/').next().unwrap_or_default();
            return Ok(Some(Principal {
                account: session.account.clone(),
                arn: session.assumed_role.clone(),
                user_id: format!("AROASIMULATED:{session_name}"),
                may: session.may,
            }));
        }
        let open = self.keys.is_empty() && self.legacy_keys.is_empty();
        if open || self.legacy_keys.iter().any(|k| k == key) {
            Ok(None)
        } else {
            Err(Refused::Unrecognized)
        }
    }

    /// Who `key` is, as STS GetCallerIdentity answers.
    pub fn caller_identity(&self, key: &str) -> Result<Principal, Refused> {
        Ok(self.known(key)?.unwrap_or_else(|| Principal {
            account: ANY_ACCOUNT.to_owned(),
            arn: format!("arn:aws:iam::{ANY_ACCOUNT}:user/simulated"),
            user_id: "AIDASIMULATED".to_owned(),
            may: Permissions::ALL,
        }))
    }

    /// Whether `key`, signing for `region`, may call on `instance_id`. IAM judges the principal's
    /// policy first, whatever the instance (an unknown instance included), as AWS does.
    pub fn authorize(
        &self,
        key: &str,
        region: &str,
        instance_id: &str,
        action: Action,
    ) -> Result<(), Refused> {
        let principal = self.known(key)?;
        if let Some(principal) = &principal
            && !principal.may.allow(action)
        {
            return Err(Refused::NoPermission {
                principal: principal.arn.clone(),
                account: principal.account.clone(),
            });
        }
        let Some((account, instance_region)) = self.instances.get(instance_id) else {
            return Ok(());
        };
        if let Some(expected) = account {
            match &principal {
                Some(principal) if &principal.account == expected => {}
                Some(principal) => {
                    return Err(Refused::OtherAccount {
                        principal: principal.arn.clone(),
                    });
                }
                None => {
                    return Err(Refused::OtherAccount {
                        principal: format!("the principal of access key {key}"),
                    });
                }
            }
        }
        if instance_region.as_deref().is_some_and(|r| r != region) {
            return Err(Refused::OtherRegion);
        }
        Ok(())
    }

    /// Whether `key` may call STS at all.
    pub fn recognizes(&self, key: &str) -> Result<(), Refused> {
        self.known(key).map(drop)
    }

    /// Issues credentials for `role_arn`.
    pub fn assume_role(
        &self,
        role_arn: Option<&str>,
        session_name: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Issued, AssumeRoleError> {
        let (Some(role_arn), Some(session_name)) = (role_arn, session_name) else {
            return Err(AssumeRoleError::Invalid(
                "RoleArn and RoleSessionName are required".to_owned(),
            ));
        };
        let denied = || {
            AssumeRoleError::AccessDenied(format!(
                "Not authorized to perform sts:AssumeRole on {role_arn}"
            ))
        };
        let role = self.roles.get(role_arn).ok_or_else(denied)?;
        if role
            .external_id
            .as_deref()
            .is_some_and(|id| Some(id) != external_id)
        {
            return Err(denied());
        }
        let account = role_account(role_arn).ok_or_else(denied)?.to_owned();
        let role_name = role_arn.rsplit('/').next().unwrap_or_default();
        let access_key_id = format!(
            "ASIA{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16].to_uppercase()
        );
        let expiration = SystemTime::now() + Duration::from_secs(role.session_seconds);
        let assumed_role_arn =
            format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}");
        self.sessions.lock().insert(
            access_key_id.clone(),
            Session {
                account,
                assumed_role: assumed_role_arn.clone(),
                expires: expiration,
                may: Permissions {
                    associate: role.may_associate,
                    describe: role.may_describe,
                },
            },
        );
        self.assume_role_calls.fetch_add(1, Ordering::Relaxed);
        Ok(Issued {
            access_key_id,
            secret_access_key: uuid::Uuid::new_v4().simple().to_string(),
            session_token: uuid::Uuid::new_v4().simple().to_string(),
            expiration,
            assumed_role_arn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identities(session_seconds: u64) -> Identities {
        let accounts = [
            AccountFixture {
                id: "111122223333".into(),
                access_key_ids: vec!["AKIDBASE".into()],
                roles: vec![RoleFixture {
                    arn: "arn:aws:iam::111122223333:role/facade".into(),
                    external_id: Some("ext".into()),
                    session_seconds,
                    may_associate: true,
                    may_describe: true,
                }],
                may_associate: true,
                may_describe: true,
            },
            AccountFixture {
                id: "444455556666".into(),
                access_key_ids: vec!["AKIDDENIED".into()],
                roles: vec![],
                may_associate: false,
                may_describe: false,
            },
        ];
        Identities::new(
            &accounts,
            [
                (
                    "uk".to_owned(),
                    Some("111122223333".to_owned()),
                    Some("eu-west-2".to_owned()),
                ),
                ("us".to_owned(), Some("444455556666".to_owned()), None),
            ],
            vec![],
        )
    }

    #[test]
    fn a_role_arn_names_its_account() {
        assert_eq!(
            role_account("arn:aws:iam::111122223333:role/x"),
            Some("111122223333")
        );
        assert_eq!(role_account("arn:aws:iam::1111:role/x"), None);
        assert_eq!(role_account("arn:aws:iam::111122223333:user/x"), None);
        assert_eq!(role_account("not an arn"), None);
    }

    #[test]
    fn an_assumed_role_calls_its_own_accounts_instances_only() {
        let ids = identities(3600);
        assert_eq!(
            ids.assume_role(
                Some("arn:aws:iam::111122223333:role/facade"),
                Some("s"),
                None
            )
            .unwrap_err(),
            AssumeRoleError::AccessDenied(
                "Not authorized to perform sts:AssumeRole on arn:aws:iam::111122223333:role/facade"
                    .into()
            ),
            "the external id is required"
        );
        let issued = ids
            .assume_role(
                Some("arn:aws:iam::111122223333:role/facade"),
                Some("s"),
                Some("ext"),
            )
            .unwrap();
        assert!(issued.access_key_id.starts_with("ASIA"));
        assert_eq!(
            ids.authorize(&issued.access_key_id, "eu-west-2", "uk", Action::Associate),
            Ok(())
        );
        assert_eq!(
            ids.authorize(&issued.access_key_id, "us-east-1", "uk", Action::Associate),
            Err(Refused::OtherRegion)
        );
        assert!(matches!(
            ids.authorize(&issued.access_key_id, "us-east-1", "us", Action::Associate),
            Err(Refused::OtherAccount { principal }) if principal.contains("assumed-role/facade/s")
        ));
        assert_eq!(
            ids.authorize("AKIDBASE", "eu-west-2", "uk", Action::Associate),
            Ok(())
        );
        assert!(
            matches!(
                ids.authorize("AKIDDENIED", "us-east-1", "no-such-instance", Action::Associate),
                Err(Refused::NoPermission { account, .. }) if account == "444455556666"
            ),
            "the policy is judged before the instance is looked up"
        );
        assert_eq!(
            ids.caller_identity("AKIDDENIED").unwrap().arn,
            "arn:aws:iam::444455556666:user/simulated"
        );
        assert_eq!(
            ids.authorize("AKIDNOBODY", "eu-west-2", "uk", Action::Associate),
            Err(Refused::Unrecognized)
        );
    }

    #[test]
    fn an_expired_session_is_refused() {
        let ids = identities(0);
        let issued = ids
            .assume_role(
                Some("arn:aws:iam::111122223333:role/facade"),
                Some("s"),
                Some("ext"),
            )
            .unwrap();
        assert_eq!(
            ids.authorize(&issued.access_key_id, "eu-west-2", "uk", Action::Associate),
            Err(Refused::Expired)
        );
    }
}
