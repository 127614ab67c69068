//! Prometheus metrics after real calls: the go-grpc-prometheus names dashboards use, and the facade's own.

use connect_facade::simulator::fixtures::Fixtures;
use tonic::Code;

use crate::support::{always_error, entire_session, series_value, spawn_with};

fn value(metrics: &str, series: &str) -> f64 {
    series_value(metrics, series).unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

const RPC: &str = r#"grpc_type="unary",grpc_service="amazonconnect.v1.ContactService",grpc_method="CreatePersistentContactAssociation""#;

#[tokio::test]
async fn metrics_count_calls_codes_attempts_and_retries() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.simulator
        .add_fault(connect_facade::simulator::faults::Fault {
            times: Some(1),
            ..always_error("ThrottlingException")
        });
    app.call(entire_session())
        .await
        .expect("ok after one retry");
    app.call_expecting(Default::default(), Code::InvalidArgument)
        .await;

    let metrics = app.scrape().await;
    assert_eq!(
        value(&metrics, &format!("grpc_server_started_total{{{RPC}}}")),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("grpc_server_handled_total{{{RPC},grpc_code=\"OK\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("grpc_server_handled_total{{{RPC},grpc_code=\"InvalidArgument\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("grpc_server_handling_seconds_count{{{RPC}}}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"connect_facade_upstream_attempts_total{key="us-east-1",outcome="Throttling",aws_error_code="ThrottlingException"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"connect_facade_upstream_attempts_total{key="us-east-1",outcome="ok",aws_error_code=""}"#
        ),
        1.0
    );
    assert_eq!(value(&metrics, "connect_facade_retries_total"), 1.0);
    assert_eq!(value(&metrics, "connect_facade_in_flight_calls"), 0.0);
    assert_eq!(
        value(
            &metrics,
            r#"connect_facade_circuit_breaker_open{key="us-east-1"}"#
        ),
        0.0
    );
    assert!(metrics.contains("connect_facade_build_info{version="));
}

#[tokio::test]
async fn the_runtime_task_gauge_is_flat_across_calls() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let unknown_chat = || connect_facade::proto::CreatePersistentContactAssociationRequest {
        initial_contact_id: "no-such-chat".into(),
        ..entire_session()
    };
    app.call_expecting(unknown_chat(), Code::NotFound).await;
    let before = value(&app.scrape().await, "connect_facade_runtime_alive_tasks");
    assert!(before > 0.0, "the server's own tasks are counted");
    for _ in 0..50 {
        app.call_expecting(unknown_chat(), Code::NotFound).await;
    }
    let after = value(&app.scrape().await, "connect_facade_runtime_alive_tasks");
    assert_eq!(after, before, "finished calls leave no task behind");
}

/// Every metric family the facade exports, by the name Prometheus shows after `# TYPE` (a
/// counter's without `_total`). The dashboard and the alert rules (which `scripts/monitoring.py`
/// runs against a real Prometheus), the runbook and the measurement scripts query these names: renaming one breaks them, so it changes here first.
const EXPORTED: &[&str] = &[
    "connect_facade_accept_errors",
    "connect_facade_build",
    "connect_facade_caller_calls",
    "connect_facade_caller_quota_slots",
    "connect_facade_caller_quota_waits",
    "connect_facade_caller_refusals",
    "connect_facade_caller_token_refusals",
    "connect_facade_calls_by_protocol",
    "connect_facade_circuit_breaker_open",
    "connect_facade_client_token_reuse_refusals",
    "connect_facade_coalesced_calls",
    "connect_facade_config_info",
    "connect_facade_config_reloads",
    "connect_facade_config_restart_required",
    "connect_facade_connections_closed",
    "connect_facade_forgotten_associations",
    "connect_facade_in_flight_calls",
    "connect_facade_jwks_fetched_timestamp_seconds",
    "connect_facade_jwks_fetches",
    "connect_facade_jwks_keys",
    "connect_facade_log_lines_suppressed",
    "connect_facade_open_connections",
    "connect_facade_open_requests_refused",
    "connect_facade_quota_fallback_rate_per_second",
    "connect_facade_quota_fleet_replicas",
    "connect_facade_quota_store_errors",
    "connect_facade_quota_store_round_trip_seconds",
    "connect_facade_quota_store_up",
    "connect_facade_rate_limit_per_second",
    "connect_facade_rate_limiter_refusals",
    "connect_facade_rate_limiter_wait_seconds",
    "connect_facade_rate_limiter_waits",
    "connect_facade_replay_cache_entries",
    "connect_facade_replays",
    "connect_facade_request_buffer_bytes",
    "connect_facade_retries",
    "connect_facade_retries_refused",
    "connect_facade_route_calls",
    "connect_facade_routes",
    "connect_facade_routes_reloads",
    "connect_facade_runtime_alive_tasks",
    "connect_facade_tls_certificate_expiry_timestamp_seconds",
    "connect_facade_tls_reloads",
    "connect_facade_upstream_attempt_seconds",
    "connect_facade_upstream_attempts",
    "grpc_server_handled",
    "grpc_server_handling_seconds",
    "grpc_server_started",
];

/// The files outside the code that name metrics.
const METRIC_READERS: &[&str] = &[
    "deploy/monitoring/dashboard.json",
    "deploy/monitoring/rules.yaml",
    "deploy/monitoring/rules_test.yaml",
    "deploy/monitoring/prometheusrule.yaml",
    "scripts/bench.sh",
    "docs/templates/BENCHMARKS.md.j2",
    "docs/templates/SCALING.md.j2",
    "scripts/connections.py",
    "scripts/hostile_peers.py",
    "scripts/scaling.py",
    "docs/RUNBOOK.md",
    "docs/operators/observability.md",
    "docs/operators/limits.md",
    "docs/operators/quota.md",
    "docs/operators/security.md",
    "docs/operators/routes.md",
    "docs/operators/fair-shares.md",
    "docs/callers/connect-protocol.md",
    "docs/callers/replay.md",
];

/// The metric names `text` mentions, as families (the exposition's sample suffixes taken off).
fn names_mentioned(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["connect_facade_", "grpc_server_"] {
        for (at, _) in text.match_indices(prefix) {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.ends_with('_') {
                continue; // `grpc_server_*`: the family's prefix, not a name
            }
            // A gauge may be named `…_info` itself (connect_facade_config_info).
            let family = ["_total", "_bucket", "_count", "_sum", "_info"]
                .iter()
                .filter(|_| !EXPORTED.contains(&name.as_str()))
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            names.push(family.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn every_family_is_listed_and_every_name_the_dashboard_rules_and_docs_use_is_exported() {
    let app = connect_facade::app::App::build(crate::support::offline_config())
        .await
        .expect("facade builds");
    let mut families = app.metric_families().to_vec();
    families.sort();
    assert_eq!(families, EXPORTED, "the families the parts registered");

    let root = env!("CARGO_MANIFEST_DIR");
    for file in METRIC_READERS {
        let text = std::fs::read_to_string(format!("{root}/{file}"))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        let mentioned = names_mentioned(&text);
        assert!(!mentioned.is_empty(), "{file} names no metric");
        for name in &mentioned {
            assert!(
                EXPORTED.contains(&name.as_str()),
                "{file} names {name}, which the facade does not export"
            );
        }
        if *file == "docs/operators/observability.md" {
            for family in EXPORTED {
                assert!(
                    mentioned.iter().any(|name| name == family),
                    "{family} has no line in docs/operators/observability.md's metrics table"
                );
            }
        }
    }
}

#[tokio::test]
async fn what_a_scrape_shows_is_among_the_listed_families() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    app.call(entire_session()).await.expect("ok");
    let metrics = app.scrape().await;
    let shown: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert!(shown.contains(&"grpc_server_handled"), "{metrics}");
    for family in shown {
        assert!(EXPORTED.contains(&family), "{family} is not listed");
    }
}
