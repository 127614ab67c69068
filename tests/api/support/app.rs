//! Shared set-up: a real Connect simulator and the real facade, each on a free loopback port, and a real
//! tonic client. The facade reaches the simulator through the real aws-sdk-connect over HTTP.

use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use connect_facade::{
    app::App,
    config::ServeConfig,
    proto::{
        CreatePersistentContactAssociationRequest, RehydrationType,
        contact_service_client::ContactServiceClient,
    },
    simulator::{
        Simulator,
        faults::{Fault, FaultEffect},
        fixtures::Fixtures,
    },
    upstream::StaticCredentials,
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::{ErrorDetails, ErrorInfo, StatusExt};

pub const INSTANCE: &str = "11111111-2222-3333-4444-555555555555";

/// Polls `check` every 20 ms until it holds, for at most `within`, and says how long it took;
/// fails the test naming `what` otherwise. Tests wait on conditions, not on fixed sleeps.
pub async fn eventually<F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut check: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
pub const ACCESS_KEY_ID: &str = "AKIDTESTFACADE";

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub client: ContactServiceClient<Channel>,
    pub simulator: Simulator,
    /// Stops the facade the way a signal does: it drains, then stops its tasks.
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The facade over a simulator holding the demo fixtures.
pub async fn spawn() -> TestApp {
    spawn_with(Fixtures::demo(), |_| {}).await
}

/// The facade over a simulator holding `fixtures`, with `configure` applied to the facade's config.
pub async fn spawn_with(fixtures: Fixtures, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let simulator = Simulator::start(loopback(), fixtures)
        .await
        .expect("simulator starts");
    let replica = spawn_replica(&simulator, configure).await;
    TestApp {
        addr: replica.addr,
        metrics_addr: replica.metrics_addr,
        admin_addr: replica.admin_addr,
        client: replica.client.clone(),
        simulator,
        stop: replica.into_stop(),
    }
}

/// One more facade calling `simulator`: a replica beside a [`TestApp`].
pub struct Replica {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub client: ContactServiceClient<Channel>,
    stop: Option<CancellationToken>,
}

/// One HTTP/1.1 request to `addr` (the admin API): the status code and the body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let code = answer[9..12].parse().expect("a status code");
    let body = answer
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    (code, body)
}

/// Scrapes the `/metrics` of a facade started with `metrics_listen`.
pub async fn scrape(metrics_addr: Option<SocketAddr>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = metrics_addr.expect("metrics_listen was set");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

impl Replica {
    pub async fn scrape(&self) -> String {
        scrape(self.metrics_addr).await
    }

    fn into_stop(mut self) -> CancellationToken {
        self.stop.take().expect("serving")
    }

    pub async fn call(&self, request: CreatePersistentContactAssociationRequest) -> Answer {
        call_on(&self.client, request).await
    }
}

/// What a call answers.
pub type Answer = Result<
    tonic::Response<connect_facade::proto::CreatePersistentContactAssociationResponse>,
    Status,
>;

/// One call on `client`.
pub async fn call_on(
    client: &ContactServiceClient<Channel>,
    request: CreatePersistentContactAssociationRequest,
) -> Answer {
    client
        .clone()
        .create_persistent_contact_association(request)
        .await
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            stop.cancel();
        }
    }
}

