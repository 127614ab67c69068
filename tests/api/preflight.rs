//! `connect-facade check` as an operator runs it: the binary, against the simulator standing in for
//! AWS (reached through `AWS_ENDPOINT_URL`, STS included) and real `redis-server`s. Each seeded
//! misconfiguration is found by its own line, with its own message and fix; a healthy setup passes
//! with every line ✓.

use std::{path::PathBuf, process::Stdio, time::Duration};

use connect_facade::simulator::{Simulator, fixtures::Fixtures};
use serde_json::Value;

use crate::support::{IssuerEndpoint, Pki, RedisServer, facade, free_port, loopback};

const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";
const OTHER_INSTANCE: &str = "99999999-8888-7777-6666-555555555555";
const HOME_KEY: &str = "AKIDFACADEHOME000001";
const DENIED_KEY: &str = "AKIDNOPERMISSION0001";
const ROLE: &str = "arn:aws:iam::222222222222:role/connect-facade";

/// The facade's own account (its key holds only sts:AssumeRole in spirit), the instance's account
/// with the role it is reached through, and an account whose key lacks the permission.
const WORLD: &str = r#"
instances:
  - id: 11111111-2222-3333-4444-555555555555
    account: "222222222222"
    region: eu-west-2
    open_chats: true
accounts:
  - id: "111111111111"
    access_key_ids: [AKIDFACADEHOME000001]
  - id: "222222222222"
    roles:
      - arn: arn:aws:iam::222222222222:role/connect-facade
        external_id: ext-uk
  - id: "333333333333"
    access_key_ids: [AKIDNOPERMISSION0001]
    may_associate: false
"#;

/// A scratch directory for one test's files.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "connect-facade-check-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn routes(role_line: &str) -> String {
    format!(
        "routes:\n  - name: uk\n    instances: [\"{INSTANCE}\"]\n    region: eu-west-2\n{role_line}"
    )
}

fn good_routes() -> String {
    routes(&format!("    role_arn: {ROLE}\n    external_id: ext-uk\n"))
}

async fn simulator() -> Simulator {
    Simulator::start(loopback(), Fixtures::parse(WORLD, "test world").unwrap())
        .await
        .unwrap()
}

/// How the check was run and what it answered.
struct Checked {
    code: i32,
    report: Value,
    took: Duration,
}

