//! An issuer's keys fetched over HTTPS (`jwks_url`): its JWK set, or its OpenID discovery document
//! (then the set its `jwks_uri` names), the way Envoy's `jwt_authn` keeps remote JWKS.
//!
//! - **No call waits on a fetch.** Fetches run in the background; a call meets the keys of the last
//!   good fetch (none yet: its token is refused as of an unknown key, and the fetcher says why).
//! - **Refreshed before they go stale**: every `refresh_seconds`, or the answer's `max-age` when
//!   shorter, never more often than `min_refresh_seconds`. A token with a `kid` no set holds asks
//!   for a fetch at most once per `min_refresh_seconds`: a rotated-in key is taken within that, and
//!   a stranger's made-up `kid`s cost the issuer one fetch per period.
//! - **The last good keys are kept** when a fetch fails (endpoint down, bad answer, a set with no
//!   usable key); the fetcher tries again after 1 s, doubling up to a minute.
//! - **One fetcher per source for the process's life** ([`KeyFetchers`]): a reload of the auth
//!   file that names the same source keeps its keys and its schedule; once no version of the file
//!   names it, its fetcher stops.
//!
//! The GET is written here over the hyper client the SDK already builds (with rustls on aws-lc, a
//! custom CA and a bearer token): an HTTP crate such as reqwest would be a second client stack for
//! one request every few minutes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use jsonwebtoken::jwk::JwkSet;
use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_rustls::rustls::{
    ClientConfig, RootCertStore,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, pem::PemObject},
};
use tokio_util::sync::CancellationToken;

use super::jwt::{IssuerKey, IssuerSpec, KeyMap, key_map};
use crate::{lifecycle::Tasks, metrics::MetricsRegistry};

/// The most an answer may hold: Kubernetes' set is a few KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The most a fetch may take, connection and both documents included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two tries while the issuer does not answer.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// What makes two fetched sets the same: a reload that names it again keeps the running fetcher.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Source {
    issuer: String,
    url: String,
    ca_pem: Option<Vec<u8>>,
    token_file: Option<PathBuf>,
    refresh: Duration,
    min_refresh: Duration,
}

/// One issuer's fetched keys, swapped whole by each good fetch.
pub(crate) struct RemoteKeys {
    source: Source,
    ca_file: Option<PathBuf>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    keys: ArcSwap<KeyMap>,
    /// Bumped when a fetch brings other keys: tokens verified before are verified again.
    generation: AtomicU64,
    fingerprint: Mutex<Option<[u8; 32]>>,
    /// When the last fetch began, for the unknown-`kid` rate limit.
    last_fetch: Mutex<Option<Instant>>,
    wanted: Arc<Notify>,
    stop: CancellationToken,
}

impl Drop for RemoteKeys {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A good fetch.
pub(crate) struct Fetched {
    keys: KeyMap,
    fingerprint: [u8; 32],
    /// The keys that cannot be used (kept out of the set, and logged).
    pub problems: Vec<String>,
    /// The answer's `Cache-Control: max-age`.
    max_age: Option<Duration>,
    /// The JWK set's own URL (the discovery document's `jwks_uri`, or `jwks_url`).
    pub from: String,
}

impl Fetched {
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }
}

