//! Callers known by a signed token from their platform: a Kubernetes projected service account
//! token or any OIDC JWT, verified offline against its issuer's public keys (a JWK set), the way
//! Envoy's `jwt_authn` does.
//!
//! - The key is found by the token's `kid` among every issuer's keys; the token must then name that
//!   key's issuer (`iss`, exactly), so a token signed with another issuer's key is refused.
//! - Only RS256, ES256 and EdDSA, each with a key of its own family: `alg: none`, HMAC (a public
//!   key used as a shared secret) and a family mismatch are refused by the crate (jsonwebtoken).
//! - `exp` is required, `nbf` and `iat` are checked, each with `leeway` for clock skew; `aud` is
//!   required and must hold the caller's audience.
//! - A token over [`MAX_TOKEN_BYTES`] is refused before anything is decoded.
//!
//! The precise cause of a refusal is for logs and metrics only ([`TokenRefusal::cause`]): the wire
//! answer stays UNAUTHENTICATED with reason CALLER_UNKNOWN, so an attacker learns nothing of which
//! check failed.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    errors::ErrorKind,
    jwk::{JwkSet, KeyAlgorithm},
};
use serde::Deserialize;

use super::jwks::RemoteKeys;

/// The largest token considered: Kubernetes' are about 1 KiB, and a token is parsed before it is
/// trusted, so the bound is on what a stranger can make the facade parse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The algorithms accepted, each with keys of its own family.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// An issuer as the auth file names it: its keys from a file or from an HTTPS URL.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerSpec {
    pub issuer: String,
    /// A JWK set on disk (a ConfigMap of the cluster's keys), re-read with the auth file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The issuer's JWK set, or its OpenID discovery document, over HTTPS ([`super::jwks`]).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) trusted for `jwks_url`; the system's roots without it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A bearer token sent with each fetch, re-read every time (the API server of a cluster asks
    /// for one: the facade's own projected service account token).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The longest a fetched set is used before it is fetched again (a shorter `max-age` wins).
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// The shortest time between two fetches: a token with an unknown `kid` asks for a fetch at
    /// most this often, so a stranger's made-up `kid`s cannot flood the issuer.
    #[serde(default = "default_min_refresh")]
    pub min_refresh_seconds: u64,
}

fn default_refresh() -> u64 {
    600
}

fn default_min_refresh() -> u64 {
    30
}

/// What a caller's token must say (the auth file's `jwt:`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtRule {
    pub issuer: String,
    pub audience: String,
    /// Exactly, or ending in `*` for any subject with that prefix
    /// (`system:serviceaccount:billing:*`).
    pub subject: String,
    /// Other claims that must be present with exactly these string values.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

/// Why a token was refused (logged and counted, never answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    TooLarge,
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// Valid, but no caller's rule matches its subject or claims.
    NoCaller,
}

impl TokenRefusal {
    /// The label of `connect_facade_caller_token_refusals_total{cause}`.
    pub fn cause(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::NoCaller => "no_caller",
        }
    }
}

