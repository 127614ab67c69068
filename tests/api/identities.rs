//! Callers known by the identities platforms give them: a JWT (a Kubernetes projected service
//! account token, an OIDC token) verified against its issuer's JWK set, or a SPIFFE ID in a client
//! certificate's URI SAN. Every refusal is UNAUTHENTICATED with reason CALLER_UNKNOWN on the wire;
//! the cause is counted.

use std::{path::Path, time::Duration};

use connect_facade::{config::ServeConfig, simulator::fixtures::Fixtures};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::{
    IssuerEndpoint, Pki, TestApp, entire_session, eventually, fresh_session, series_value,
    spawn_with, tls_client,
};

const CLUSTER: &str = "https://kubernetes.default.svc.cluster.local";
const OTHER: &str = "https://issuer.other.example";

/// A signing key of an issuer, and its public JWK.
struct Key {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// Ed25519's raw public key (jsonwebtoken makes the other JWKs from the private key itself).
    ed25519_public: Option<Vec<u8>>,
}

impl Key {
    fn new(kid: &str, algorithm: Algorithm) -> Self {
        let (pair, encoding) = match algorithm {
            Algorithm::ES256 => {
                let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                let pem = pair.serialize_pem();
                (pair, EncodingKey::from_ec_pem(pem.as_bytes()).unwrap())
            }
            Algorithm::EdDSA => {
                let pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
                let pem = pair.serialize_pem();
                (pair, EncodingKey::from_ed_pem(pem.as_bytes()).unwrap())
            }
            _ => {
                let pair = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
                let pem = pair.serialize_pem();
                (pair, EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap())
            }
        };
        Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            ed25519_public: (algorithm == Algorithm::EdDSA).then(|| pair.public_key_raw().to_vec()),
        }
    }

    fn jwk(&self) -> Jwk {
        if let Some(public) = &self.ed25519_public {
            return serde_json::from_value(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": self.kid,
                "x": base64url_bytes(public),
            }))
            .unwrap();
        }
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A token with `claims`, signed by this key.
    fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A projected service account token's claims.
fn claims(iss: &str, sub: &str, aud: &str, expires_in: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": iss, "sub": sub, "aud": [aud], "iat": now(), "nbf": now(),
        "exp": now() as i64 + expires_in,
        "kubernetes.io": {"namespace": "billing"}
    })
}

fn write_jwks(path: &Path, keys: &[&Key]) {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    };
    let partial = path.with_extension("partial");
    std::fs::write(&partial, serde_json::to_string(&set).unwrap()).unwrap();
    std::fs::rename(partial, path).unwrap();
}

struct Fleet {
    app: TestApp,
    cluster: Key,
    other: Key,
    dir: std::path::PathBuf,
}