impl RemoteKeys {
    /// Checks the issuer's fetch settings and reads its CA file; fetches nothing.
    pub(crate) fn prepare(spec: &IssuerSpec, url: &str, base: &Path) -> Result<Self, String> {
        let parsed: http::Uri = url
            .parse()
            .map_err(|error| format!("jwks_url {url}: {error}"))?;
        if parsed.scheme_str() != Some("https") || parsed.host().is_none() {
            return Err(format!(
                "jwks_url {url} must be an https:// URL (keys are trusted for what they sign)"
            ));
        }
        if spec.min_refresh_seconds == 0 || spec.min_refresh_seconds > spec.refresh_seconds {
            return Err(format!(
                "min_refresh_seconds must be from 1 to refresh_seconds ({})",
                spec.refresh_seconds
            ));
        }
        let ca_file = spec.ca_file.as_ref().map(|file| base.join(file));
        let ca_pem = ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|error| format!("cannot read ca_file {}: {error}", path.display()))
            })
            .transpose()?;
        let token_file = spec.token_file.as_ref().map(|file| base.join(file));
        if let Some(path) = &token_file {
            std::fs::metadata(path)
                .map_err(|error| format!("cannot read token_file {}: {error}", path.display()))?;
        }
        let client = https_client(ca_file.as_deref(), ca_pem.as_deref())?;
        Ok(Self {
            source: Source {
                issuer: spec.issuer.clone(),
                url: url.to_owned(),
                ca_pem,
                token_file,
                refresh: Duration::from_secs(spec.refresh_seconds),
                min_refresh: Duration::from_secs(spec.min_refresh_seconds),
            },
            ca_file,
            client,
            keys: ArcSwap::default(),
            generation: AtomicU64::new(0),
            fingerprint: Mutex::new(None),
            last_fetch: Mutex::new(None),
            wanted: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
        })
    }

    /// The issuer's name.
    pub(crate) fn issuer(&self) -> &str {
        &self.source.issuer
    }

    /// The URL the keys are fetched from.
    pub(crate) fn url(&self) -> &str {
        &self.source.url
    }

    /// The files a reload watches (the CA; the token is read at each fetch, as the kubelet
    /// rotates it).
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        self.ca_file.iter().cloned().collect()
    }

    pub(crate) fn key(&self, kid: &str) -> Option<Arc<IssuerKey>> {
        self.keys.load().get(kid).cloned()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks the fetcher for a fetch now, unless one began within `min_refresh_seconds`.
    pub(crate) fn want_refresh(&self) {
        let recent = self
            .last_fetch
            .lock()
            .is_some_and(|began| began.elapsed() < self.source.min_refresh);
        if !recent {
            self.wanted.notify_one();
        }
    }

    /// Fetches the issuer's keys once (the fetcher's step, and `connect-facade check`'s).
    pub(crate) async fn fetch(&self) -> Result<Fetched, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded())
            .await
            .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))?
    }

    async fn fetch_unbounded(&self) -> Result<Fetched, String> {
        let (document, max_age) = self.get(&self.source.url).await?;
        let (set, max_age, from) = if document.get("keys").is_some() {
            (document, max_age, self.source.url.clone())
        } else if let Some(uri) = document.get("jwks_uri").and_then(|uri| uri.as_str()) {
            if !uri.starts_with("https://") {
                return Err(format!(
                    "the discovery document's jwks_uri {uri} is not https"
                ));
            }
            let (set, set_max_age) = self.get(uri).await?;
            (set, set_max_age.or(max_age), uri.to_owned())
        } else {
            return Err(
                "the answer is neither a JWK set (`keys`) nor a discovery document (`jwks_uri`)"
                    .to_owned(),
            );
        };
        let fingerprint: [u8; 32] = Sha256::digest(set["keys"].to_string().as_bytes()).into();
        let set: JwkSet = serde_json::from_value(set)
            .map_err(|error| format!("{from} is not a JWK set: {error}"))?;
        let (keys, problems) = key_map(&set);
        if keys.is_empty() {
            return Err(format!(
                "{from} holds no usable key{}",
                problems
                    .first()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ));
        }
        Ok(Fetched {
            keys,
            fingerprint,
            problems,
            max_age,
            from,
        })
    }

    /// GETs `url` as JSON; the document and its `max-age`.
    async fn get(&self, url: &str) -> Result<(serde_json::Value, Option<Duration>), String> {
        let mut request = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(path) = &self.source.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read token_file {}: {error}", path.display()))?;
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let request = request
            .body(Empty::new())
            .map_err(|error| format!("{url}: {error}"))?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|error| format!("{url}: {}", chain(&error)))?;
        let status = answer.status();
        let max_age = answer
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age);
        let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| format!("{url}: {error}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        let document = serde_json::from_slice(&body)
            .map_err(|error| format!("{url} did not answer JSON: {error}"))?;
        Ok((document, max_age))
    }

    /// Puts a good fetch's keys in force; whether they differ from the ones in force.
    fn install(&self, fetched: Fetched) -> bool {
        let mut fingerprint = self.fingerprint.lock();
        if *fingerprint == Some(fetched.fingerprint) {
            return false;
        }
        *fingerprint = Some(fetched.fingerprint);
        self.keys.store(Arc::new(fetched.keys));
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// When to fetch again after a good fetch.
    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.source.refresh)
            .clamp(self.source.min_refresh, self.source.refresh)
    }
}

/// A rustls client trusting `ca_pem`, or the system's roots.
fn https_client(
    ca_file: Option<&Path>,
    ca_pem: Option<&[u8]>,
) -> Result<Client<HttpsConnector<HttpConnector>, Empty<Bytes>>, String> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match (ca_file, ca_pem) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate =
                    certificate.map_err(|error| format!("ca_file {}: {error}", path.display()))?;
                roots
                    .add(certificate)
                    .map_err(|error| format!("ca_file {}: {error}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {} holds no certificate", path.display()));
            }
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|error| error.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(config)
        }
        _ => builder
            .with_provider_and_native_roots(provider)
            .map_err(|error| format!("no system CA certificates ({error}): set ca_file"))?,
    };
    let connector = builder.https_only().enable_http1().enable_http2().build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// `max-age` of a `Cache-Control` value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|directive| directive.trim().strip_prefix("max-age="))
        .find_map(|seconds| seconds.trim().parse().ok())
        .map(Duration::from_secs)
}

