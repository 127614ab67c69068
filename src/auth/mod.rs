//! Optional caller authorization (`--auth-file`): who may call, and on which Connect instances.
//!
//! A caller proves who it is with a bearer token (`authorization: Bearer <token>`): a static one,
//! stored only as its SHA-256 and compared in constant time, or a JWT of a configured issuer
//! (a Kubernetes projected service account token, an OIDC token: [`jwt`]); or with a client
//! certificate verified by mutual TLS, matched by its subject (`CN=ops-console`) or by the SPIFFE
//! ID in its URI SAN. No or unknown credentials: UNAUTHENTICATED, answered from the
//! headers before the body is read (a stranger cannot make the facade wait for, or hold, a body). A
//! known caller on an instance it was not granted: PERMISSION_DENIED, once the body names the instance. AWS is called in neither case. Only
//! `amazonconnect.v1.ContactService` is guarded: reflection and health stay open for tools and probes.
//! The caller's name, never its token, is logged and counted.
//!
//! A caller may also have a `weight` (its share of the quota when callers wait for it, default 1) and a
//! `max_rate` (calls per second past which its calls are refused, whatever the quota): see
//! [`crate::quota::fair`].

pub(crate) mod jwks;
pub(crate) mod jwt;
mod live;
mod metrics;

pub use jwks::{JwksMetrics, KeyFetchers};
pub use live::{AdmittedCaller, CallerSet, LiveCallers};
pub(crate) use metrics::{CallerMetrics, CallerRefusal};

use std::{net::SocketAddr, path::Path, sync::Arc};

use http::{Extensions, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The auth file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    /// The issuers of the JWTs callers may present, with their keys.
    #[serde(default)]
    issuers: Vec<jwt::IssuerSpec>,
    /// Clock skew allowed on a JWT's `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    jwt_leeway_seconds: u64,
    callers: Vec<Caller>,
}

fn default_leeway() -> u64 {
    30
}

/// One caller and what it may do.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawCaller")]
pub(crate) struct Caller {
    name: String,
    credential: Credential,
    instances: Vec<String>,
    share: CallerShare,
}

/// Who a call is for, as the quota sees it: its caller's place in the auth file, name and limits.
/// Without an auth file every call is the one [`CallerShare::anonymous`] caller.
#[derive(Clone, Debug, PartialEq)]
pub struct CallerShare {
    /// The caller's position in the auth file (0 without one).
    pub index: usize,
    /// The caller's name; `None` without an auth file (no per-caller metrics then).
    pub name: Option<Arc<str>>,
    /// Its share of the quota against the other waiting callers.
    pub weight: f64,
    /// Calls per second past which its calls are refused (CALLER_RATE_LIMITED).
    pub max_rate: Option<f64>,
}

impl CallerShare {
    /// Every call, when there is no auth file.
    pub(crate) fn anonymous() -> Self {
        Self {
            index: 0,
            name: None,
            weight: 1.0,
            max_rate: None,
        }
    }

    /// The name for logs, metrics and errors.
    pub(crate) fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("anonymous")
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Credential {
    TokenSha256([u8; 32]),
    TlsSubject(String),
    /// A JWT of a configured issuer whose claims match.
    Jwt(jwt::JwtRule),
    /// The SPIFFE ID in the client certificate's URI SAN: exactly, or under a path ending `/*`.
    SpiffeId(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    name: String,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    tls_subject: Option<String>,
    #[serde(default)]
    jwt: Option<jwt::JwtRule>,
    #[serde(default)]
    spiffe_id: Option<String>,
    instances: Vec<String>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    max_rate: Option<f64>,
}

impl TryFrom<RawCaller> for Caller {
    type Error = String;

    fn try_from(raw: RawCaller) -> Result<Self, Self::Error> {
        if raw.name.trim().is_empty() {
            return Err("a caller needs a name".to_owned());
        }
        if raw.instances.is_empty() {
            return Err(format!(
                "caller {} lists no instances (use [\"*\"] for all)",
                raw.name
            ));
        }
        let weight = raw.weight.unwrap_or(1.0);
        if !(0.01..=1000.0).contains(&weight) {
            return Err(format!(
                "caller {}: weight must be from 0.01 to 1000 (got {weight})",
                raw.name
            ));
        }
        if let Some(rate) = raw.max_rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(format!(
                "caller {}: max_rate must be a number of calls per second above 0 (got {rate})",
                raw.name
            ));
        }
        let credential = match (raw.token_sha256, raw.tls_subject, raw.jwt, raw.spiffe_id) {
            (None, None, Some(rule), None) => Credential::Jwt(rule),
            (None, None, None, Some(id)) if id.starts_with("spiffe://") => {
                Credential::SpiffeId(id.trim().to_owned())
            }
            (None, None, None, Some(_)) => {
                return Err(format!(
                    "caller {}: spiffe_id must be a spiffe:// URI (e.g. spiffe://cluster.local/ns/billing/sa/billing-api)",
                    raw.name
                ));
            }
            (Some(hash), None, None, None) => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(hash.trim(), &mut digest).map_err(|_| {
                    format!(
                        "caller {}: token_sha256 must be 64 hex digits (the SHA-256 of its token)",
                        raw.name
                    )
                })?;
                Credential::TokenSha256(digest)
            }
            (None, Some(subject), None, None) if !subject.trim().is_empty() => {
                Credential::TlsSubject(subject.trim().to_owned())
            }
            _ => {
                return Err(format!(
                    "caller {} needs exactly one of token_sha256, tls_subject, jwt and spiffe_id",
                    raw.name
                ));
            }
        };
        Ok(Self {
            share: CallerShare {
                index: 0,
                name: Some(Arc::from(raw.name.as_str())),
                weight,
                max_rate: raw.max_rate,
            },
            name: raw.name,
            credential,
            instances: raw.instances,
        })
    }
}

