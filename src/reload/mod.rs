//! Live changes: one reload path for every file `serve` was given (the `--config` files, the routes,
//! callers and TLS files), on SIGHUP and when a file's contents change (re-read every
//! `--reload-interval`: Kubernetes swaps a symlink to update a mounted ConfigMap or Secret, which
//! file watches often miss).
//!
//! A reload reads everything again as at startup (the command line with its files, then the files
//! they name) and checks all of it before applying any of it: on any error what is in force stays,
//! and the error is logged once, with its file, line and key. Settings only a restart applies
//! ([`restart`]) keep their value and are reported; the rest applies at once:
//!
//! - callers: each call keeps the set it was admitted with ([`crate::auth::LiveCallers`]);
//! - routes, and the middleware's settings (rates, bursts, queue wait, retries, the breaker, the
//!   calls in flight): the routes are rebuilt, calls in flight keep the route they started on;
//! - TLS files, and the limits on connections (how many, their handshake, HTTP/2 streams and
//!   windows, keepalive, idle and age bounds): new connections get them, open ones keep theirs;
//! - `--default-deadline`: calls that arrive from then on (a call keeps the deadline it was given);
//! - the log filter (`--log-filter`).
//!
//! One task holds all of it, so two reloads never interleave, and a file that changes while
//! another is being read is picked up by the next look.

mod metrics;
mod restart;

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use clap::FromArgMatches;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub(crate) use metrics::ReloadMetrics;

use crate::{
    app::{self, LivePeers},
    auth::{Callers, LiveCallers},
    call::deadline::DefaultDeadline,
    config::{self, ServeConfig},
    routes::{Change, RouteMetrics, router::Router, spec::RouteSpec},
    serving::{
        reload::Triggers,
        tls::{PreparedTls, Tls, TlsFiles},
    },
    telemetry,
    upstream::UpstreamBase,
};

/// What a reload can change in the running app.
pub(crate) struct Live {
    pub router: Arc<Router>,
    pub route_metrics: RouteMetrics,
    pub callers: Option<LiveCallers>,
    pub tls: Option<Tls>,
    /// For the region of the one route a configuration without a routes file has.
    pub base: UpstreamBase,
    pub default_deadline: DefaultDeadline,
    pub peers: LivePeers,
}

/// What is in force, as the admin API shows it.
#[derive(Debug, Default)]
pub struct InForce {
    /// The hash of the files (`connect_facade_config_info{hash}`).
    pub hash: String,
    /// The effective configuration, as `config print` writes it.
    pub effective: String,
}

/// Everything a reload read and checked, not yet in force.
struct Prepared {
    config: ServeConfig,
    specs: Vec<RouteSpec>,
    /// The auth file's callers, when its contents changed.
    callers: Option<Callers>,
    tls: Option<PreparedTls>,
}

/// The one reload path, and what is in force.
pub(crate) struct Reloader {
    in_force: ServeConfig,
    specs: Vec<RouteSpec>,
    /// The hash of the files in force, and of each alone (to tell which changed).
    hash: String,
    file_hashes: Vec<(PathBuf, String)>,
    /// The hash of the files at the last look, applied or refused: a refused file is reported
    /// once, not at every look.
    seen: String,
    live: Live,
    metrics: ReloadMetrics,
    view: Arc<ArcSwap<InForce>>,
}

impl Reloader {
    pub fn new(
        config: ServeConfig,
        specs: Vec<RouteSpec>,
        live: Live,
        metrics: ReloadMetrics,
    ) -> Self {
        let keys = key_files(live.callers.as_ref());
        let hash = fingerprint(&inputs(&config, &keys));
        metrics.in_force(&hash, None);
        let view = Arc::new(ArcSwap::from_pointee(InForce {
            hash: hash.clone(),
            effective: effective(&config),
        }));
        Self {
            view,
            file_hashes: file_hashes(&config, &keys),
            seen: hash.clone(),
            hash,
            in_force: config,
            specs,
            live,
            metrics,
        }
    }

    /// The task: a reload on SIGHUP (watched from now: without a handler, SIGHUP would end the
    /// process) and at each `interval` when a file changed, until `stop`.
    pub fn run(
        mut self,
        interval: Duration,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut triggers = Triggers::new(interval, "the configuration", stop);
        async move {
            while let Some(forced) = triggers.next().await {
                if forced {
                    tracing::info!(reloads = %self.described(), "SIGHUP received");
                }
                self.reload(forced).await;
            }
        }
    }

