//! TLS and mutual TLS with certificates made for the test (rcgen), checked by a real TLS client.

use std::path::{Path, PathBuf};

use connect_facade::{app::App, config::ServeConfig, simulator::fixtures::Fixtures};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{TestApp, entire_session, offline_config, spawn_with};
use connect_facade::proto::contact_service_client::ContactServiceClient;

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

    pub fn write(&self, file: &str, pem: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, pem).unwrap();
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
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.tls_client_ca = client_ca;
        configure(c);
    })
    .await
}

pub fn tls_client(
    app: &TestApp,
    ca_pem: &str,
    identity: Option<(String, String)>,
) -> ContactServiceClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    ContactServiceClient::new(channel)
}

#[tokio::test]
async fn tls_serves_calls_and_refuses_plaintext() {
    let pki = Pki::new("server");
    let app = tls_app(&pki, None).await;
    let response = tls_client(&app, &pki.ca_pem, None)
        .create_persistent_contact_association(entire_session())
        .await
        .expect("a TLS call succeeds");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    assert!(
        app.call(entire_session()).await.is_err(),
        "plaintext is not served on a TLS port"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_callers_without_a_certificate_from_the_client_ca() {
    let pki = Pki::new("mtls");
    let client_ca = pki.write("client-ca.pem", &pki.ca_pem);
    let app = tls_app(&pki, Some(&client_ca)).await;

    let anonymous = tls_client(&app, &pki.ca_pem, None)
        .create_persistent_contact_association(entire_session())
        .await;
    assert!(anonymous.is_err(), "no client certificate: refused");

    let stranger = Pki::new("stranger");
    let foreign = tls_client(&app, &pki.ca_pem, Some(stranger.leaf("intruder")))
        .create_persistent_contact_association(entire_session())
        .await;
    assert!(foreign.is_err(), "a certificate from another CA: refused");
    assert!(app.simulator.requests().is_empty(), "AWS never called");

    let response = tls_client(&app, &pki.ca_pem, Some(pki.leaf("billing-service")))
        .create_persistent_contact_association(entire_session())
        .await
        .expect("a certificate from the client CA is accepted");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
}

#[tokio::test]
async fn a_bad_certificate_file_stops_startup() {
    let pki = Pki::new("bad");
    let cert = pki.write("server.pem", "not a certificate");
    let key = pki.write("server.key", "not a key");
    let mut config = offline_config();
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let err = App::build(config).await.err().expect("startup fails");
    assert!(err.to_string().contains("TLS"), "{err}");
}