impl Checked {
    /// The line named `name`.
    fn line(&self, name: &str) -> &Value {
        self.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` line in {:#}", self.report))
    }

    /// Exit 1, and `name` failed as an error whose message and fix say what is expected.
    fn failed(&self, name: &str, message: &str, fix: &str) {
        assert_eq!(self.code, 1, "{:#}", self.report);
        assert_eq!(self.report["ok"], false);
        let line = self.line(name);
        assert_eq!(line["ok"], false, "{line:#}");
        assert_eq!(line["severity"], "error", "{line:#}");
        let said = line["message"].as_str().unwrap();
        assert!(said.contains(message), "message {said:?} lacks {message:?}");
        let fix_said = line["fix"].as_str().unwrap();
        assert!(fix_said.contains(fix), "fix {fix_said:?} lacks {fix:?}");
        assert!(
            line["link"]
                .as_str()
                .unwrap()
                .starts_with("docs/operators/check.md#"),
            "{line:#}"
        );
        assert_eq!(self.line("configuration")["ok"], true);
    }
}

/// `connect-facade check --output json ARGS` against `simulator`, signed with `key`.
async fn check(simulator: &Simulator, key: Option<&str>, args: &[&str]) -> Checked {
    let mut command = facade(&[&["check", "--output", "json"], args].concat());
    command
        .env("AWS_ENDPOINT_URL", simulator.endpoint_url())
        .env("AWS_REGION", "eu-west-2")
        .stdout(Stdio::piped());
    if let Some(key) = key {
        command
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", "simulated-secret");
    }
    run(command).await
}

async fn run(mut command: tokio::process::Command) -> Checked {
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("check finishes within its bound")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Checked {
        code: output.status.code().unwrap(),
        report,
        took: started.elapsed(),
    }
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check() {
    let simulator = simulator().await;
    // Durable: the remembered answers survive a restart.
    let redis = RedisServer::start_with(vec!["--appendonly".into(), "yes".into()]).await;
    let files = Files::new("healthy");
    let pki = Pki::new("check-healthy");
    let (cert, key) = pki.leaf("localhost");
    let routes = files.write("routes.yaml", &good_routes());
    let auth = files.write(
        "callers.yaml",
        &format!(
            "callers:\n  - name: billing\n    token_sha256: {}\n    instances: [\"{INSTANCE}\"]\n",
            "ab".repeat(32)
        ),
    );
    let checked = check(
        &simulator,
        Some(HOME_KEY),
        &[
            "--routes",
            &routes,
            "--auth-file",
            &auth,
            "--quota-store",
            &redis.url(),
            "--tls-cert",
            &pki.write("cert.pem", &cert).display().to_string(),
            "--tls-key",
            &pki.write("key.pem", &key).display().to_string(),
        ],
    )
    .await;
    assert_eq!(checked.code, 0, "{:#}", checked.report);
    assert_eq!(checked.report["ok"], true);
    let names: Vec<&str> = checked.report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            assert_eq!(line["ok"], true, "{line:#}");
            assert!(line["fix"].is_null(), "{line:#}");
            line["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "configuration",
            "region",
            "credentials",
            "identity",
            "clock",
            &format!("route uk: assume {ROLE}"),
            &format!("route uk: instance {INSTANCE}"),
            "quota store: reachable",
            "quota store: durability",
            "quota store: scripts",
            "tls",
            "callers",
        ]
    );
    assert!(
        checked.line("credentials")["message"]
            .as_str()
            .unwrap()
            .contains("Environment"),
        "names the provider that answered: {:#}",
        checked.line("credentials")
    );
    assert!(
        !checked.report.to_string().contains("simulated-secret"),
        "never a secret"
    );
    assert!(
        checked.line("identity")["message"]
            .as_str()
            .unwrap()
            .contains("account 111111111111")
    );
    // No side effect an operator would notice: the probe associated nothing, and the scripts'
    // keys are the check's own and expire.
    assert_eq!(simulator.requests().len(), 1, "one probe, one instance");
    let mut store = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut store)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the scripts ran");
    for key in keys {
        assert!(key.contains("{check-"), "only the check's own keys: {key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut store)
            .await
            .unwrap();
        // -2: expired since KEYS; -1 would be a key that never expires.
        assert!(ttl > 0 || ttl == -2, "{key} expires: {ttl}");
    }
}

#[tokio::test]
async fn no_region_is_found() {
    let simulator = simulator().await;
    let mut command = facade(&["check", "--output", "json"]);
    command
        .env("AWS_ENDPOINT_URL", simulator.endpoint_url())
        .env("AWS_ACCESS_KEY_ID", HOME_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "simulated-secret")
        .stdout(Stdio::piped());
    run(command)
        .await
        .failed("region", "no AWS region is configured", "AWS_REGION");
}

#[tokio::test]
async fn no_credentials_are_found() {
    let simulator = simulator().await;
    let checked = check(&simulator, None, &["--instance", INSTANCE]).await;
    checked.failed("credentials", "no credentials", "AWS_ACCESS_KEY_ID");
    assert!(
        simulator.requests().is_empty(),
        "nothing is asked of AWS without credentials"
    );
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_is_found() {
    let simulator = simulator().await;
    let files = Files::new("no-role");
    let routes = files.write(
        "routes.yaml",
        &routes("    role_arn: arn:aws:iam::222222222222:role/missing\n"),
    );
    let checked = check(&simulator, Some(HOME_KEY), &["--routes", &routes]).await;
    checked.failed(
        "route uk: assume arn:aws:iam::222222222222:role/missing",
        "Not authorized to perform sts:AssumeRole",
        "trust policy must let arn:aws:iam::111111111111:user/simulated call sts:AssumeRole",
    );
    assert_eq!(checked.line("identity")["ok"], true);
}

#[tokio::test]
async fn a_wrong_external_id_is_found() {
    let simulator = simulator().await;
    let files = Files::new("external-id");
    let routes = files.write(
        "routes.yaml",
        &routes(&format!("    role_arn: {ROLE}\n    external_id: guessed\n")),
    );
    check(&simulator, Some(HOME_KEY), &["--routes", &routes])
        .await
        .failed(
            &format!("route uk: assume {ROLE}"),
            "Not authorized to perform sts:AssumeRole",
            "sts:ExternalId equal to the route's external_id",
        );
}

#[tokio::test]
async fn an_identity_without_the_permission_is_found() {
    let simulator = simulator().await;
    let checked = check(&simulator, Some(DENIED_KEY), &["--instance", INSTANCE]).await;
    checked.failed(
        &format!("route default: instance {INSTANCE}"),
        "AccessDeniedException: User: arn:aws:iam::333333333333:user/simulated is not authorized",
        "allow connect:CreatePersistentContactAssociation on arn:aws:connect:eu-west-2:",
    );
    let probes = simulator.requests();
    assert!(
        probes.is_empty(),
        "refused before the operation: {probes:?}"
    );
}

#[tokio::test]
async fn an_instance_that_does_not_exist_is_found() {
    let simulator = simulator().await;
    let files = Files::new("no-instance");
    let routes = files.write(
        "routes.yaml",
        &good_routes().replace(INSTANCE, OTHER_INSTANCE),
    );
    check(&simulator, Some(HOME_KEY), &["--routes", &routes])
        .await
        .failed(
            &format!("route uk: instance {OTHER_INSTANCE}"),
            &format!("no instance {OTHER_INSTANCE} in account 222222222222, region eu-west-2"),
            "check the instance id",
        );
}

#[tokio::test]
async fn a_redis_that_is_down_is_found_within_the_bound() {
    let simulator = simulator().await;
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let checked = check(&simulator, Some(HOME_KEY), &["--quota-store", &dead]).await;
    checked.failed(
        "quota store: reachable",
        "did not answer",
        "check that Redis is up",
    );
    assert!(checked.took < Duration::from_secs(10), "{:?}", checked.took);
}

#[tokio::test]
async fn a_redis_whose_acl_forbids_scripts_is_found() {
    let simulator = simulator().await;
    let redis = RedisServer::start_with(
        [
            "--user",
            "facade",
            "on",
            ">s3cret",
            "~*",
            "+@all",
            "-@scripting",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let store = redis.url().replace("redis://", "redis://facade:s3cret@");
    let checked = check(&simulator, Some(HOME_KEY), &["--quota-store", &store]).await;
    checked.failed(
        "quota store: scripts",
        "no permissions to run the 'script|load' command",
        "+evalsha +eval +script|load",
    );
    assert_eq!(checked.line("quota store: reachable")["ok"], true);
    assert!(
        !checked.report.to_string().contains("s3cret"),
        "the store's password never shows"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_found() {
    let simulator = simulator().await;
    let pki = Pki::new("check-expired");
    let (cert, key) = pki.expired_leaf("localhost");
    let cert = pki.write("cert.pem", &cert).display().to_string();
    let checked = check(
        &simulator,
        Some(HOME_KEY),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &pki.write("key.pem", &key).display().to_string(),
        ],
    )
    .await;
    checked.failed("tls", &format!("{cert} expired at 2021-01-01"), "renew it");
}

#[tokio::test]
async fn a_caller_whose_instance_is_not_routed_is_found() {
    let simulator = simulator().await;
    let files = Files::new("unrouted");
    let routes = files.write("routes.yaml", &good_routes());
    let auth = files.write(
        "callers.yaml",
        &format!(
            "callers:\n  - name: reporting\n    token_sha256: {}\n    instances: [\"{OTHER_INSTANCE}\"]\n",
            "cd".repeat(32)
        ),
    );
    check(
        &simulator,
        Some(HOME_KEY),
        &["--routes", &routes, "--auth-file", &auth],
    )
    .await
    .failed(
        "callers",
        &format!("caller reporting names instance {OTHER_INSTANCE}, which no route serves"),
        "add the instance to a route's instances",
    );
}

#[tokio::test]
async fn an_invalid_configuration_stops_the_check_at_its_first_line() {
    let simulator = simulator().await;
    let checked = check(
        &simulator,
        Some(HOME_KEY),
        &["--routes", "/nonexistent/routes.yaml"],
    )
    .await;
    assert_eq!(checked.code, 1);
    let lines = checked.report["checks"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["name"], "configuration");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/routes.yaml")
    );
}

#[tokio::test]
async fn a_refused_configuration_file_is_still_a_report() {
    let simulator = simulator().await;
    let files = Files::new("refused-file");
    let config = files.write("facade.yaml", "quota:\n  rate-limit: fast\n");
    let checked = check(&simulator, Some(HOME_KEY), &["--config", &config]).await;
    assert_eq!(checked.code, 1);
    assert_eq!(checked.report["ok"], false);
    let line = checked.line("configuration");
    assert_eq!(line["ok"], false);
    let said = line["message"].as_str().unwrap();
    assert!(said.contains(&format!("{config}:2:15")), "{said}");
    assert!(said.contains("rate-limit"), "{said}");
    assert_eq!(checked.report["checks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_route_serving_any_instance_warns_that_its_permission_was_not_checked() {
    let simulator = simulator().await;
    // Through --endpoint-url this time: STS is called there too.
    let endpoint = simulator.endpoint_url();
    let mut command = facade(&["check", "--output", "json", "--endpoint-url", &endpoint]);
    command
        .env("AWS_REGION", "eu-west-2")
        .env("AWS_ACCESS_KEY_ID", HOME_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "simulated-secret")
        .stdout(Stdio::piped());
    let checked = run(command).await;
    assert_eq!(checked.line("identity")["ok"], true, "{:#}", checked.report);
    assert_eq!(checked.code, 0, "a warning never fails the check");
    assert_eq!(checked.report["ok"], true);
    let line = checked.line("route default: permission");
    assert_eq!(line["severity"], "warning");
    assert_eq!(line["ok"], false);
    assert!(line["fix"].as_str().unwrap().contains("--instance"));
}

#[tokio::test]
async fn the_embedded_simulator_passes_in_text() {
    let mut command = facade(&["check", "--simulator", "--instance", INSTANCE]);
    command.stdout(Stdio::piped());
    let output = command.output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with('✓')).count() >= 9,
        "{text}"
    );
    assert!(!text.contains('✗') && !text.contains("\n!"), "{text}");
    assert!(text.ends_with("checks passed\n"), "{text}");
}

#[tokio::test]
async fn an_issuer_whose_keys_cannot_be_fetched_is_found() {
    use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
    let simulator = simulator().await;
    let pki = Pki::new("check-issuer");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("cluster-key".to_owned());
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    let mut endpoint = IssuerEndpoint::start(&pki, jwks).await;
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let ca = pki.write("ca.pem", &pki.ca_pem);
    let routes = pki.write("routes.yaml", &good_routes());
    let auth = pki.write(
        "callers.yaml",
        &format!(
            "issuers:\n  - issuer: {issuer}\n    jwks_url: {}\n    ca_file: {}\ncallers:\n  - name: billing-api\n    jwt: {{issuer: {issuer}, audience: connect-facade, subject: \"system:serviceaccount:billing:*\"}}\n    instances: [\"{INSTANCE}\"]\n",
            endpoint.discovery_url(),
            ca.display()
        ),
    );
    let args = [
        "--routes",
        routes.to_str().unwrap(),
        "--auth-file",
        auth.to_str().unwrap(),
    ];
    let name = format!("issuer keys {issuer}");
    let checked = check(&simulator, Some(HOME_KEY), &args).await;
    let line = checked.line(&name);
    assert_eq!(line["ok"], true, "{line:#}");
    let jwks_url = format!("https://localhost:{}/openid/v1/jwks", endpoint.addr.port());
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("1 key from {jwks_url}")),
        "{line:#}"
    );
    assert_eq!(checked.code, 0, "{:#}", checked.report);

    endpoint.stop();
    check(&simulator, Some(HOME_KEY), &args).await.failed(
        &name,
        "cannot fetch the keys from https://localhost",
        "that this network may reach it",
    );
}

#[tokio::test]
async fn reconciling_associations_without_describe_contact_is_found() {
    let files = Files::new("reconcile");
    let routes = files.write("routes.yaml", &good_routes());
    let args = ["--routes", routes.as_str(), "--reconcile-associations"];
    let name = format!("route uk: instance {INSTANCE}: DescribeContact");
    let checked = check(&simulator().await, Some(HOME_KEY), &args).await;
    let line = checked.line(&name);
    assert_eq!(line["ok"], true, "{line:#}");
    assert_eq!(checked.code, 0, "{:#}", checked.report);

    let without = Simulator::start(
        loopback(),
        Fixtures::parse(
            &WORLD.replace(
                "external_id: ext-uk\n",
                "external_id: ext-uk\n        may_describe: false\n",
            ),
            "no DescribeContact",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    check(&without, Some(HOME_KEY), &args).await.failed(
        &name,
        "--reconcile-associations needs DescribeContact: AccessDeniedException",
        "deploy/iam-policy-reconcile.json",
    );
    assert!(
        check(&without, Some(HOME_KEY), &["--routes", routes.as_str()])
            .await
            .report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|line| line["name"] != name.as_str()),
        "not probed without the flag"
    );
}

#[tokio::test]
async fn a_store_that_forgets_at_a_restart_or_evicts_remembered_answers_is_a_warning() {
    let simulator = simulator().await;
    let forgetful = RedisServer::start_with(vec![
        "--maxmemory".into(),
        "64mb".into(),
        "--maxmemory-policy".into(),
        "volatile-lru".into(),
    ])
    .await;
    let files = Files::new("durability");
    let routes = files.write("routes.yaml", &good_routes());
    let checked = check(
        &simulator,
        Some(HOME_KEY),
        &["--routes", &routes, "--quota-store", &forgetful.url()],
    )
    .await;
    let line = checked.line("quota store: durability");
    assert_eq!(line["severity"], "warning", "{line:#}");
    let message = line["message"].as_str().unwrap();
    assert!(message.contains("neither persists"), "{message}");
    assert!(
        message.contains("maxmemory-policy volatile-lru"),
        "{message}"
    );
    assert!(
        line["fix"].as_str().unwrap().contains("noeviction"),
        "{line:#}"
    );
    assert_eq!(checked.code, 0, "warnings never fail the check");
}
