//! One facade, several AWS accounts and regions (`--routes`): each call reaches its own account with
//! that account's assumed-role credentials, through the SDK's real AssumeRole provider against the
//! simulator's STS.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use connect_facade::{
    proto::CreatePersistentContactAssociationRequest,
    simulator::{faults::FaultEffect, fixtures::Fixtures},
};
use tonic::Code;

use crate::support::{TestApp, fresh_session, series_value, spawn_with};

const UK: &str = "uk-instance";
const US: &str = "us-instance";

/// Three accounts: the facade's own (its static test key), and two with a role each, one instance in
/// each of two regions.
fn accounts(session_seconds: u64) -> Fixtures {
    Fixtures::parse(
        &format!(
            r#"
accounts:
  - id: "111111111111"
    access_key_ids: ["AKIDTESTFACADE"]
  - id: "222222222222"
    roles:
      - arn: arn:aws:iam::222222222222:role/connect-facade
        external_id: ext-uk
        session_seconds: {session_seconds}
  - id: "333333333333"
    roles:
      - arn: arn:aws:iam::333333333333:role/connect-facade
        session_seconds: {session_seconds}
instances:
  - {{id: {UK}, account: "222222222222", region: eu-west-2, open_chats: true,
      contacts: [{{id: C1, channel: CHAT, state: ENDED}}]}}
  - {{id: {US}, account: "333333333333", region: us-east-1, open_chats: true,
      contacts: [{{id: C1, channel: CHAT, state: ENDED}}]}}
  - {{id: added-later, account: "333333333333", region: us-east-1, open_chats: true,
      contacts: [{{id: C1, channel: CHAT, state: ENDED}}]}}
"#
        ),
        "routes-fixtures",
    )
    .expect("valid fixtures")
}

const ROUTES: &str = r#"routes:
  - name: uk-prod
    instances: ["uk-instance"]
    region: eu-west-2
    role_arn: arn:aws:iam::222222222222:role/connect-facade
    external_id: ext-uk
  - name: us-test
    instances: ["us-instance"]
    region: us-east-1
    role_arn: arn:aws:iam::333333333333:role/connect-facade
"#;