/// A verified token's claims.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims {
    pub iss: String,
    pub sub: String,
    /// Seconds since the epoch.
    pub exp: f64,
    #[serde(default)]
    aud: Audience,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Claims {
    fn has_audience(&self, audience: &str) -> bool {
        match &self.aud {
            Audience::None => false,
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl JwtRule {
    /// Whether verified `claims` are this caller's.
    pub(crate) fn matches(&self, claims: &Claims) -> bool {
        self.names(claims)
            && claims.has_audience(&self.audience)
            && self.claims.iter().all(|(name, value)| {
                claims.other.get(name).and_then(|v| v.as_str()) == Some(value.as_str())
            })
    }

    /// Whether `claims` name this caller (issuer and subject), whatever their audience.
    pub(crate) fn names(&self, claims: &Claims) -> bool {
        let subject = match self.subject.strip_suffix('*') {
            Some(prefix) => claims.sub.starts_with(prefix),
            None => claims.sub == self.subject,
        };
        claims.iss == self.issuer && subject
    }

    /// Whether `claims` name this caller but are meant for another audience.
    pub(crate) fn other_audience(&self, claims: &Claims) -> bool {
        self.names(claims) && !claims.has_audience(&self.audience)
    }
}

/// A verification key and the algorithm its JWK names, if any.
pub(crate) struct IssuerKey {
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// One issuer's keys by `kid`.
pub(crate) type KeyMap = HashMap<String, Arc<IssuerKey>>;

/// The keys of a JWK set, and a problem for each key that cannot be used (no `kid`, a kind of key
/// jsonwebtoken does not verify with).
pub(crate) fn key_map(set: &JwkSet) -> (KeyMap, Vec<String>) {
    let mut keys = KeyMap::new();
    let mut problems = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            problems.push("a key has no `kid`".to_owned());
            continue;
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                let algorithm = jwk.common.key_algorithm.and_then(algorithm_of);
                keys.insert(kid, Arc::new(IssuerKey { algorithm, key }));
            }
            Err(error) => problems.push(format!("key {kid}: {error}")),
        }
    }
    (keys, problems)
}

/// Where an issuer's keys are.
#[derive(Clone)]
enum Keys {
    /// Read from a file with the auth file.
    File(Arc<KeyMap>),
    /// Fetched over HTTPS in the background.
    Remote(Arc<RemoteKeys>),
}

#[derive(Clone)]
struct IssuerKeys {
    issuer: String,
    keys: Keys,
}

/// Which key set verified a token, and that set's version: a verified token is trusted again only
/// while its set is unchanged (a key removed by the issuer ends its tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyStamp {
    set: usize,
    generation: u64,
}

/// Every issuer's keys.
#[derive(Clone, Default)]
pub(crate) struct Issuers {
    sets: Vec<IssuerKeys>,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuers")
            .field("issuers", &self.sets.len())
            .field("files", &self.files)
            .finish()
    }
}

impl Issuers {
    /// Reads each issuer's JWK set file, and prepares (without fetching) each URL; a key without
    /// `kid`, a set that does not load, or a key id two issuers' files share is an error naming
    /// the file.
    pub(crate) fn load(specs: &[IssuerSpec], base: &Path) -> Result<Self, String> {
        let mut issuers = Self::default();
        for spec in specs {
            let keys = match (&spec.jwks_file, &spec.jwks_url) {
                (Some(file), None) => {
                    let path = base.join(file);
                    let keys = Self::read_file(spec, &path)?;
                    issuers.files.push(path);
                    Keys::File(Arc::new(keys))
                }
                (None, Some(url)) => {
                    let remote = RemoteKeys::prepare(spec, url, base)
                        .map_err(|error| format!("issuer {}: {error}", spec.issuer))?;
                    issuers.files.extend(remote.files());
                    Keys::Remote(Arc::new(remote))
                }
                _ => {
                    return Err(format!(
                        "issuer {} needs exactly one of jwks_file and jwks_url",
                        spec.issuer
                    ));
                }
            };
            issuers.sets.push(IssuerKeys {
                issuer: spec.issuer.clone(),
                keys,
            });
        }
        Ok(issuers)
    }