/// The auth file could not be used; the message names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read auth file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid auth file {path}: {source}")]
    Parse {
        path: String,
        source: serde_norway::Error,
    },
    #[error(
        "invalid auth file {path}: caller {caller} is listed twice (names key metrics and shares)"
    )]
    Duplicate { path: String, caller: String },
    #[error("invalid auth file {path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No credentials, or credentials no caller has.
    Unauthenticated,
    /// A known caller, on an instance it was not granted.
    NotAllowed { caller: String },
    /// A JWT that was refused (why: logs and metrics only).
    Token(jwt::TokenRefusal),
}

/// A caller identified by its credentials: its place in the auth file's version that found it
/// (kept with that version in [`AdmittedCaller`], so the handler only checks the instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authenticated(usize);

/// The callers allowed to use the service.
#[derive(Clone, Debug)]
pub struct Callers {
    callers: Vec<Caller>,
    issuers: std::sync::Arc<jwt::Issuers>,
    leeway: u64,
    /// JWTs verified already, by their SHA-256: a caller sends one token for its whole life (an
    /// hour, for a projected token), so its signature is checked once, not on every call. Bounded
    /// (LRU); an entry serves only until the token's own `exp`, and while the key set that
    /// verified it is unchanged. A reload starts afresh (its keys may have changed).
    verified: std::sync::Arc<quick_cache::sync::Cache<[u8; 32], VerifiedToken>>,
}

/// A token verified already: its caller, its `exp`, and the key set that verified it.
#[derive(Clone, Copy)]
struct VerifiedToken {
    position: usize,
    expires: f64,
    stamp: jwt::KeyStamp,
}

/// Verified JWTs kept per auth file version.
const VERIFIED_TOKENS: usize = 4096;