fn routes_file(test: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "connect-facade-routes-{test}-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

async fn routed(test: &str, fixtures: Fixtures, routes: &str) -> (TestApp, PathBuf) {
    let path = routes_file(test, routes);
    let file = path.clone();
    let app = spawn_with(fixtures, move |c| {
        c.aws.routes = Some(file);
        c.listening.reload_interval = Duration::from_millis(100);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    (app, path)
}

fn on(instance: &str) -> CreatePersistentContactAssociationRequest {
    CreatePersistentContactAssociationRequest {
        instance_id: instance.into(),
        ..fresh_session()
    }
}

#[tokio::test]
async fn each_call_reaches_its_own_account_with_that_accounts_role() {
    let (app, _) = routed("two", accounts(3600), ROUTES).await;
    app.call(on(UK))
        .await
        .expect("the UK route's role may call the UK instance");
    app.call(on(US))
        .await
        .expect("the US route's role may call the US instance");
    assert_eq!(
        app.simulator.assume_role_calls(),
        2,
        "one session per role, reused"
    );
    app.call(on(UK)).await.unwrap();
    assert_eq!(app.simulator.assume_role_calls(), 2);

    let (_, info, _) = app.call_expecting(on("elsewhere"), Code::NotFound).await;
    assert_eq!(info.reason, "INSTANCE_NOT_ROUTED");
    assert_eq!(info.metadata.get("instanceId").unwrap(), "elsewhere");
    assert_eq!(
        app.simulator.requests().len(),
        3,
        "AWS never saw the unrouted call"
    );

    let metrics = app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_route_calls_total{route="uk-prod"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_route_calls_total{route="us-test"}"#
        ),
        Some(1.0)
    );
    assert!(
        !metrics.contains("arn:aws") && !metrics.contains("ext-uk") && !metrics.contains("ASIA"),
        "metrics name routes, never an ARN or credentials"
    );
}

#[tokio::test]
async fn a_misrouted_call_fails_as_aws_would_answer_it() {
    // The UK instance sent with the US account's role, then to the wrong region.
    let wrong_account = ROUTES
        .replace(r#"["uk-instance"]"#, r#"["other"]"#)
        .replace(r#"["us-instance"]"#, r#"["us-instance", "uk-instance"]"#);
    let (app, _) = routed("wrong-account", accounts(3600), &wrong_account).await;
    let (_, info, _) = app.call_expecting(on(UK), Code::PermissionDenied).await;
    assert_eq!(
        info.metadata.get("awsErrorCode").unwrap(),
        "AccessDeniedException"
    );

    let wrong_region = ROUTES.replace("region: eu-west-2", "region: eu-west-1");
    let (app, _) = routed("wrong-region", accounts(3600), &wrong_region).await;
    let (_, info, _) = app.call_expecting(on(UK), Code::NotFound).await;
    assert_eq!(
        info.metadata.get("awsErrorCode").unwrap(),
        "ResourceNotFoundException"
    );

    let wrong_external_id = ROUTES.replace("external_id: ext-uk", "external_id: guessed");
    let (app, _) = routed("wrong-external-id", accounts(3600), &wrong_external_id).await;
    let (_, info, _) = app.call_expecting(on(UK), Code::Internal).await;
    assert_eq!(info.reason, "AWS_CREDENTIALS");
}

#[tokio::test]
#[ignore = "slow tier: 15-second sessions renewed under calls"]
async fn short_sessions_are_refreshed_before_they_expire_with_no_failed_call() {
    // 15-second sessions: the SDK's identity cache renews them 10 s before they expire.
    let (app, _) = routed("short", accounts(15), ROUTES).await;
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(22) {
        app.call(on(UK))
            .await
            .expect("no call fails across refreshes");
        calls += 1;
        // A fixed sleep: paces calls across the sessions' renewals.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(calls > 50, "{calls}");
    let sessions = app.simulator.assume_role_calls();
    assert!(
        (3..=8).contains(&sessions),
        "{sessions} sessions in 22 s of 15-second sessions"
    );
}

#[tokio::test]
async fn a_throttled_account_does_not_slow_the_other() {
    let routes = ROUTES.replace(
        "    external_id: ext-uk\n",
        "    external_id: ext-uk\n    rate_limit: 2\n    burst: 2\n",
    );
    let (app, _) = routed("throttled", accounts(3600), &routes).await;
    app.simulator
        .add_fault(connect_facade::simulator::faults::Fault {
            instance_id: Some(UK.into()),
            times: None,
            effect: FaultEffect::Error {
                code: "ThrottlingException".into(),
                status: None,
                message: None,
            },
        });
    // The UK account is hammered and throttled...
    let hammer: Vec<_> = (0..30)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move { client.create_persistent_contact_association(on(UK)).await })
        })
        .collect();
    // ...while the US account's calls go through at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        app.call(on(US))
            .await
            .expect("the other account is unaffected");
        slowest = slowest.max(started.elapsed());
        // A fixed sleep: paces the other account's calls while the first is throttled.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(slowest < Duration::from_millis(200), "{slowest:?}");
    for call in hammer {
        let status = call.await.unwrap().expect_err("throttled");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    let metrics = app.scrape().await;
    let uk_rate = series_value(
        &metrics,
        r#"connect_facade_rate_limit_per_second{key="222222222222:eu-west-2"}"#,
    )
    .unwrap();
    let us_rate = series_value(
        &metrics,
        r#"connect_facade_rate_limit_per_second{key="333333333333:us-east-1"}"#,
    )
    .unwrap();
    assert!(
        uk_rate < 2.0,
        "the throttled account's rate adapted: {uk_rate}"
    );
    assert_eq!(us_rate, 1000.0, "the other's did not");
}

#[tokio::test]
async fn a_changed_routes_file_serves_new_calls_and_an_invalid_one_keeps_the_routes() {
    let (app, path) = routed("reload", accounts(3600), ROUTES).await;
    let (_, info, _) = app.call_expecting(on("added-later"), Code::NotFound).await;
    assert_eq!(info.reason, "INSTANCE_NOT_ROUTED");

    let added = ROUTES.replace(r#"["us-instance"]"#, r#"["us-instance", "added-later"]"#);
    std::fs::write(&path, added).unwrap();
    let started = Instant::now();
    loop {
        match app.call(on("added-later")).await {
            Ok(_) => break,
            Err(status) if started.elapsed() < Duration::from_secs(5) => {
                assert_eq!(status.code(), Code::NotFound);
                // Polls its condition (the added route serves), bounded above.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the added route never served: {status:?}"),
        }
    }

    std::fs::write(&path, "routes:\n  - name: broken\n    instances: []\n").unwrap();
    // A fixed sleep: gives the reload of the broken file time to happen (and be refused).
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.call(on("added-later"))
        .await
        .expect("the routes in use stay");
    app.call(on(UK)).await.expect("the routes in use stay");
    let metrics = app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_routes_reloads_total{result="error"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_routes_reloads_total{result="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(series_value(&metrics, "connect_facade_routes"), Some(2.0));
}

#[tokio::test]
async fn sighup_reloads_the_routes_of_a_running_process() {
    use connect_facade::simulator::Simulator;

    use crate::{
        support::{channel, eventually, loopback},
        support::{facade, send_signal, serving},
    };

    let simulator = Simulator::start(loopback(), accounts(3600)).await.unwrap();
    let path = routes_file("sighup", ROUTES);
    let endpoint = simulator.endpoint_url();
    let mut command = facade(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--endpoint-url",
        &endpoint,
        "--routes",
        path.to_str().unwrap(),
        // Only the signal reloads.
        "--routes-reload-interval",
        "0",
    ]);
    command
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTFACADE")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret");
    let serving = serving(command).await;
    let mut client = connect_facade::proto::contact_service_client::ContactServiceClient::new(
        channel(serving.addr).await,
    );
    client
        .create_persistent_contact_association(on(UK))
        .await
        .expect("routed at startup");
    let unrouted = |result: Result<_, tonic::Status>| {
        result.expect_err("not routed yet").code() == Code::NotFound
    };
    assert!(unrouted(
        client
            .create_persistent_contact_association(on("added-later"))
            .await
    ));

    std::fs::write(
        &path,
        ROUTES.replace(r#"["us-instance"]"#, r#"["us-instance", "added-later"]"#),
    )
    .unwrap();
    // A fixed sleep: holds the changed file unread for longer than a poll would take, to show none happens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        unrouted(
            client
                .create_persistent_contact_association(on("added-later"))
                .await
        ),
        "without the signal the file is not re-read"
    );
    send_signal(&serving.child, "-HUP");
    eventually(
        "the routes reloaded on SIGHUP",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move {
                client
                    .create_persistent_contact_association(on("added-later"))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let logs = serving.logs.lock().unwrap().join("\n");
    let reloaded = logs
        .lines()
        .find(|line| line.contains("routes reloaded"))
        .unwrap_or_else(|| panic!("{logs}"));
    let event: serde_json::Value = serde_json::from_str(reloaded).unwrap();
    assert_eq!(event["fields"]["changed"], r#"["us-test"]"#, "{reloaded}");
    assert_eq!(event["fields"]["added"], "[]");
    assert!(
        !logs.contains("ext-uk"),
        "the external id never reaches a log"
    );
}

#[tokio::test]
async fn a_routes_own_endpoint_wins_over_the_environments_and_the_environment_stays_the_default() {
    use connect_facade::simulator::Simulator;

    use crate::{
        support::{channel, loopback},
        support::{facade, serving},
    };

    let simulator = Simulator::start(loopback(), accounts(3600)).await.unwrap();
    let endpoint = simulator.endpoint_url();
    // The environment names a home endpoint where nothing listens; one route names the simulator.
    let dead = format!("http://127.0.0.1:{}", crate::support::free_port());
    let routes = ROUTES.replace(
        "    region: us-east-1\n",
        &format!("    region: us-east-1\n    endpoint_url: {endpoint}\n"),
    );
    let path = routes_file("environment", &routes);
    let mut command = facade(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--routes",
        path.to_str().unwrap(),
    ]);
    command
        .env("AWS_ENDPOINT_URL_CONNECT", &dead)
        .env("AWS_ENDPOINT_URL_STS", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIDTESTFACADE")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret");
    let serving = serving(command).await;
    let mut client = connect_facade::proto::contact_service_client::ContactServiceClient::new(
        channel(serving.addr).await,
    );
    client
        .create_persistent_contact_association(on(US))
        .await
        .expect("the route's endpoint_url, not AWS_ENDPOINT_URL_CONNECT");
    let status = client
        .create_persistent_contact_association(on(UK))
        .await
        .expect_err("a route without endpoint_url goes to the environment's endpoint");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        simulator
            .requests()
            .iter()
            .filter(|request| request.instance_id == UK)
            .count(),
        0
    );
}
