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
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    errors::ErrorKind,
    jwk::{JwkSet, KeyAlgorithm},
};
use serde::Deserialize;

/// The largest token considered: Kubernetes' are about 1 KiB, and a token is parsed before it is
/// trusted, so the bound is on what a stranger can make the facade parse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The algorithms accepted, each with keys of its own family.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// An issuer as the auth file names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerSpec {
    pub issuer: String,
    /// A JWK set on disk (a ConfigMap of the cluster's keys), re-read with the auth file.
    pub jwks_file: PathBuf,
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

/// A key and the issuer whose set holds it.
struct IssuerKey {
    issuer: String,
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// Every issuer's keys, by `kid`.
#[derive(Default)]
pub(crate) struct Issuers {
    keys: HashMap<String, IssuerKey>,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuers")
            .field("keys", &self.keys.len())
            .field("files", &self.files)
            .finish()
    }
}

impl Issuers {
    /// Reads each issuer's JWK set; a key without `kid`, or a set that does not load, is an error
    /// naming the file.
    pub(crate) fn load(specs: &[IssuerSpec], base: &Path) -> Result<Self, String> {
        let mut issuers = Self::default();
        for spec in specs {
            let path = base.join(&spec.jwks_file);
            let shown = path.display();
            let text = std::fs::read_to_string(&path)
                .map_err(|error| format!("issuer {}: cannot read {shown}: {error}", spec.issuer))?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|error| {
                format!("issuer {}: {shown} is not a JWK set: {error}", spec.issuer)
            })?;
            for jwk in &set.keys {
                let kid = jwk.common.key_id.clone().ok_or_else(|| {
                    format!("issuer {}: a key of {shown} has no `kid`", spec.issuer)
                })?;
                let key = DecodingKey::from_jwk(jwk).map_err(|error| {
                    format!("issuer {}: key {kid} of {shown}: {error}", spec.issuer)
                })?;
                let algorithm = jwk.common.key_algorithm.and_then(algorithm_of);
                if issuers.keys.contains_key(&kid) {
                    return Err(format!(
                        "issuer {}: key id {kid} is also another key's",
                        spec.issuer
                    ));
                }
                issuers.keys.insert(
                    kid,
                    IssuerKey {
                        issuer: spec.issuer.clone(),
                        algorithm,
                        key,
                    },
                );
            }
            issuers.files.push(path);
        }
        Ok(issuers)
    }

    /// The JWK set files, re-read with the auth file.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token`; its claims, or why it is refused.
    pub(crate) fn verify(&self, token: &str, leeway: u64) -> Result<Claims, TokenRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::TooLarge);
        }
        let header = decode_header(token).map_err(|_| unparsed_header(token))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenRefusal::Algorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenRefusal::UnknownKey)?;
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
        validation.set_issuer(&[key.issuer.as_str()]);
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
        Ok(claims)
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