/// A facade whose callers are known by JWTs of two issuers (keys of three algorithms).
async fn with_jwt_callers(name: &str) -> (Fleet, Key, Key) {
    let dir =
        std::env::temp_dir().join(format!("connect-facade-jwt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Key::new("cluster-es256", Algorithm::ES256);
    let rsa = Key::new("cluster-rs256", Algorithm::RS256);
    let ed = Key::new("cluster-eddsa", Algorithm::EdDSA);
    let other = Key::new("other-es256", Algorithm::ES256);
    write_jwks(&dir.join("cluster.json"), &[&cluster, &rsa, &ed]);
    write_jwks(&dir.join("other.json"), &[&other]);
    let auth = dir.join("callers.yaml");
    std::fs::write(
        &auth,
        format!(
            r#"jwt_leeway_seconds: 0
issuers:
  - issuer: {CLUSTER}
    jwks_file: cluster.json
  - issuer: {OTHER}
    jwks_file: other.json
callers:
  - name: billing-api
    jwt: {{issuer: {CLUSTER}, audience: connect-facade, subject: "system:serviceaccount:billing:*"}}
    instances: ["*"]
  - name: partner
    jwt: {{issuer: {OTHER}, audience: connect-facade, subject: partner-app}}
    instances: ["*"]
"#
        ),
    )
    .unwrap();
    let app = spawn_with(Fixtures::demo(), move |c: &mut ServeConfig| {
        c.callers.auth_file = Some(auth);
        c.listening.reload_interval = Duration::from_millis(100);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    (
        Fleet {
            app,
            cluster,
            other,
            dir,
        },
        rsa,
        ed,
    )
}

async fn call_with(app: &TestApp, token: &str) -> Result<(), tonic::Status> {
    let mut request = Request::new(fresh_session());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let answer = app
        .client
        .clone()
        .create_persistent_contact_association(request)
        .await;
    match answer {
        // The fresh chat is unknown to the demo fixtures: NOT_FOUND means the caller got through.
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Ok(_) => Ok(()),
        Err(status) => Err(status),
    }
}

#[tokio::test]
async fn service_account_tokens_of_three_algorithms_are_callers() {
    let (fleet, rsa, ed) = with_jwt_callers("accepted").await;
    let sub = "system:serviceaccount:billing:billing-api";
    for key in [&fleet.cluster, &rsa, &ed] {
        let token = key.sign(claims(CLUSTER, sub, "connect-facade", 600));
        call_with(&fleet.app, &token)
            .await
            .unwrap_or_else(|status| panic!("{:?}: {status:?}", key.algorithm));
    }
    let partner = fleet
        .other
        .sign(claims(OTHER, "partner-app", "connect-facade", 600));
    call_with(&fleet.app, &partner)
        .await
        .expect("the other issuer's caller");
    let metrics = fleet.app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_caller_calls_total{caller="billing-api"}"#
        ),
        Some(3.0)
    );
    let _ = std::fs::remove_dir_all(&fleet.dir);
}

#[tokio::test]
async fn every_bad_token_is_caller_unknown_and_counted_by_cause() {
    let (fleet, _rsa, _ed) = with_jwt_callers("refused").await;
    let sub = "system:serviceaccount:billing:billing-api";
    let key = &fleet.cluster;
    let unsigned = {
        let header = base64url(r#"{"alg":"none","typ":"JWT","kid":"cluster-es256"}"#);
        let body = base64url(&claims(CLUSTER, sub, "connect-facade", 600).to_string());
        format!("{header}.{body}.")
    };
    let hmac_with_public_key = {
        // The public key's bytes as an HMAC secret: the classic algorithm confusion.
        let jwks = std::fs::read(fleet.dir.join("cluster.json")).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("cluster-es256".into());
        jsonwebtoken::encode(
            &header,
            &claims(CLUSTER, sub, "connect-facade", 600),
            &EncodingKey::from_secret(&jwks).unwrap(),
        )
        .unwrap()
    };
    let mut unknown_kid = Header::new(Algorithm::ES256);
    unknown_kid.kid = Some("nobody".into());
    let cases = [
        (
            "expired",
            key.sign(claims(CLUSTER, sub, "connect-facade", -600)),
        ),
        (
            "not_yet_valid",
            key.sign(
                serde_json::json!({"iss": CLUSTER, "sub": sub, "aud": "connect-facade",
                                        "nbf": now() + 600, "exp": now() + 1200}),
            ),
        ),
        (
            "audience",
            key.sign(claims(CLUSTER, sub, "someone-else", 600)),
        ),
        (
            "issuer",
            fleet
                .other
                .sign(claims(CLUSTER, sub, "connect-facade", 600)),
        ),
        (
            "unknown_key",
            jsonwebtoken::encode(
                &unknown_kid,
                &claims(CLUSTER, sub, "connect-facade", 600),
                &key.encoding,
            )
            .unwrap(),
        ),
        ("algorithm", unsigned),
        ("algorithm", hmac_with_public_key),
        (
            "no_caller",
            key.sign(claims(
                CLUSTER,
                "system:serviceaccount:other:x",
                "connect-facade",
                600,
            )),
        ),
        (
            "too_large",
            key.sign(
                serde_json::json!({"iss": CLUSTER, "sub": sub, "aud": "connect-facade",
            "exp": now() + 600, "padding": "x".repeat(9000)}),
            ),
        ),
        ("signature", {
            let token = key.sign(claims(CLUSTER, sub, "connect-facade", 600));
            let (rest, _) = token.rsplit_once('.').unwrap();
            let other = fleet
                .cluster
                .sign(claims(CLUSTER, sub, "connect-facade", 601));
            format!("{rest}.{}", other.rsplit_once('.').unwrap().1)
        }),
    ];
    for (cause, token) in &cases {
        let status = call_with(&fleet.app, token).await.expect_err(cause);
        assert_eq!(status.code(), Code::Unauthenticated, "{cause}: {status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(
            info.reason, "CALLER_UNKNOWN",
            "{cause}: the same answer for every cause"
        );
    }
    let metrics = fleet.app.scrape().await;
    for (cause, expected) in [
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("audience", 1.0),
        ("issuer", 1.0),
        ("unknown_key", 1.0),
        ("algorithm", 2.0),
        ("no_caller", 1.0),
        ("too_large", 1.0),
        ("signature", 1.0),
    ] {
        assert_eq!(
            series_value(
                &metrics,
                &format!(r#"connect_facade_caller_token_refusals_total{{cause="{cause}"}}"#)
            ),
            Some(expected),
            "{cause}"
        );
    }
    let _ = std::fs::remove_dir_all(&fleet.dir);
}

#[tokio::test]
async fn a_rotated_key_set_is_taken_without_a_restart() {
    let (fleet, rsa, ed) = with_jwt_callers("rotated").await;
    let sub = "system:serviceaccount:billing:billing-api";
    let next = Key::new("cluster-next", Algorithm::ES256);
    let token = next.sign(claims(CLUSTER, sub, "connect-facade", 600));
    assert_eq!(
        call_with(&fleet.app, &token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    write_jwks(&fleet.dir.join("cluster.json"), &[&next, &rsa, &ed]);
    eventually("the new key accepted", Duration::from_secs(5), || async {
        call_with(&fleet.app, &token).await.is_ok()
    })
    .await;
    let old = fleet
        .cluster
        .sign(claims(CLUSTER, sub, "connect-facade", 600));
    assert_eq!(
        call_with(&fleet.app, &old).await.unwrap_err().code(),
        Code::Unauthenticated,
        "the retired key is refused"
    );
    let _ = std::fs::remove_dir_all(&fleet.dir);
}

#[tokio::test]
async fn a_spiffe_id_in_the_client_certificate_is_a_caller() {
    let pki = Pki::new("spiffe");
    let auth = pki.write(
        "auth.yaml",
        "callers:\n  - name: reporting\n    spiffe_id: spiffe://cluster.local/ns/reporting/sa/reporting\n    instances: [\"*\"]\n  - name: billing-any\n    spiffe_id: spiffe://cluster.local/ns/billing/*\n    instances: [\"*\"]\n",
    );
    let client_ca = pki.write("client-ca.pem", &pki.ca_pem);
    let app = crate::support::tls_app_with(&pki, Some(&client_ca), move |c| {
        c.callers.auth_file = Some(auth);
    })
    .await;
    for (id, allowed) in [
        ("spiffe://cluster.local/ns/reporting/sa/reporting", true),
        ("spiffe://cluster.local/ns/billing/sa/billing-api", true),
        ("spiffe://cluster.local/ns/reporting/sa/other", false),
        ("spiffe://cluster.local/ns/billingX/sa/a", false),
    ] {
        let answer = tls_client(app.addr, &pki.ca_pem, Some(pki.spiffe_leaf(id)))
            .create_persistent_contact_association(entire_session())
            .await;
        match (allowed, answer) {
            (true, Ok(_)) => {}
            (true, Err(status)) => {
                assert_ne!(status.code(), Code::Unauthenticated, "{id}: {status:?}")
            }
            (false, answer) => {
                assert_eq!(answer.unwrap_err().code(), Code::Unauthenticated, "{id}")
            }
        }
    }
}

fn base64url(text: &str) -> String {
    base64url_bytes(text.as_bytes())
}

fn base64url_bytes(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn a_token_verified_once_is_refused_once_it_expires() {
    let (fleet, _rsa, _ed) = with_jwt_callers("expiring").await;
    let sub = "system:serviceaccount:billing:billing-api";
    let token = fleet
        .cluster
        .sign(claims(CLUSTER, sub, "connect-facade", 2));
    call_with(&fleet.app, &token).await.expect("valid for 2 s");
    call_with(&fleet.app, &token)
        .await
        .expect("again, from the verified tokens");
    // `exp` is whole seconds, signed up to a second after `now()` was read, and the crate treats
    // a token as live through the second of its `exp`: 3.2 s is past it in every case.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_eq!(
        call_with(&fleet.app, &token).await.unwrap_err().code(),
        Code::Unauthenticated,
        "a verified token serves no longer than its exp"
    );
    let _ = std::fs::remove_dir_all(&fleet.dir);
}

fn jwks_text(keys: &[&Key]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    })
    .unwrap()
}

/// A facade whose cluster issuer's keys are fetched from `endpoint` (its discovery document),
/// trusting `pki`'s CA and sending a token of its own with each fetch.
async fn with_fetched_keys(name: &str, pki: &Pki, endpoint: &IssuerEndpoint) -> TestApp {
    let ca = pki.write("issuer-ca.pem", &pki.ca_pem);
    let token = pki.write("facade-token", "facade-own-token\n");
    let auth = pki.write(
        &format!("callers-{name}.yaml"),
        &format!(
            r#"issuers:
  - issuer: {CLUSTER}
    jwks_url: {url}
    ca_file: {ca}
    token_file: {token}
    refresh_seconds: 2
    min_refresh_seconds: 1
callers:
  - name: billing-api
    jwt: {{issuer: {CLUSTER}, audience: connect-facade, subject: "system:serviceaccount:billing:*"}}
    instances: ["*"]
"#,
            url = endpoint.discovery_url(),
            ca = ca.display(),
            token = token.display(),
        ),
    );
    spawn_with(Fixtures::demo(), move |c: &mut ServeConfig| {
        c.callers.auth_file = Some(auth);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

#[tokio::test]
async fn keys_fetched_over_https_verify_tokens_and_follow_a_rotation() {
    let pki = Pki::new("jwks-url");
    let first = Key::new("cluster-2026", Algorithm::RS256);
    let endpoint = IssuerEndpoint::start(&pki, jwks_text(&[&first])).await;
    let app = with_fetched_keys("rotation", &pki, &endpoint).await;
    let sub = "system:serviceaccount:billing:billing-api";

    let token = first.sign(claims(CLUSTER, sub, "connect-facade", 600));
    eventually(
        "the fetched key verifies",
        Duration::from_secs(5),
        || async { call_with(&app, &token).await.is_ok() },
    )
    .await;
    assert_eq!(
        endpoint.last_authorization().as_deref(),
        Some("Bearer facade-own-token"),
        "each fetch carries the token_file's token"
    );

    // The issuer rotates: a new key in, the old one out. A token of the new key asks for a fetch;
    // once it is taken the old key's tokens, even the one verified already, are refused.
    let next = Key::new("cluster-2027", Algorithm::ES256);
    endpoint.set_jwks(jwks_text(&[&next]));
    let rotated = next.sign(claims(CLUSTER, sub, "connect-facade", 600));
    eventually(
        "the rotated-in key verifies",
        Duration::from_secs(5),
        || async { call_with(&app, &rotated).await.is_ok() },
    )
    .await;
    let status = call_with(&app, &token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "CALLER_UNKNOWN"
    );
    let metrics = app.scrape().await;
    let issuer = format!("issuer=\"{CLUSTER}\"");
    assert!(
        series_value(
            &metrics,
            &format!("connect_facade_jwks_fetches_total{{{issuer},result=\"ok\"}}")
        )
        .is_some_and(|ok| ok >= 2.0),
        "{metrics}"
    );
    assert_eq!(
        series_value(&metrics, &format!("connect_facade_jwks_keys{{{issuer}}}")),
        Some(1.0)
    );

    // A stranger's made-up `kid`s: each asks for a fetch, at most one a second is made (two
    // requests: the discovery document and the set), plus the scheduled refresh.
    let before = endpoint.requests();
    let started = std::time::Instant::now();
    for n in 0..20 {
        let stranger = Key::new(&format!("made-up-{n}"), Algorithm::ES256);
        let token = stranger.sign(claims(CLUSTER, sub, "connect-facade", 600));
        assert_eq!(
            call_with(&app, &token).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let fetched = endpoint.requests() - before;
    let bound = 2 * (seconds.ceil() as usize + 1) + 2;
    assert!(
        fetched <= bound,
        "{fetched} requests for 20 unknown kids in {seconds:.1} s (bound {bound})"
    );
}

#[tokio::test]
async fn an_issuer_down_at_startup_or_later_stops_no_call_with_known_keys() {
    let pki = Pki::new("jwks-down");
    let key = Key::new("cluster-key", Algorithm::ES256);
    let mut endpoint = IssuerEndpoint::start(&pki, jwks_text(&[&key])).await;
    endpoint.stop();
    let app = with_fetched_keys("down", &pki, &endpoint).await;
    let sub = |n: u32| format!("system:serviceaccount:billing:api-{n}");

    // Down at startup: the facade serves, its issuer's tokens are refused, and it says why.
    let token = key.sign(claims(CLUSTER, &sub(1), "connect-facade", 600));
    let status = call_with(&app, &token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let errors =
        format!("connect_facade_jwks_fetches_total{{issuer=\"{CLUSTER}\",result=\"error\"}}");
    eventually(
        "the failed fetch counted",
        Duration::from_secs(5),
        || async { series_value(&app.scrape().await, &errors).is_some_and(|n| n >= 1.0) },
    )
    .await;

    // Up: the keys come within the retry's backoff (capped by refresh_seconds).
    endpoint.restart().await;
    eventually(
        "the keys fetched once the issuer answers",
        Duration::from_secs(8),
        || async { call_with(&app, &token).await.is_ok() },
    )
    .await;

    // Down again: fetches fail, the last keys stay, tokens never verified before still pass.
    endpoint.stop();
    let before = series_value(&app.scrape().await, &errors).unwrap_or(0.0);
    eventually("a later fetch failed", Duration::from_secs(8), || async {
        series_value(&app.scrape().await, &errors).is_some_and(|n| n > before)
    })
    .await;
    let fresh = key.sign(claims(CLUSTER, &sub(2), "connect-facade", 600));
    call_with(&app, &fresh)
        .await
        .expect("a new token of a known key, with the issuer down");
}
