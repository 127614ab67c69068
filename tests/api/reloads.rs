//! Live changes: the files `serve` was given, re-read on SIGHUP and when they change, applied whole
//! or not at all, with no call lost.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use connect_facade::{config::ServeConfig, proto::contact_service_client::ContactServiceClient};
use tonic::Code;

use crate::support::{
    Serving, as_caller, auth_file, channel, eventually, facade, free_port, fresh_session, offer_on,
    open_chats_with_quota, scrape, send_signal, series_value, serving, spawn_with,
};

/// A scratch file rewritten by the test.
fn scratch(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "connect-facade-reload-{name}-{}.yaml",
        std::process::id()
    ));
    write(&path, text);
    path
}

/// Writes the whole file at once, as Kubernetes swaps a ConfigMap: never read half written.
fn write(path: &std::path::Path, text: &str) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).unwrap();
    std::fs::rename(&partial, path).unwrap();
}

fn metric(metrics: &str, series: &str) -> f64 {
    series_value(metrics, series).unwrap_or(0.0)
}

/// The facade as a process with `config` as its --config file, its metrics on a port of its own,
/// over the bench fixtures (open chats: any call succeeds).
async fn process(config: &std::path::Path) -> (Serving, std::net::SocketAddr) {
    process_with(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bench.yaml")),
        config,
    )
    .await
}

/// [`process`] over the simulator fixtures `fixtures`.
async fn process_with(
    fixtures: &std::path::Path,
    config: &std::path::Path,
) -> (Serving, std::net::SocketAddr) {
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--simulator-fixtures",
        fixtures.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &metrics.to_string(),
        "--reload-interval",
        "0",
        "--config",
        config.to_str().unwrap(),
    ]))
    .await;
    (serving, metrics)
}

/// Sends SIGHUP and waits until the reloads counted reach `reloads` (ok and error together).
async fn sighup_until(serving: &Serving, metrics: std::net::SocketAddr, reloads: f64) {
    send_signal(&serving.child, "-HUP");
    eventually("the reload", Duration::from_secs(5), || async move {
        let shown = scrape(Some(metrics)).await;
        metric(
            &shown,
            r#"connect_facade_config_reloads_total{result="ok"}"#,
        ) + metric(
            &shown,
            r#"connect_facade_config_reloads_total{result="error"}"#,
        ) >= reloads
    })
    .await;
}

#[tokio::test]
async fn a_new_caller_is_accepted_after_a_reload_and_a_removed_one_refused() {
    let file = auth_file("reload-callers", &[("billing", 1.0, None)]);
    let app = spawn_with(open_chats_with_quota(1000.0, 1000), {
        let file = file.clone();
        move |c: &mut ServeConfig| {
            c.callers.auth_file = Some(file);
            c.listening.reload_interval = Duration::from_millis(50);
            c.quota.rate_limit = 1000.0;
            c.quota.rate_burst = 1000;
            c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        }
    })
    .await;
    let call = |name: &'static str| {
        let mut client = app.client.clone();
        async move {
            client
                .create_persistent_contact_association(as_caller(name, fresh_session()))
                .await
        }
    };
    call("billing").await.expect("billing is a caller");
    assert_eq!(
        call("reporting").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // billing's token rotated out, reporting added: written whole, as a Secret update is.
    let rotated = auth_file("reload-callers-next", &[("reporting", 1.0, None)]);
    std::fs::rename(&rotated, &file).unwrap();
    let took = eventually("reporting accepted", Duration::from_secs(5), || async {
        call("reporting").await.is_ok()
    })
    .await;
    assert!(
        took < Duration::from_secs(2),
        "within a few looks: {took:?}"
    );
    assert_eq!(
        call("billing").await.unwrap_err().code(),
        Code::Unauthenticated,
        "a removed caller is refused on its next call"
    );
    let metrics = app.scrape().await;
    assert_eq!(
        metric(
            &metrics,
            r#"connect_facade_config_reloads_total{result="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"connect_facade_config_reloads_total{result="error"}"#
        ),
        0.0
    );
}