impl Callers {
    /// Reads and checks an auth file.
    pub fn from_path(path: &Path) -> Result<Self, AuthFileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parses the YAML text of an auth file; `name` says where it came from in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, AuthFileError> {
        let file: AuthFile =
            serde_norway::from_str(text).map_err(|source| AuthFileError::Parse {
                path: name.to_owned(),
                source,
            })?;
        let mut callers = file.callers;
        for (index, caller) in callers.iter_mut().enumerate() {
            caller.share.index = index;
        }
        let invalid = |problem: String| AuthFileError::Invalid {
            path: name.to_owned(),
            problem,
        };
        let base = Path::new(name).parent().unwrap_or(Path::new(""));
        let issuers = jwt::Issuers::load(&file.issuers, base).map_err(invalid)?;
        issuers.check_distinct_kids().map_err(invalid)?;
        for caller in &callers {
            if let Credential::Jwt(rule) = &caller.credential
                && !file.issuers.iter().any(|i| i.issuer == rule.issuer)
            {
                return Err(invalid(format!(
                    "caller {}: its jwt issuer {} is not among `issuers`",
                    caller.name, rule.issuer
                )));
            }
        }
        let mut names: Vec<&str> = callers.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(AuthFileError::Duplicate {
                path: name.to_owned(),
                caller: pair[0].to_owned(),
            });
        }
        Ok(Self {
            callers,
            issuers: std::sync::Arc::new(issuers),
            leeway: file.jwt_leeway_seconds,
            verified: std::sync::Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS)),
        })
    }

    /// The files the issuers' keys come from (JWK sets, the CAs of fetched ones), re-read with
    /// the auth file.
    pub fn key_files(&self) -> &[std::path::PathBuf] {
        self.issuers.files()
    }

    /// The issuers' key sets fetched over HTTPS.
    pub(crate) fn fetched_key_sets(&self) -> impl Iterator<Item = &Arc<jwks::RemoteKeys>> {
        self.issuers.remote()
    }

    /// Swaps each fetched key set for the one already running for its source, or starts it.
    pub(crate) fn adopt_key_sets(&mut self, fetchers: &KeyFetchers) {
        self.issuers = Arc::new(self.issuers.adopted(|fresh| fetchers.adopt(fresh)));
    }

    /// Every caller's name and the instances it may call (`*`: any), in the file's order.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.callers
            .iter()
            .map(|c| (c.name.as_str(), c.instances.as_slice()))
    }

    /// Gives each caller `previous` knew the index it had there, and each new one an index no
    /// caller of `previous` has: an index names a caller's lane in the fair queue and its rate
    /// limit, for as long as the process runs.
    pub(crate) fn keep_indexes_of(&mut self, previous: &Callers) {
        let mut next = previous
            .callers
            .iter()
            .map(|c| c.share.index + 1)
            .max()
            .unwrap_or(0);
        for caller in &mut self.callers {
            caller.share.index = match previous.callers.iter().find(|p| p.name == caller.name) {
                Some(known) => known.share.index,
                None => {
                    next += 1;
                    next - 1
                }
            };
        }
    }

    /// Every caller's share, in the file's order.
    pub fn shares(&self) -> Vec<CallerShare> {
        self.callers.iter().map(|c| c.share.clone()).collect()
    }

    /// Identifies the caller, then checks it may use `instance_id`; answers who it is. The server
    /// does the two steps apart (the first at the edge, before the body), so only the tests call
    /// them together.
    #[cfg(test)]
    fn authorize(
        &self,
        headers: &HeaderMap,
        certificate: Option<&PeerCertificate>,
        instance_id: &str,
    ) -> Result<&CallerShare, Refusal> {
        let who = self.authenticate(headers, certificate)?;
        self.permit(who, instance_id)
    }

    /// Who is calling, from the call's headers and its connection's certificate alone: the body is
    /// not needed, so an unknown caller is refused before it is read. A refused JWT says why
    /// ([`Refusal::Token`]), for the logs and metrics only.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        certificate: Option<&PeerCertificate>,
    ) -> Result<Authenticated, Refusal> {
        let bearer = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let mut refused_token = None;
        if let Some(token) = bearer {
            // One hash serves both: the static tokens are stored as it, the verified JWTs kept by it.
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(position) = self.by_static_token(&digest) {
                return Ok(Authenticated(position));
            }
            if !self.issuers.is_empty() && jwt::looks_like_jwt(token) {
                match self.by_jwt(token, digest) {
                    Ok(position) => return Ok(Authenticated(position)),
                    Err(cause) => refused_token = Some(cause),
                }
            }
        }
        if let Some(position) = certificate.and_then(|c| self.by_certificate(c)) {
            return Ok(Authenticated(position));
        }
        Err(refused_token.map_or(Refusal::Unauthenticated, Refusal::Token))
    }

    /// Whether an authenticated caller may use `instance_id`.
    pub(crate) fn permit(
        &self,
        who: Authenticated,
        instance_id: &str,
    ) -> Result<&CallerShare, Refusal> {
        let caller = self.callers.get(who.0).ok_or(Refusal::Unauthenticated)?;
        if caller
            .instances
            .iter()
            .any(|granted| granted == "*" || granted == instance_id)
        {
            Ok(&caller.share)
        } else {
            Err(Refusal::NotAllowed {
                caller: caller.name.clone(),
            })
        }
    }

    /// The caller whose static token this is. Every token hash is compared, in constant time, so
    /// timing reveals nothing about the tokens.
    fn by_static_token(&self, presented: &[u8; 32]) -> Option<usize> {
        let mut found = None;
        for (position, caller) in self.callers.iter().enumerate() {
            if let Credential::TokenSha256(expected) = &caller.credential
                && bool::from(expected.ct_eq(presented))
            {
                found = Some(position);
            }
        }
        found
    }

    /// The first caller whose rule the verified token's claims match.
    fn by_jwt(&self, token: &str, digest: [u8; 32]) -> Result<usize, jwt::TokenRefusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(known) = self.verified.get(&digest)
            && now < known.expires
            && self.issuers.unchanged(known.stamp)
        {
            return Ok(known.position);
        }
        self.verify_jwt(token, digest)
    }

    /// [`Self::by_jwt`] without the cache; a token that names a caller is kept until its `exp`.
    fn verify_jwt(&self, token: &str, digest: [u8; 32]) -> Result<usize, jwt::TokenRefusal> {
        let (claims, stamp) = self.issuers.verify(token, self.leeway)?;
        let rules = || {
            self.callers
                .iter()
                .filter_map(|caller| match &caller.credential {
                    Credential::Jwt(rule) => Some(rule),
                    _ => None,
                })
        };
        if let Some(position) = self.callers.iter().position(
            |caller| matches!(&caller.credential, Credential::Jwt(rule) if rule.matches(&claims)),
        ) {
            self.verified.insert(
                digest,
                VerifiedToken {
                    position,
                    expires: claims.exp,
                    stamp,
                },
            );
            return Ok(position);
        }
        Err(if rules().any(|rule| rule.other_audience(&claims)) {
            jwt::TokenRefusal::Audience
        } else {
            jwt::TokenRefusal::NoCaller
        })
    }

    /// The caller named by the client certificate's subject or SPIFFE ID.
    fn by_certificate(&self, certificate: &PeerCertificate) -> Option<usize> {
        self.callers
            .iter()
            .position(|caller| match &caller.credential {
                Credential::TlsSubject(expected) => *expected == certificate.subject,
                Credential::SpiffeId(pattern) => certificate
                    .spiffe_ids
                    .iter()
                    .any(|id| spiffe_matches(pattern, id)),
                _ => false,
            })
    }
}