/// An error and its causes, which hyper's client keeps apart (`client error (Connect)` alone says
/// little).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The fetchers running, one per source, and how to start one.
#[derive(Clone, Default)]
pub struct KeyFetchers {
    running: Arc<Mutex<HashMap<Source, Weak<RemoteKeys>>>>,
    /// `None`: sets are never fetched (a configuration check).
    start: Option<(Tasks, JwksMetrics)>,
}

impl std::fmt::Debug for KeyFetchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFetchers")
            .field("running", &self.running.lock().len())
            .finish()
    }
}

impl KeyFetchers {
    pub fn new(tasks: Tasks, metrics: JwksMetrics) -> Self {
        Self {
            running: Arc::default(),
            start: Some((tasks, metrics)),
        }
    }

    /// The set running for `fresh`'s source, or `fresh`, its fetcher started.
    pub(crate) fn adopt(&self, fresh: &Arc<RemoteKeys>) -> Arc<RemoteKeys> {
        let Some((tasks, metrics)) = &self.start else {
            return fresh.clone();
        };
        let mut running = self.running.lock();
        running.retain(|_, keys| keys.strong_count() > 0);
        if let Some(live) = running.get(&fresh.source).and_then(Weak::upgrade) {
            return live;
        }
        running.insert(fresh.source.clone(), Arc::downgrade(fresh));
        tasks.spawn_until_stopped(fetch_forever(Arc::downgrade(fresh), metrics.clone()));
        fresh.clone()
    }
}

/// Fetches `keys` on its schedule until no version of the auth file names it, or the process stops.
async fn fetch_forever(keys: Weak<RemoteKeys>, metrics: JwksMetrics) {
    let mut failures: u32 = 0;
    loop {
        let Some(keys) = keys.upgrade() else { return };
        *keys.last_fetch.lock() = Some(Instant::now());
        let issuer = keys.source.issuer.clone();
        let delay = match keys.fetch().await {
            Ok(fetched) => {
                failures = 0;
                metrics.fetched(&issuer, true);
                for problem in &fetched.problems {
                    tracing::warn!(
                        issuer,
                        from = fetched.from,
                        problem,
                        "a key of the issuer's set is not used"
                    );
                }
                let delay = keys.next_refresh(fetched.max_age);
                let (count, from) = (fetched.keys.len(), fetched.from.clone());
                if keys.install(fetched) {
                    tracing::info!(issuer, from, keys = count, "issuer's keys fetched");
                }
                metrics.keys(&issuer, count);
                delay
            }
            Err(error) => {
                failures += 1;
                metrics.fetched(&issuer, false);
                let held = keys.keys.load().len();
                if held == 0 {
                    tracing::warn!(
                        issuer,
                        url = keys.source.url,
                        error,
                        "cannot fetch the issuer's keys: its tokens are refused until a fetch succeeds"
                    );
                } else {
                    tracing::warn!(
                        issuer,
                        url = keys.source.url,
                        error,
                        keys = held,
                        "cannot fetch the issuer's keys: the last ones fetched stay in use"
                    );
                }
                let cap = MAX_RETRY.min(keys.source.refresh);
                Duration::from_secs(1u64 << failures.min(6).saturating_sub(1)).min(cap)
            }
        };
        let (wanted, stop) = (keys.wanted.clone(), keys.stop.clone());
        drop(keys);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wanted.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    issuer: String,
    result: &'static str,
}

/// The fetchers' metrics.
#[derive(Clone, Debug, Default)]
pub struct JwksMetrics {
    fetches: Family<FetchLabels, Counter>,
    keys: Family<IssuerLabels, Gauge>,
    fetched_at: Family<IssuerLabels, Gauge>,
}

impl JwksMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self::default();
        registry.register(
            "jwks_fetches",
            "Fetches of an issuer's JWK set over HTTPS (jwks_url), by result (ok, error)",
            metrics.fetches.clone(),
        );
        registry.register(
            "jwks_keys",
            "Keys in force from an issuer's fetched JWK set",
            metrics.keys.clone(),
        );
        registry.register(
            "jwks_fetched_timestamp_seconds",
            "When an issuer's JWK set was last fetched successfully (Unix time)",
            metrics.fetched_at.clone(),
        );
        metrics
    }

    fn fetched(&self, issuer: &str, ok: bool) {
        let labels = FetchLabels {
            issuer: issuer.to_owned(),
            result: if ok { "ok" } else { "error" },
        };
        self.fetches.get_or_create(&labels).inc();
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.fetched_at
                .get_or_create(&IssuerLabels {
                    issuer: issuer.to_owned(),
                })
                .set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    fn keys(&self, issuer: &str, count: usize) {
        self.keys
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_among_other_directives() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(
            max_age("max-age=abc, max-age=5"),
            Some(Duration::from_secs(5))
        );
    }
}