#[tokio::test]
async fn a_bad_file_keeps_the_settings_in_force_and_says_why() {
    let config = scratch("bad", "quota:\n  rate-limit: 500\n");
    let (serving, metrics) = process(&config).await;
    let before = scrape(Some(metrics)).await;
    let hash_line = |shown: &str| {
        shown
            .lines()
            .find(|l| l.starts_with("connect_facade_config_info{"))
            .map(str::to_owned)
            .expect("the hash in force")
    };
    let in_force = hash_line(&before);

    write(&config, "quota:\n  rate-limit: lots\n");
    sighup_until(&serving, metrics, 1.0).await;
    let after = scrape(Some(metrics)).await;
    assert_eq!(
        metric(
            &after,
            r#"connect_facade_config_reloads_total{result="error"}"#
        ),
        1.0
    );
    assert_eq!(hash_line(&after), in_force, "what is in force stays");
    let refused = serving
        .logs
        .lock()
        .unwrap()
        .iter()
        .find(|line| line.contains("reload refused"))
        .cloned()
        .expect("the refusal is logged");
    assert!(
        refused.contains(config.to_str().unwrap()) && refused.contains("rate-limit"),
        "names the file and the key: {refused}"
    );
    let mut client = ContactServiceClient::new(channel(serving.addr).await);
    client
        .create_persistent_contact_association(fresh_session())
        .await
        .expect("still serving with the settings in force");

    // Asked again (SIGHUP) with the same file: refused again, and said again.
    sighup_until(&serving, metrics, 2.0).await;
    write(&config, "quota:\n  rate-limit: 400\n");
    sighup_until(&serving, metrics, 3.0).await;
    let fixed = scrape(Some(metrics)).await;
    assert_eq!(
        metric(
            &fixed,
            r#"connect_facade_config_reloads_total{result="error"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &fixed,
            r#"connect_facade_config_reloads_total{result="ok"}"#
        ),
        1.0
    );
    assert_ne!(hash_line(&fixed), in_force, "the new hash is in force");
    assert_eq!(
        fixed.matches("connect_facade_config_info{").count(),
        1,
        "one hash in force"
    );
}

#[tokio::test]
async fn a_setting_only_a_restart_applies_is_reported_and_the_rest_applies() {
    let config = scratch("restart", "quota:\n  rate-limit: 500\n");
    let (serving, metrics) = process(&config).await;
    write(
        &config,
        "quota:\n  rate-limit: 300\n  quota-key-prefix: elsewhere\n",
    );
    sighup_until(&serving, metrics, 1.0).await;
    let shown = scrape(Some(metrics)).await;
    assert_eq!(
        metric(
            &shown,
            r#"connect_facade_config_reloads_total{result="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &shown,
            r#"connect_facade_config_restart_required{setting="quota-key-prefix"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &shown,
            r#"connect_facade_rate_limit_per_second{key="us-east-1"}"#
        ),
        300.0,
        "the live setting applied"
    );
    let mut client = ContactServiceClient::new(channel(serving.addr).await);
    client
        .create_persistent_contact_association(fresh_session())
        .await
        .expect("still serving");
}

