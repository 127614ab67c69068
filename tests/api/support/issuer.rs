//! An OIDC issuer's HTTPS endpoint on loopback, as a cluster's API server serves it: the discovery
//! document at `/.well-known/openid-configuration` naming its JWK set at `/openid/v1/jwks`. The
//! set can change, and the endpoint stop and start again on its port.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::aws_lc_rs,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

use super::Pki;

/// What the endpoint serves and saw.
#[derive(Default)]
struct Served {
    jwks: Mutex<String>,
    /// The `authorization` header of the last request.
    authorization: Mutex<Option<String>>,
    requests: AtomicUsize,
}

pub struct IssuerEndpoint {
    pub addr: SocketAddr,
    served: Arc<Served>,
    tls: TlsAcceptor,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl IssuerEndpoint {
    /// Serves `jwks` over HTTPS with a `localhost` certificate of `pki`.
    pub async fn start(pki: &Pki, jwks: String) -> Self {
        let (cert, key) = pki.leaf("localhost");
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let served = Arc::new(Served::default());
        *served.jwks.lock() = jwks;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut endpoint = Self {
            addr: listener.local_addr().unwrap(),
            served,
            tls: TlsAcceptor::from(Arc::new(config)),
            serving: None,
        };
        endpoint.serve(listener);
        endpoint
    }

    /// The discovery document's URL (what `jwks_url` names).
    pub fn discovery_url(&self) -> String {
        format!(
            "https://localhost:{}/.well-known/openid-configuration",
            self.addr.port()
        )
    }

    pub fn set_jwks(&self, jwks: String) {
        *self.served.jwks.lock() = jwks;
    }

    pub fn requests(&self) -> usize {
        self.served.requests.load(Ordering::Relaxed)
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.served.authorization.lock().clone()
    }

    /// Closes the port and every connection: fetches fail to connect.
    pub fn stop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The aborted task's listener closes as the runtime gets to it.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (served, tls, port) = (self.served.clone(), self.tls.clone(), self.addr.port());
        self.serving = Some(tokio::spawn(async move {
            // Dropped with the task: aborting it closes every connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (served, tls) = (served.clone(), tls.clone());
                connections.spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let served = served.clone();
                        async move { Ok::<_, Infallible>(answer(&served, &request, port)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }
}

impl Drop for IssuerEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer<B>(served: &Served, request: &Request<B>, port: u16) -> Response<Full<Bytes>> {
    served.requests.fetch_add(1, Ordering::Relaxed);
    *served.authorization.lock() = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = match request.uri().path() {
        "/.well-known/openid-configuration" => serde_json::json!({
            "issuer": "https://kubernetes.default.svc.cluster.local",
            "jwks_uri": format!("https://localhost:{port}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })
        .to_string(),
        "/openid/v1/jwks" => served.jwks.lock().clone(),
        _ => {
            return Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "public, max-age=3600")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
