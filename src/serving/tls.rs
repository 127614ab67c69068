//! TLS for the gRPC listener, with certificates reloaded without a restart.
//!
//! tonic's `ServerTlsConfig` is fixed once the server starts, so a renewed certificate (cert-manager
//! renews well before expiry) would need a restart. Here the listener makes the TLS handshake itself:
//! each connection is accepted with the rustls configuration current at that moment, and that
//! configuration is rebuilt from the PEM files on SIGHUP and whenever their contents change.
//!
//! The files are re-read with every other file `serve` was given ([`crate::reload`], every
//! `--reload-interval` and on SIGHUP) rather than watched: Kubernetes updates a
//! mounted Secret by swapping a symlink two levels up, which a watch on the files misses; re-reading
//! three small files is simple and certain. A reload that fails (unreadable or invalid PEM, a key
//! that does not match the certificate) keeps the configuration in use and logs why; connections
//! already open keep the certificate they were made with.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicI64},
    time::Duration,
};

use tokio::{net::TcpStream, sync::watch};
use tokio_rustls::{
    Accept, TlsAcceptor,
    rustls::{
        RootCertStore, ServerConfig,
        crypto::aws_lc_rs,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    },
};

use crate::metrics::{MetricsRegistry, OutcomeLabels};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS file {path}: {source}")]
    File { path: String, source: io::Error },
    #[error("TLS file {path} is not valid PEM: {source}")]
    Pem {
        path: String,
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    #[error("TLS file {path} holds no certificate")]
    NoCertificate { path: String },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
    #[error("invalid client CA (--tls-client-ca): {0}")]
    ClientCa(#[from] tokio_rustls::rustls::server::VerifierBuilderError),
}

/// The PEM files TLS is served from (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The files' bytes, compared to tell whether a reload has anything new.
#[derive(Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// A reload's TLS files, read and checked, not yet in force.
pub struct PreparedTls {
    files: TlsFiles,
    contents: Contents,
    config: ServerConfig,
}

impl TlsFiles {
    fn same_paths(&self, other: &TlsFiles) -> bool {
        self.cert == other.cert && self.key == other.key && self.client_ca == other.client_ca
    }

    fn read(&self) -> Result<Contents, TlsError> {
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_deref().map(read).transpose()?,
        })
    }

    /// The rustls configuration the files describe (HTTP/2 only, as gRPC needs).
    fn server_config(&self, contents: &Contents) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        // Decided by the flag, not by what was read: a client CA missing from `contents` fails the
        // load (no certificate) rather than serving without client authentication.
        let builder = match &self.client_ca {
            Some(path) => {
                let pem = contents.client_ca.as_deref().unwrap_or_default();
                let mut roots = RootCertStore::empty();
                for ca in certificates(path, pem)? {
                    roots.add(ca)?;
                }
                builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?,
                )
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|source| TlsError::Pem {
            path: self.key.display().to_string(),
            source,
        })?;
        // with_single_cert also checks that the key is the certificate's.
        let mut config =
            builder.with_single_cert(certificates(&self.cert, &contents.cert)?, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// TLS's families: reloads, and the served certificate's expiry. Registered whether or not TLS is
/// on; the expiry's series appears only with TLS on, so that an expiry alert never fires on a
/// plaintext server.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    reloads: Family<OutcomeLabels, Counter>,
    expiry: Family<CertLabels, Gauge<i64, AtomicI64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    cert: String,
}

impl TlsMetrics {
    pub fn register(registry: &mut MetricsRegistry) -> Self {
        let metrics = Self {
            reloads: Family::default(),
            expiry: Family::default(),
        };
        registry.register(
            "tls_reloads",
            "TLS certificate reloads (SIGHUP or changed files), by result (ok, error)",
            metrics.reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate served over TLS (seconds since the epoch), by file; alert well before it",
            metrics.expiry.clone(),
        );
        metrics
    }

    fn reloaded(&self, ok: bool) {
        self.reloads.get_or_create(&OutcomeLabels::of(ok)).inc();
    }

    fn set_certificate_expiry(&self, cert: &str, not_after: i64) {
        self.expiry
            .get_or_create(&CertLabels {
                cert: cert.to_owned(),
            })
            .set(not_after);
    }
}

/// The served certificate's expiry (its `notAfter`, seconds since the epoch), for the metric.
fn expiry(contents: &Contents) -> Option<i64> {
    let leaf = CertificateDer::pem_slice_iter(&contents.cert)
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The TLS configuration in use, and what keeps it current.
pub struct Tls {
    files: TlsFiles,
    /// What the files held at the last look, applied or not: invalid contents are reported once,
    /// not at every look (an unreadable file is reported at every look until it is back).
    seen: Contents,
    current: watch::Sender<Arc<ServerConfig>>,
    metrics: TlsMetrics,
}

impl Tls {
    /// Reads and checks the files: a bad file stops startup before the server listens.
    pub fn load(files: TlsFiles, metrics: TlsMetrics) -> Result<Self, TlsError> {
        let seen = files.read()?;
        let config = files.server_config(&seen)?;
        let tls = Self {
            files,
            seen,
            current: watch::Sender::new(Arc::new(config)),
            metrics,
        };
        tls.export_expiry();
        Ok(tls)
    }

    /// When the served certificate expires (its `notAfter`).
    pub fn certificate_expiry(&self) -> Option<std::time::SystemTime> {
        let seconds = u64::try_from(expiry(&self.seen)?).ok()?;
        Some(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
    }

    fn export_expiry(&self) {
        if let Some(not_after) = expiry(&self.seen) {
            let cert = self.files.cert.display().to_string();
            self.metrics.set_certificate_expiry(&cert, not_after);
        }
    }

    /// The TLS handshake of an accepted connection, with the configuration current when it
    /// arrived (the listener bounds how long it may take: [`crate::serving::listener`]).
    pub fn handshake(&self) -> impl Fn(TcpStream) -> Accept<TcpStream> + Send + 'static {
        let config = self.current.subscribe();
        move |stream| TlsAcceptor::from(config.borrow().clone()).accept(stream)
    }

    /// Reads and checks `files` (the ones in use, or a reload's), as at startup, without putting
    /// them in force; `None` when they hold exactly what is in force.
    pub fn prepare(&self, files: &TlsFiles) -> Result<Option<PreparedTls>, TlsError> {
        let contents = files.read()?;
        if contents == self.seen && files.same_paths(&self.files) {
            return Ok(None);
        }
        let config = files.server_config(&contents)?;
        Ok(Some(PreparedTls {
            files: files.clone(),
            contents,
            config,
        }))
    }

    /// Puts prepared files in force for the connections accepted from now on.
    pub fn apply(&mut self, prepared: PreparedTls) {
        self.files = prepared.files;
        self.seen = prepared.contents;
        self.current.send_replace(Arc::new(prepared.config));
        self.metrics.reloaded(true);
        self.export_expiry();
        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
    }

    /// Counts a reload that could not be applied (the reload logs why).
    pub fn failed(&self) {
        self.metrics.reloaded(false);
    }
}