#[tokio::test]
async fn a_changed_default_deadline_applies_to_the_next_call() {
    let config = scratch("deadline", "retries:\n  default-deadline: 10s\n");
    let fixtures = crate::support::fixtures_with_faults("  - { kind: latency, millis: 300 }\n");
    let (serving, metrics) = process_with(&fixtures, &config).await;
    let mut client = ContactServiceClient::new(channel(serving.addr).await);
    client
        .create_persistent_contact_association(crate::support::entire_session())
        .await
        .expect("300 ms within 10 s");
    write(&config, "retries:\n  default-deadline: 100ms\n");
    sighup_until(&serving, metrics, 1.0).await;
    let status = client
        .create_persistent_contact_association(crate::support::fresh_session())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_changed_connection_cap_applies_to_new_connections_and_spares_open_ones() {
    let config = scratch("peers", "peers:\n  max-connections: 100\n");
    let (serving, metrics) = process(&config).await;
    let mut open = ContactServiceClient::new(channel(serving.addr).await);
    open.create_persistent_contact_association(fresh_session())
        .await
        .expect("served");
    write(&config, "peers:\n  max-connections: 1\n");
    sighup_until(&serving, metrics, 1.0).await;
    let new_connection = || async {
        let lazy = tonic::transport::Channel::from_shared(format!("http://{}", serving.addr))
            .unwrap()
            .connect_lazy();
        ContactServiceClient::new(lazy)
            .create_persistent_contact_association(fresh_session())
            .await
    };
    new_connection()
        .await
        .expect_err("a second connection is over the new cap");
    let capped = scrape(Some(metrics)).await;
    assert_eq!(
        metric(
            &capped,
            r#"connect_facade_connections_closed_total{listener="grpc",reason="cap"}"#
        ),
        1.0
    );
    open.create_persistent_contact_association(fresh_session())
        .await
        .expect("the open connection keeps being served");

    write(&config, "peers:\n  max-connections: 100\n");
    sighup_until(&serving, metrics, 2.0).await;
    new_connection().await.expect("admitted again");
    let shown = scrape(Some(metrics)).await;
    assert_eq!(
        metric(
            &shown,
            r#"connect_facade_config_reloads_total{result="ok"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn the_log_filter_changes_without_a_restart() {
    let config = scratch("log-filter", "telemetry:\n  log-filter: info\n");
    let (serving, metrics) = process(&config).await;
    let count = |what: &str| {
        serving
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(what))
            .count()
    };
    write(&config, "telemetry:\n  log-filter: warn\n");
    sighup_until(&serving, metrics, 1.0).await;
    assert_eq!(
        count("SIGHUP received"),
        1,
        "logged at info, before the change"
    );
    assert_eq!(count("configuration reloaded"), 0, "after it: filtered out");

    write(&config, "telemetry:\n  log-filter: info\n");
    sighup_until(&serving, metrics, 2.0).await;
    eventually("the info line", Duration::from_secs(5), || async {
        count("configuration reloaded") == 1
    })
    .await;
    assert_eq!(count("SIGHUP received"), 1, "the second was filtered out");
}

#[tokio::test]
async fn a_hundred_reloads_under_load_fail_no_call() {
    let config = scratch("hundred", "quota:\n  rate-limit: 800\n  rate-burst: 800\n");
    let (serving, metrics) = process(&config).await;
    let client = ContactServiceClient::new(channel(serving.addr).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, stop, ok, failed) =
                (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .create_persistent_contact_association(fresh_session())
                        .await
                    {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            eprintln!("failed under reloads: {status:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let reloading = std::time::Instant::now();
    for reload in 0..100u32 {
        let text = match reload % 4 {
            0 => "quota:\n  rate-limit: 1000\n  rate-burst: 1000\n",
            2 => "quota:\n  rate-limit: 900\n  rate-burst: 900\n",
            1 => "quota:\n  rate-limit: lots\n",
            _ => "quota: [not, a, section\n",
        };
        write(&config, text);
        sighup_until(&serving, metrics, f64::from(reload + 1)).await;
    }
    let reloads_took = reloading.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let shown = scrape(Some(metrics)).await;
    assert_eq!(
        metric(
            &shown,
            r#"connect_facade_config_reloads_total{result="ok"}"#
        ),
        50.0
    );
    assert_eq!(
        metric(
            &shown,
            r#"connect_facade_config_reloads_total{result="error"}"#
        ),
        50.0
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "100 reloads in {reloads_took:?} (each SIGHUP until counted), {ok} calls, {failed} failed"
    );
    assert_eq!(failed, 0, "{ok} calls succeeded");
    assert!(ok > 100, "the load ran through the reloads: {ok} calls");
}

#[tokio::test]
#[ignore = "slow tier: 16 s of load"]
async fn a_weight_change_under_load_moves_the_shares() {
    let file = auth_file(
        "reload-weights",
        &[("heavy", 1.0, None), ("light", 1.0, None)],
    );
    let app = spawn_with(open_chats_with_quota(10.0, 11), {
        let file = file.clone();
        move |c: &mut ServeConfig| {
            c.callers.auth_file = Some(file);
            c.listening.reload_interval = Duration::from_millis(100);
            c.quota.rate_limit = 10.0;
            c.quota.rate_burst = 10;
        }
    })
    .await;
    let run = Duration::from_secs(8);
    let every = Duration::from_millis(33);
    let (heavy, light) = tokio::join!(
        offer_on(&app.client, "heavy", every, run),
        offer_on(&app.client, "light", every, run),
    );
    let equal = f64::from(heavy.ok) / f64::from(light.ok.max(1));
    let reweighted = auth_file(
        "reload-weights-next",
        &[("heavy", 3.0, None), ("light", 1.0, None)],
    );
    std::fs::rename(&reweighted, &file).unwrap();
    let (heavy, light) = tokio::join!(
        offer_on(&app.client, "heavy", every, run),
        offer_on(&app.client, "light", every, run),
    );
    let three_to_one = f64::from(heavy.ok) / f64::from(light.ok.max(1));
    eprintln!("shares: {equal:.2} before, {three_to_one:.2} after the reload");
    assert!((0.7..=1.4).contains(&equal), "1:1 before: {equal:.2}");
    assert!(
        (2.2..=3.8).contains(&three_to_one),
        "3:1 after: {three_to_one:.2}"
    );
}