/// Whether SPIFFE ID `id` is `pattern`, or under it when the pattern ends in `/*`.
fn spiffe_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
        None => pattern == id,
    }
}

/// What a client certificate says of who presents it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerCertificate {
    /// `CN=…, O=…`, in the certificate's order.
    pub subject: String,
    /// The `spiffe://` URIs among its subject alternative names.
    pub spiffe_ids: Vec<String>,
}

/// The peer's address and, on mutual TLS, its certificate's identity, from a request's extensions
/// (where the server put the connection's details). The certificate is parsed: where only the
/// address is wanted (a log line), [`peer_address`].
pub(crate) fn peer(extensions: &Extensions) -> (Option<SocketAddr>, Option<PeerCertificate>) {
    let certificate = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|tls| tls.peer_certs())
        .and_then(|certs| certs.first().and_then(|der| peer_certificate(der)));
    (peer_address(extensions), certificate)
}

/// The peer's address alone, with TLS or without.
pub(crate) fn peer_address(extensions: &Extensions) -> Option<SocketAddr> {
    match extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Some(tls) => tls.get_ref().remote_addr(),
        None => extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr),
    }
}

/// The subject (`CN=…, O=…`, RFC 4514 order as written) and SPIFFE IDs of a DER certificate.
pub(crate) fn peer_certificate(der: &[u8]) -> Option<PeerCertificate> {
    use x509_parser::extensions::GeneralName;
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let spiffe_ids = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        Some((*uri).to_owned())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PeerCertificate {
        subject: certificate.subject().to_string(),
        spiffe_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-billing-token";

    fn subject(subject: &str) -> PeerCertificate {
        PeerCertificate {
            subject: subject.to_owned(),
            spiffe_ids: vec![],
        }
    }

    #[test]
    fn a_spiffe_pattern_matches_the_id_or_the_ids_under_it() {
        let exact = "spiffe://cluster.local/ns/billing/sa/api";
        assert!(spiffe_matches(exact, exact));
        assert!(!spiffe_matches(
            exact,
            "spiffe://cluster.local/ns/billing/sa/api2"
        ));
        let under = "spiffe://cluster.local/ns/billing/*";
        assert!(spiffe_matches(
            under,
            "spiffe://cluster.local/ns/billing/sa/api"
        ));
        assert!(!spiffe_matches(under, "spiffe://cluster.local/ns/billing"));
        assert!(!spiffe_matches(under, "spiffe://cluster.local/ns/billing/"));
        assert!(!spiffe_matches(
            under,
            "spiffe://cluster.local/ns/billingX/sa/api"
        ));
    }

    fn file() -> String {
        format!(
            r#"callers:
  - name: billing-service
    token_sha256: "{}"
    instances: ["instance-a"]
  - name: ops-console
    tls_subject: "CN=ops-console"
    instances: ["*"]
"#,
            hex::encode(Sha256::digest(TOKEN.as_bytes()))
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut metadata = HeaderMap::new();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata
    }

    #[test]
    fn a_token_caller_is_allowed_on_its_instances_only() {
        let callers = Callers::parse(&file(), "test").unwrap();
        assert_eq!(
            callers
                .authorize(&bearer(TOKEN), None, "instance-a")
                .map(CallerShare::label),
            Ok("billing-service")
        );
        assert_eq!(
            callers.authorize(&bearer(TOKEN), None, "instance-b"),
            Err(Refusal::NotAllowed {
                caller: "billing-service".into()
            })
        );
    }

    #[test]
    fn no_or_unknown_credentials_are_unauthenticated() {
        let callers = Callers::parse(&file(), "test").unwrap();
        assert_eq!(
            callers.authorize(&HeaderMap::new(), None, "instance-a"),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            callers.authorize(&bearer("guess"), None, "instance-a"),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(
            callers.authorize(
                &HeaderMap::new(),
                Some(&subject("CN=someone-else")),
                "instance-a"
            ),
            Err(Refusal::Unauthenticated)
        );
    }

    #[test]
    fn a_certificate_subject_identifies_a_caller() {
        let callers = Callers::parse(&file(), "test").unwrap();
        assert_eq!(
            callers
                .authorize(
                    &HeaderMap::new(),
                    Some(&subject("CN=ops-console")),
                    "anything"
                )
                .map(CallerShare::label),
            Ok("ops-console")
        );
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_line() {
        let bad = "callers:\n  - name: x\n    token_sha256: nothex\n    instances: [\"*\"]\n";
        let err = Callers::parse(bad, "auth.yaml").unwrap_err().to_string();
        assert!(err.contains("auth.yaml") && err.contains("line"), "{err}");
        assert!(err.contains("64 hex digits"), "{err}");

        let both = "callers:\n  - name: x\n    instances: [\"*\"]\n";
        let err = Callers::parse(both, "auth.yaml").unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");

        let unknown =
            "callers:\n  - name: x\n    tls_subject: CN=x\n    instances: [a]\n    admin: true\n";
        let err = Callers::parse(unknown, "auth.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn weights_and_rates_default_and_are_checked() {
        let text = "callers:\n  - name: a\n    tls_subject: CN=a\n    instances: [\"*\"]\n  - name: b\n    tls_subject: CN=b\n    instances: [\"*\"]\n    weight: 3\n    max_rate: 0.5\n";
        let shares = Callers::parse(text, "auth.yaml").unwrap().shares();
        assert_eq!(
            (shares[0].index, shares[0].weight, shares[0].max_rate),
            (0, 1.0, None)
        );
        assert_eq!(
            (shares[1].index, shares[1].weight, shares[1].max_rate),
            (1, 3.0, Some(0.5))
        );

        let zero =
            "callers:\n  - name: a\n    tls_subject: CN=a\n    instances: [a]\n    weight: 0\n";
        let err = Callers::parse(zero, "auth.yaml").unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("line 2"), "{err}");
        let negative =
            "callers:\n  - name: a\n    tls_subject: CN=a\n    instances: [a]\n    max_rate: -1\n";
        let err = Callers::parse(negative, "auth.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_rate"), "{err}");
        let twice = "callers:\n  - name: a\n    tls_subject: CN=a\n    instances: [a]\n  - name: a\n    tls_subject: CN=b\n    instances: [a]\n";
        let err = Callers::parse(twice, "auth.yaml").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_a_credential() {
        let callers = Callers::parse(&file(), "test").unwrap();
        let shown = format!("{callers:?}");
        assert!(
            !shown.contains(&hex::encode(Sha256::digest(TOKEN.as_bytes()))),
            "{shown}"
        );
    }

    #[test]
    fn a_reloaded_caller_keeps_its_index_and_a_new_one_gets_a_fresh_index() {
        let file = |names: &[&str]| {
            let mut text = String::from("callers:\n");
            for name in names {
                text.push_str(&format!(
                    "  - {{name: {name}, token_sha256: \"{}\", instances: [\"*\"]}}\n",
                    "ab".repeat(32)
                ));
            }
            Callers::parse(&text, "test").unwrap()
        };
        let before = file(&["a", "b", "c"]);
        let mut after = file(&["c", "d", "a"]);
        after.keep_indexes_of(&before);
        let indexes: Vec<(Option<Arc<str>>, usize)> = after
            .shares()
            .into_iter()
            .map(|share| (share.name, share.index))
            .collect();
        assert_eq!(
            indexes,
            [
                (Some(Arc::from("c")), 2),
                (Some(Arc::from("d")), 3),
                (Some(Arc::from("a")), 0)
            ]
        );
    }
}
