//! The admin API (`--admin-listen`) and `connect-facade status`: what a running replica says about
//! itself, read from its parts, with no secret in it.

use std::{process::Stdio, time::Duration};

use connect_facade::{app::App, config::ServeConfig};
use serde_json::Value;
use tonic::Code;

use crate::support::{
    RedisServer, as_caller, auth_file, entire_session, eventually, facade, fresh_session,
    http_request, offline_config, open_chats_with_quota, send_signal, serving, spawn_with,
};

/// The binary over its simulator with the admin API on a port of its own, and `extra` flags.
async fn admin_process(extra: &[&str]) -> (crate::support::Serving, std::net::SocketAddr) {
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::free_port()));
    let admin_flag = admin.to_string();
    let mut args = vec![
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        &admin_flag,
    ];
    args.extend_from_slice(extra);
    (serving(facade(&args)).await, admin)
}

async fn status(addr: std::net::SocketAddr) -> Value {
    let (code, body) = http_request(addr, "GET", "/status", &[], "").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn status_shows_the_routes_store_callers_and_last_refusals() {
    let file = auth_file("admin-status", &[("billing", 3.0, Some(50.0))]);
    let app = spawn_with(
        open_chats_with_quota(1000.0, 1000),
        move |c: &mut ServeConfig| {
            c.telemetry.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            c.callers.auth_file = Some(file);
        },
    )
    .await;
    let admin = app.admin_addr.expect("admin API on");
    app.client
        .clone()
        .create_persistent_contact_association(as_caller("billing", fresh_session()))
        .await
        .expect("billing calls");
    let refused = app
        .client
        .clone()
        .create_persistent_contact_association(as_caller("stranger", fresh_session()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut unknown = fresh_session();
    unknown.instance_id = "no-such-instance".into();
    let not_found = app
        .client
        .clone()
        .create_persistent_contact_association(as_caller("billing", unknown))
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);

    let shown = status(admin).await;
    assert_eq!(shown["serving"], true);
    assert_eq!(shown["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(shown["config_hash"].as_str().unwrap().len(), 12);
    let route = &shown["routes"][0];
    assert_eq!(route["name"], "default");
    assert_eq!(route["account_key"], "us-east-1");
    assert_eq!(route["breaker"], "closed");
    assert_eq!(route["rate_per_second"], 1000.0);
    assert_eq!(route["burst"], 1000);
    assert_eq!(route["waiting"], 0);
    assert_eq!(
        route["predicted_wait_ms"], 0.0,
        "nothing waits: the next call goes at once"
    );
    assert_eq!(
        route["last_minute"],
        serde_json::json!({"ok": 1, "throttled": 0, "failed": 1}),
        "the call, and AWS's NotFound for the unknown instance"
    );
    assert_eq!(shown["store"]["kind"], "local");
    assert_eq!(shown["fleet"], Value::Null, "no Redis, no fleet");
    assert_eq!(
        shown["callers"],
        serde_json::json!([{"name": "billing", "weight": 3.0, "max_rate": 50.0, "instances": ["*"],
                            "waiting": 0, "share": null}])
    );
    let refusals = shown["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    assert_eq!(refusals[0]["caller"], "billing", "newest first");
    assert_eq!(refusals[0]["code"], "not_found");
    assert_eq!(refusals[0]["instance_id"], "no-such-instance");
    assert_eq!(refusals[1]["caller"], Value::Null);
    assert_eq!(refusals[1]["reason"], "CALLER_UNKNOWN");
    assert_eq!(refusals[1]["code"], "unauthenticated");
    assert!(
        !shown.to_string().contains("token"),
        "no caller's token or hash: {shown}"
    );

    let (code, body) = http_request(admin, "GET", "/nowhere", &[], "").await;
    assert_eq!(code, 404);
    assert!(body.contains("/status"), "{body}");
}

#[tokio::test]
async fn the_store_shows_its_topology_and_goes_down_with_redis() {
    let mut redis = RedisServer::start().await;
    let app = spawn_with(open_chats_with_quota(1000.0, 1000), {
        let plain = redis.url();
        move |c: &mut ServeConfig| {
            c.telemetry.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            c.quota.quota_store =
                connect_facade::config::QuotaStoreChoice::Redis(plain.parse().unwrap());
        }
    })
    .await;
    let admin = app.admin_addr.unwrap();
    app.call(entire_session())
        .await
        .expect("served through Redis");
    let shown = status(admin).await;
    assert_eq!(shown["store"]["kind"], "redis");
    assert_eq!(shown["store"]["topology"], "standalone");
    assert_eq!(shown["store"]["up"], true);
    assert_eq!(shown["store"]["address"], redis.url());
    assert!(shown["store"]["round_trip_ms"].as_f64().unwrap() > 0.0);
    eventually(
        "this replica registered",
        Duration::from_secs(5),
        || async {
            status(admin).await["fleet"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        },
    )
    .await;
    let replicas = status(admin).await["fleet"].clone();
    assert_eq!(replicas[0]["this"], true, "{replicas}");
    assert_eq!(replicas[0]["live"], true, "{replicas}");
    assert!(replicas[0]["seconds_ago"].as_f64().unwrap() < 3.0);

    redis.kill();
    let _ = app.call(fresh_session()).await;
    eventually("the store shown down", Duration::from_secs(5), || async {
        status(admin).await["store"]["up"] == false
    })
    .await;
    let down = status(admin).await;
    assert!(down["store"]["outages"].as_u64().unwrap() >= 1);
    assert_eq!(
        down["fleet"],
        Value::Null,
        "Redis does not answer: no fleet to show"
    );
}

#[tokio::test]
async fn off_loopback_the_admin_api_needs_a_token_or_the_facade_does_not_start() {
    let mut config = offline_config();
    config.telemetry.admin_listen = Some("0.0.0.0:0".parse().unwrap());
    let error = App::build(config.clone()).await.err().expect("refused");
    assert!(error.to_string().contains("--admin-token-file"), "{error}");

    let token = std::env::temp_dir().join(format!("admin-token-{}", std::process::id()));
    std::fs::write(&token, "s3cret-token\n").unwrap();
    config.telemetry.admin_token_file = Some(token.clone());
    let app = App::build(config).await.expect("starts with a token");
    let admin = app.admin_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let (code, body) = http_request(local, "GET", "/status", &[], "").await;
    assert_eq!(code, 401, "{body}");
    let (code, _) = http_request(
        local,
        "GET",
        "/status",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(code, 401);
    let (code, body) = http_request(
        local,
        "GET",
        "/status",
        &[("authorization", "Bearer s3cret-token")],
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("s3cret"), "{body}");
    stop.cancel();
    running.await.unwrap().unwrap();
    let _ = std::fs::remove_file(token);
}

/// The log filter and the configuration, from the binary (its logging is installed there).
#[tokio::test]
async fn the_log_filter_is_read_and_changed_and_the_configuration_shown_redacted() {
    let (serving, admin) =
        admin_process(&["--quota-store", "redis://facade:s3cret@127.0.0.1:1"]).await;
    let (code, body) = http_request(admin, "GET", "/logging", &[], "").await;
    assert_eq!((code, body.as_str()), (200, r#"{"filter":"info"}"#));
    let (code, body) =
        http_request(admin, "POST", "/logging", &[], "connect_facade=debug,warn").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("connect_facade=debug"), "{body}");
    let (code, body) = http_request(admin, "POST", "/logging", &[], "nonsense=[").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid log filter"), "{body}");
    let (_, body) = http_request(admin, "GET", "/logging", &[], "").await;
    assert!(
        body.contains("connect_facade=debug"),
        "a refused filter changes nothing: {body}"
    );

    let (code, config) = http_request(admin, "GET", "/config", &[], "").await;
    assert_eq!(code, 200);
    assert!(config.contains("admin-listen:"), "{config}");
    assert!(
        config.contains("quota-store: \"redis://<credentials>@127.0.0.1:1\""),
        "{config}"
    );
    assert!(!config.contains("s3cret"), "{config}");
    let (_, status) = http_request(admin, "GET", "/status", &[], "").await;
    assert!(!status.contains("s3cret"), "{status}");
    drop(serving);
}

#[tokio::test]
async fn connect_facade_status_shows_a_replica_and_fails_when_it_is_gone() {
    let (serving, admin) = admin_process(&[]).await;
    let url = format!("http://{admin}");
    let mut command = facade(&["status", "--url", &url]);
    command.stdout(Stdio::piped());
    let output = command.output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains(": serving, up"), "{text}");
    assert!(text.contains("default  us-east-1"), "{text}");
    assert!(text.contains("quota store: local"), "{text}");

    send_signal(&serving.child, "-TERM");
    eventually(
        "status fails once the replica is gone",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let gone = facade(&["status", "--url", &url]).output().await.unwrap();
                !gone.status.success()
            }
        },
    )
    .await;
    drop(serving);
}

#[tokio::test]
async fn status_shows_the_queue_and_the_wait_it_predicts() {
    let app = spawn_with(
        open_chats_with_quota(1000.0, 1000),
        |c: &mut ServeConfig| {
            c.telemetry.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            c.quota.rate_limit = 4.0;
            c.quota.rate_burst = 1;
            c.quota.max_queue_wait = Duration::from_secs(10);
        },
    )
    .await;
    let admin = app.admin_addr.unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .create_persistent_contact_association(fresh_session())
                    .await
            })
        })
        .collect();
    eventually("calls queued", Duration::from_secs(5), || async {
        status(admin).await["routes"][0]["waiting"].as_u64() >= Some(3)
    })
    .await;
    let route = status(admin).await["routes"][0].clone();
    let waiting = route["waiting"].as_u64().unwrap();
    let predicted = route["predicted_wait_ms"].as_f64().unwrap();
    // Behind `waiting` attempts at 4/s: about 250 ms each, give or take the one being sent.
    assert!(
        predicted >= 250.0 * (waiting as f64 - 1.0) && predicted <= 250.0 * (waiting as f64 + 1.0),
        "{waiting} waiting, {predicted} ms predicted"
    );
    for call in calls {
        call.await.unwrap().expect("every queued call is served");
    }
    assert_eq!(status(admin).await["routes"][0]["predicted_wait_ms"], 0.0);
}

#[tokio::test]
async fn the_status_page_is_served_from_the_binary_and_fetches_nothing_elsewhere() {
    let app = spawn_with(
        open_chats_with_quota(1000.0, 1000),
        |c: &mut ServeConfig| {
            c.telemetry.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        },
    )
    .await;
    let (code, page) = http_request(app.admin_addr.unwrap(), "GET", "/", &[], "").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<title>connect-facade status</title>"),
        "{page}"
    );
    assert!(page.contains(r#"fetch("status""#), "it draws /status");
    for outside in ["http://", "https://", "//cdn", "<link", "src="] {
        assert!(!page.contains(outside), "the page names {outside}");
    }
}