/// A facade calling `simulator`, with `configure` applied to its config.
pub async fn spawn_replica(
    simulator: &Simulator,
    configure: impl FnOnce(&mut ServeConfig),
) -> Replica {
    // Fast retries and a limiter out of the way: tests of those layers set their own values.
    let mut config = ServeConfig::from_args([
        "--listen",
        "127.0.0.1:0",
        "--region",
        "us-east-1",
        "--endpoint-url",
        &simulator.endpoint_url(),
        "--retry-base-delay",
        "10ms",
        "--retry-throttled-base-delay",
        "20ms",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
    ])
    .expect("valid test configuration");
    config.static_credentials = Some(StaticCredentials {
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: "test-secret".into(),
    });
    configure(&mut config);
    let tls = config.listening.tls_cert.is_some();
    let app = App::build(config).await.expect("facade starts");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let admin_addr = app.admin_addr();
    let stop = CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    tokio::spawn(async move { app.run_until(stopped).await.expect("facade serves") });
    // A TLS server needs a TLS client: those tests build their own and get a lazy plaintext one here.
    let client = if tls {
        ContactServiceClient::new(
            Channel::from_shared(format!("http://{addr}"))
                .expect("valid uri")
                .connect_lazy(),
        )
    } else {
        ContactServiceClient::new(channel(addr).await)
    };
    Replica {
        addr,
        metrics_addr,
        admin_addr,
        client,
        stop: Some(stop),
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("facade accepts connections")
}

/// The overall health status `addr` reports now.
pub async fn overall_health(
    addr: SocketAddr,
) -> tonic_health::pb::health_check_response::ServingStatus {
    tonic_health::pb::health_client::HealthClient::new(channel(addr).await)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .get_ref()
        .status()
}

/// A valid request: continue the whole documented session (C1, C2, C3) in `new-chat-1`.
/// The value of one series (name and labels, as exposed) in a Prometheus exposition.
pub fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

pub fn entire_session() -> CreatePersistentContactAssociationRequest {
    CreatePersistentContactAssociationRequest {
        instance_id: INSTANCE.into(),
        initial_contact_id: "new-chat-1".into(),
        rehydration_type: RehydrationType::EntirePastSession.into(),
        source_contact_id: "C1".into(),
        client_token: String::new(),
    }
}

/// A fault that answers `code` to every request.
pub fn always_error(code: &str) -> Fault {
    Fault {
        instance_id: None,
        times: None,
        effect: FaultEffect::Error {
            code: code.into(),
            status: None,
            message: Some(format!("simulated {code}")),
        },
    }
}

pub fn fault(effect: FaultEffect) -> Fault {
    Fault {
        instance_id: None,
        times: None,
        effect,
    }
}

/// A valid `serve` configuration whose AWS endpoint is never reached (start-up tests).
pub fn offline_config() -> ServeConfig {
    ServeConfig::from_args([
        "--listen",
        "127.0.0.1:0",
        "--region",
        "us-east-1",
        "--endpoint-url",
        "http://127.0.0.1:9",
    ])
    .expect("valid test configuration")
}

impl TestApp {
    /// The ClientToken of every request that reached the simulator, in order.
    pub fn sent_tokens(&self) -> Vec<Option<String>> {
        self.simulator
            .requests()
            .into_iter()
            .map(|r| r.client_token)
            .collect()
    }

    /// Calls with a gRPC deadline of `timeout`, expecting a failure; returns it and how long it took.
    pub async fn call_with_deadline(
        &self,
        request: CreatePersistentContactAssociationRequest,
        timeout: std::time::Duration,
    ) -> (Status, std::time::Duration) {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        let started = std::time::Instant::now();
        let status = self
            .client
            .clone()
            .create_persistent_contact_association(request)
            .await
            .expect_err("the deadline passes");
        (status, started.elapsed())
    }

    /// Scrapes `/metrics` (the app must have been started with `metrics_listen`).
    pub async fn scrape(&self) -> String {
        scrape(self.metrics_addr).await
    }

    pub async fn call(&self, request: CreatePersistentContactAssociationRequest) -> Answer {
        call_on(&self.client, request).await
    }

    /// Calls with `request`, expecting the error `code`; returns the status's ErrorInfo and details.
    pub async fn call_expecting(
        &self,
        request: CreatePersistentContactAssociationRequest,
        code: Code,
    ) -> (Status, ErrorInfo, ErrorDetails) {
        let status = self.call(request).await.expect_err("the call should fail");
        assert_eq!(status.code(), code, "unexpected status: {status:?}");
        let details = status.get_error_details();
        let info = details
            .error_info()
            .cloned()
            .expect("every error carries an ErrorInfo");
        (status, info, details)
    }
}

/// The load-test fixtures (any initial contact succeeds, any number of times) with an account quota.
pub fn open_chats_with_quota(rate_per_second: f64, burst: u32) -> Fixtures {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bench.yaml");
    Fixtures {
        quota: Some(connect_facade::simulator::fixtures::QuotaFixture {
            rate_per_second,
            burst,
        }),
        ..Fixtures::from_path(&path).expect("the bench fixtures load")
    }
}

/// [`entire_session`] for a new chat each time: the facade remembers each association by its
/// initial contact and replays a repeat, so calls meant to reach AWS each ask for a contact of their
/// own (on an instance with open chats, any unlisted contact is a fresh chat).
pub fn fresh_session() -> CreatePersistentContactAssociationRequest {
    static CHATS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let chat = CHATS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    CreatePersistentContactAssociationRequest {
        initial_contact_id: format!("fresh-chat-{}-{chat}", std::process::id()),
        ..entire_session()
    }
}

/// The services gRPC reflection (v1) lists on `addr`, asked without credentials.
pub async fn reflected_services(addr: SocketAddr) -> Vec<String> {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel(addr).await)
        .server_reflection_info(tokio_stream::once(list))
        .await
        .expect("reflection answers")
        .into_inner();
    let Some(Ok(answer)) = answers.next().await else {
        panic!("no reflection answer")
    };
    let Some(MessageResponse::ListServicesResponse(services)) = answer.message_response else {
        panic!("not a service list: {answer:?}")
    };
    services
        .service
        .into_iter()
        .map(|service| service.name)
        .collect()
}