    /// What is in force, kept current by the reloads.
    pub fn view(&self) -> Arc<ArcSwap<InForce>> {
        self.view.clone()
    }

    /// The files a reload reads, for the SIGHUP line.
    fn described(&self) -> String {
        let files = inputs(&self.in_force, &key_files(self.live.callers.as_ref()));
        if files.is_empty() {
            return "nothing (no file: the configuration came from the environment and flags)"
                .to_owned();
        }
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        names.join(", ")
    }

    /// Reads every file again; applies all of it when it changed and is valid.
    pub async fn reload(&mut self, forced: bool) {
        let candidate = self.read_config();
        let keys = key_files(self.live.callers.as_ref());
        let hash = fingerprint(&inputs(candidate.as_ref().unwrap_or(&self.in_force), &keys));
        if hash == self.seen && !(forced && hash != self.hash) {
            return;
        }
        self.seen = hash.clone();
        let named = candidate.as_ref().unwrap_or(&self.in_force);
        let (routes_changed, tls_changed) = (
            named.aws.routes.iter().any(|p| self.changed(p)),
            tls_files(named).is_some_and(|f| {
                self.changed(&f.cert)
                    || self.changed(&f.key)
                    || f.client_ca.is_some_and(|ca| self.changed(&ca))
            }),
        );
        match candidate.and_then(|config| self.prepare(config)) {
            Ok(prepared) => self.apply(prepared, hash).await,
            Err(error) => {
                // The routes' and TLS's own reload counters say whether their file was refused.
                self.metrics.reloaded(false);
                if routes_changed {
                    let routes = self.live.router.table().routes().len();
                    self.live.route_metrics.reloaded(false, routes);
                }
                if let Some(tls) = self.live.tls.as_ref().filter(|_| tls_changed) {
                    tls.failed();
                }
                tracing::error!(%error, "reload refused: nothing of it applied, the settings in force stay");
            }
        }
    }

    /// Whether `path`'s contents differ from those in force.
    fn changed(&self, path: &PathBuf) -> bool {
        let now = fingerprint(std::slice::from_ref(path));
        !self.file_hashes.iter().any(|(p, h)| p == path && *h == now)
    }

    /// `serve`'s configuration as the command line and its files give it now.
    fn read_config(&self) -> Result<ServeConfig, String> {
        let command_line = &self.in_force.command_line;
        if command_line.is_empty() {
            return Ok(self.in_force.clone());
        }
        let (_, matches) = config::load_matches(command_line).map_err(|e| e.to_string())?;
        let serve = config::matches_at(&matches, &["serve"])
            .ok_or_else(|| "the command line no longer names serve".to_owned())?;
        let mut config = ServeConfig::from_arg_matches(serve).map_err(|e| e.to_string())?;
        config.static_credentials = self.in_force.static_credentials.clone();
        config.command_line = command_line.clone();
        Ok(config)
    }

