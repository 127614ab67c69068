//! A test PKI (rcgen): a CA, leaf certificates, files to renew, and TLS clients that trust it.

use crate::support::{TestApp, entire_session, spawn_with};
use connect_facade::proto::contact_service_client::ContactServiceClient;
use connect_facade::{config::ServeConfig, simulator::fixtures::Fixtures};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority and what it signed, as PEM.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "connect-facade-tls-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            dir,
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `name` (also its DNS name); returns (cert PEM, key PEM).
    pub fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate with no subject but a SPIFFE ID in its URI SAN, as SPIRE and meshes
    /// issue them; returns (cert PEM, key PEM).
    pub fn spiffe_leaf(&self, spiffe_id: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(spiffe_id).unwrap(),
        ));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf certificate for `name` that expired on 2021-01-01; returns (cert PEM, key PEM).
    pub fn expired_leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `file` whole at once (through a rename, as Kubernetes updates a Secret), so a reload
    /// never reads it half written.
    pub fn write(&self, file: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(file);
        let partial = self.dir.join(format!("{file}.partial"));
        std::fs::write(&partial, pem).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn tls_app(pki: &Pki, client_ca: Option<&Path>) -> TestApp {
    tls_app_with(pki, client_ca, |_| {}).await
}

/// A TLS facade (mutual when `client_ca` is given), further configured by `configure`.
pub async fn tls_app_with(
    pki: &Pki,
    client_ca: Option<&Path>,
    configure: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let (cert, key) = pki.leaf("localhost");
    let cert = pki.write("server.pem", &cert);
    let key = pki.write("server.key", &key);
    let client_ca = client_ca.map(Path::to_path_buf);
    spawn_with(Fixtures::demo(), move |c| {
        c.listening.tls_cert = Some(cert);
        c.listening.tls_key = Some(key);
        c.listening.tls_client_ca = client_ca;
        configure(c);
    })
    .await
}

pub fn tls_client(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<(String, String)>,
) -> ContactServiceClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    ContactServiceClient::new(channel)
}

/// Whether a call reached the service: any answer from it counts (the demo call, repeated, is
/// answered FAILED_PRECONDITION), while a refused TLS handshake is UNAVAILABLE.
pub fn answered<T>(result: Result<T, tonic::Status>) -> bool {
    match result {
        Ok(_) => true,
        Err(status) => status.code() != tonic::Code::Unavailable,
    }
}

/// Whether a new TLS connection trusting only `ca_pem` reaches the service.
pub async fn reaches_service(addr: std::net::SocketAddr, ca_pem: &str) -> bool {
    answered(
        tls_client(addr, ca_pem, None)
            .create_persistent_contact_association(entire_session())
            .await,
    )
}

/// Waits (at most 5 s) until a new TLS connection trusting only `ca_pem` reaches the service.
pub async fn until_served_by(addr: std::net::SocketAddr, ca_pem: &str) {
    crate::support::eventually(
        "a connection trusting the new CA is served",
        Duration::from_secs(5),
        || reaches_service(addr, ca_pem),
    )
    .await;
}

/// The server's certificate replaced by one from `pki`, in the files the app was started with.
pub fn renew(started: &Pki, pki: &Pki) {
    let (cert, key) = pki.leaf("localhost");
    started.write("server.pem", &cert);
    started.write("server.key", &key);
}