    fn read_file(spec: &IssuerSpec, path: &Path) -> Result<KeyMap, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("issuer {}: cannot read {shown}: {error}", spec.issuer))?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|error| {
            format!("issuer {}: {shown} is not a JWK set: {error}", spec.issuer)
        })?;
        let (keys, problems) = key_map(&set);
        if let Some(problem) = problems.first() {
            return Err(format!("issuer {}: {shown}: {problem}", spec.issuer));
        }
        Ok(keys)
    }

    /// Checks that no key id is two issuers' (a token's `kid` must find one key).
    pub(crate) fn check_distinct_kids(&self) -> Result<(), String> {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for set in &self.sets {
            if let Keys::File(keys) = &set.keys {
                for kid in keys.keys() {
                    if let Some(other) = seen.insert(kid, &set.issuer) {
                        return Err(format!(
                            "issuer {}: key id {kid} is also a key of issuer {other}",
                            set.issuer
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The files the issuers' keys come from (re-read with the auth file).
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The key sets fetched over HTTPS.
    pub(crate) fn remote(&self) -> impl Iterator<Item = &Arc<RemoteKeys>> {
        self.sets.iter().filter_map(|set| match &set.keys {
            Keys::Remote(remote) => Some(remote),
            Keys::File(_) => None,
        })
    }

    /// These issuers with each fetched set replaced by `adopt`'s (the one already running for
    /// its source, so a reload keeps the keys fetched and their fetcher).
    pub(crate) fn adopted(&self, adopt: impl Fn(&Arc<RemoteKeys>) -> Arc<RemoteKeys>) -> Self {
        let mut adopted = self.clone();
        for set in &mut adopted.sets {
            if let Keys::Remote(remote) = &set.keys {
                set.keys = Keys::Remote(adopt(remote));
            }
        }
        adopted
    }

    /// Whether the set that verified a token is as it was then.
    pub(crate) fn unchanged(&self, stamp: KeyStamp) -> bool {
        self.sets
            .get(stamp.set)
            .is_some_and(|set| generation(&set.keys) == stamp.generation)
    }

    /// The key with `kid`, the issuer whose set holds it, and the set's stamp.
    fn key(&self, kid: &str) -> Option<(Arc<IssuerKey>, &str, KeyStamp)> {
        self.sets.iter().enumerate().find_map(|(index, set)| {
            let key = match &set.keys {
                Keys::File(keys) => keys.get(kid).cloned(),
                Keys::Remote(remote) => remote.key(kid),
            }?;
            let stamp = KeyStamp {
                set: index,
                generation: generation(&set.keys),
            };
            Some((key, set.issuer.as_str(), stamp))
        })
    }

    /// Verifies `token`; its claims and the stamp of the set that verified it, or why it is
    /// refused. An unknown `kid` asks each fetched set for a fresh fetch (rate-limited; nothing
    /// waits for it).
    pub(crate) fn verify(
        &self,
        token: &str,
        leeway: u64,
    ) -> Result<(Claims, KeyStamp), TokenRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::TooLarge);
        }
        let header = decode_header(token).map_err(|_| unparsed_header(token))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenRefusal::Algorithm);
        }
        let Some((key, issuer, stamp)) = header.kid.as_deref().and_then(|kid| self.key(kid)) else {
            self.remote().for_each(|remote| remote.want_refresh());
            return Err(TokenRefusal::UnknownKey);
        };
        if key
            .algorithm
            .is_some_and(|algorithm| algorithm != header.alg)
        {
            return Err(TokenRefusal::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked against each caller's audience
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => TokenRefusal::Signature,
                ErrorKind::ExpiredSignature => TokenRefusal::Expired,
                ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
                ErrorKind::InvalidIssuer => TokenRefusal::Issuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenRefusal::Algorithm
                }
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenRefusal::Audience,
                _ => TokenRefusal::Malformed,
            })?
            .claims;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if claims.iat.is_some_and(|iat| iat > now + leeway as f64) {
            return Err(TokenRefusal::NotYetValid);
        }
        if matches!(claims.aud, Audience::None) {
            return Err(TokenRefusal::Audience);
        }
        Ok((claims, stamp))
    }
}

fn generation(keys: &Keys) -> u64 {
    match keys {
        Keys::File(_) => 0,
        Keys::Remote(remote) => remote.generation(),
    }
}

/// Why a header the crate cannot read is refused: an algorithm it does not know (`none`, most
/// often: an unsigned token), or no header at all.
fn unparsed_header(token: &str) -> TokenRefusal {
    use base64::Engine;
    let alg = token
        .split('.')
        .next()
        .and_then(|header| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|header| {
            header
                .get("alg")
                .and_then(|alg| alg.as_str())
                .map(str::to_owned)
        });
    match alg {
        Some(_) => TokenRefusal::Algorithm,
        None => TokenRefusal::Malformed,
    }
}

fn algorithm_of(algorithm: KeyAlgorithm) -> Option<Algorithm> {
    match algorithm {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Whether `token` has a JWT's shape (three base64url parts), to tell it from a static token.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.len() > 20 && token.bytes().filter(|b| *b == b'.').count() == 2
}