    /// Everything `config` names, read and checked as at startup.
    fn prepare(&self, config: ServeConfig) -> Result<Prepared, String> {
        let problems = app::check(&config);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let specs = app::route_specs(&config, &self.live.base).map_err(|e| e.to_string())?;
        let keys_changed = key_files(self.live.callers.as_ref())
            .iter()
            .any(|path| self.changed(path));
        let callers = match &config.callers.auth_file {
            Some(path) if self.changed(path) || keys_changed => {
                Some(Callers::from_path(path).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let tls = match (&self.live.tls, tls_files(&config)) {
            (Some(tls), Some(files)) => tls.prepare(&files).map_err(|e| e.to_string())?,
            _ => None,
        };
        Ok(Prepared {
            config,
            specs,
            callers,
            tls,
        })
    }

    async fn apply(&mut self, mut prepared: Prepared, hash: String) {
        let pending = restart::keep_in_force(&self.in_force, &mut prepared.config);
        if !pending.is_empty() {
            for setting in &pending {
                self.metrics.restart_required(setting);
            }
            tracing::warn!(settings = ?pending, "changed settings that only a restart applies: their values in force stay until then");
        }
        let config = prepared.config;
        if config.telemetry.log_filter != self.in_force.telemetry.log_filter {
            // Checked when the configuration was parsed.
            if let Err(error) = telemetry::set_log_filter(config.telemetry.log_filter.as_deref()) {
                tracing::error!(%error, "the log filter could not be changed");
            }
        }
        if config.retries.default_deadline != self.in_force.retries.default_deadline {
            self.live
                .default_deadline
                .set(config.retries.default_deadline);
        }
        self.live.peers.apply(&config);
        if let (Some(live), Some(callers)) = (&self.live.callers, prepared.callers) {
            live.replace(callers);
        }
        let router = &self.live.router;
        let rebuilt = router
            .reconfigure(&config.middleware(), &prepared.specs)
            .await;
        if prepared.specs != self.specs {
            if !rebuilt {
                router.replace(&prepared.specs).await;
            }
            let change = Change::between(&self.specs, &prepared.specs);
            self.live.route_metrics.reloaded(true, prepared.specs.len());
            tracing::info!(added = ?change.added, removed = ?change.removed, changed = ?change.changed, routes = prepared.specs.len(), "routes reloaded");
        }
        if let (Some(tls), Some(files)) = (&mut self.live.tls, prepared.tls) {
            tls.apply(files);
        }
        self.metrics.in_force(&hash, Some(&self.hash));
        self.metrics.reloaded(true);
        tracing::info!(hash = %hash, previous = %self.hash, middleware_rebuilt = rebuilt, "configuration reloaded");
        self.view.store(Arc::new(InForce {
            hash: hash.clone(),
            effective: effective(&config),
        }));
        self.hash = hash;
        self.file_hashes = file_hashes(&config, &key_files(self.live.callers.as_ref()));
        self.in_force = config;
        self.specs = prepared.specs;
    }
}

/// `config` as `config print` writes it, from the command line it was read from; a configuration
/// built in code (tests) has none, and shows its fields instead (their `Debug` redacts secrets).
fn effective(config: &ServeConfig) -> String {
    let from_command_line = (!config.command_line.is_empty())
        .then(|| config::load_matches(&config.command_line).ok())
        .flatten()
        .and_then(|(_, matches)| {
            config::matches_at(&matches, &["serve"]).map(config::describe::effective)
        });
    from_command_line.unwrap_or_else(|| {
        format!(
            "# built in code, with no command line to describe it
# {config:?}
"
        )
    })
}

/// The TLS files `config` names, when TLS is on.
fn tls_files(config: &ServeConfig) -> Option<TlsFiles> {
    let listening = &config.listening;
    Some(TlsFiles {
        cert: listening.tls_cert.clone()?,
        key: listening.tls_key.clone()?,
        client_ca: listening.tls_client_ca.clone(),
    })
}

/// Every file `config` makes `serve` read, in a fixed order, then the JWK sets the callers in force
/// name (`key_files`).
fn inputs(config: &ServeConfig, key_files: &[PathBuf]) -> Vec<PathBuf> {
    let listening = &config.listening;
    config
        .config
        .iter()
        .chain(&config.aws.routes)
        .chain(&config.callers.auth_file)
        .chain(&listening.tls_cert)
        .chain(&listening.tls_key)
        .chain(&listening.tls_client_ca)
        .chain(key_files)
        .cloned()
        .collect()
}

/// The JWK set files of the callers in force.
fn key_files(callers: Option<&LiveCallers>) -> Vec<PathBuf> {
    callers.map_or_else(Vec::new, |live| live.current().callers.key_files().to_vec())
}

/// Each file's own hash.
fn file_hashes(config: &ServeConfig, key_files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    inputs(config, key_files)
        .into_iter()
        .map(|path| {
            let hash = fingerprint(std::slice::from_ref(&path));
            (path, hash)
        })
        .collect()
}

/// A short hash of the files' names and contents (an unreadable file hashes as such, so it
/// changes the hash when it comes back).
fn fingerprint(paths: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    for path in paths {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        match std::fs::read(path) {
            Ok(contents) => hasher.update(&contents),
            Err(error) => hasher.update(format!("unreadable: {:?}", error.kind())),
        }
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_names_and_contents() {
        let dir = std::env::temp_dir().join(format!("reload-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.yaml");
        let missing = dir.join("missing.yaml");
        std::fs::write(&file, "one").unwrap();
        let first = fingerprint(std::slice::from_ref(&file));
        assert_eq!(first, fingerprint(std::slice::from_ref(&file)));
        std::fs::write(&file, "two").unwrap();
        assert_ne!(first, fingerprint(std::slice::from_ref(&file)));
        assert_ne!(
            fingerprint(std::slice::from_ref(&missing)),
            fingerprint(&[file, missing.clone()])
        );
        assert_eq!(fingerprint(&[]).len(), 12);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
