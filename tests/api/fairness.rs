//! Callers sharing the quota: fair shares by weight while they wait, and each caller's own max_rate.
//! The quota here is Connect's default (2 requests/s, burst 5) on the simulator, with the facade's
//! default limits (2/s, burst 4, --max-queue-wait 3s).

use crate::support::{as_caller, auth_file, offer_on};
use std::time::Duration;

use connect_facade::config::ServeConfig;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    INSTANCE, TestApp, entire_session, fresh_session, open_chats_with_quota, series_value,
    spawn_with,
};

/// The facade at the default quota limits, on a simulator with Connect's quota; or, at `rate` (with
/// a burst of one second's calls), on a simulator with that quota.
async fn sharing(test: &str, callers: &[(&str, f64, Option<f64>)], rate: Option<f64>) -> TestApp {
    let file = auth_file(test, callers);
    let quota = match rate {
        Some(rate) => open_chats_with_quota(rate, rate as u32 + 1),
        None => open_chats_with_quota(2.0, 5),
    };
    spawn_with(quota, move |c: &mut ServeConfig| {
        let defaults = ServeConfig::from_args::<_, &str>([]).unwrap();
        c.quota.rate_limit = rate.unwrap_or(defaults.quota.rate_limit);
        c.quota.rate_burst = rate.map_or(defaults.quota.rate_burst, |rate| rate as u32);
        c.quota.max_queue_wait = defaults.quota.max_queue_wait;
        c.callers.auth_file = Some(file);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// Calls as `name` every `every` for `run`, each call in its own task (an open loop, as independent
/// clients would); answers (succeeded, refused) once every call has its answer.
async fn offer(app: &TestApp, name: &'static str, every: Duration, run: Duration) -> (u32, u32) {
    let offered = offer_on(&app.client, name, every, run).await;
    (offered.ok, offered.refused)
}

#[tokio::test]
#[ignore = "slow tier: 20 s of load"]
async fn a_quiet_caller_gets_its_calls_through_while_another_floods() {
    let app = sharing(
        "fair-flood",
        &[("flood", 1.0, None), ("quiet", 1.0, None)],
        None,
    )
    .await;
    let run = Duration::from_secs(20);
    // 10x the quota against 0.25x.
    let (flood, quiet) = tokio::join!(
        offer(&app, "flood", Duration::from_millis(50), run),
        offer(&app, "quiet", Duration::from_secs(2), run),
    );
    let quiet_offered = quiet.0 + quiet.1;
    assert!(
        quiet.0 * 100 >= quiet_offered * 95,
        "the quiet caller: {} of {quiet_offered} succeeded (flood: {flood:?})",
        quiet.0
    );
    // The flood still gets the rest of the quota, and AWS throttled nothing.
    // 20 s at 2/s, the burst of 4, and the calls still waiting (up to 3 s) when the run ends.
    let served = flood.0 + quiet.0;
    assert!(
        (36..=51).contains(&served),
        "{served} calls in 20 s at 2/s (burst 4)"
    );
    assert_eq!(app.simulator.throttled(), 0);
    let metrics = app.scrape().await;
    let refusals = series_value(
        &metrics,
        r#"connect_facade_caller_refusals_total{caller="flood",reason="quota"}"#,
    );
    assert_eq!(refusals, Some(f64::from(flood.1)), "{metrics}");
    let slots = series_value(
        &metrics,
        r#"connect_facade_caller_quota_slots_total{caller="quiet"}"#,
    );
    assert_eq!(slots, Some(f64::from(quiet.0)));
}

#[tokio::test]
#[ignore = "slow tier: 20 s of load"]
async fn weights_3_to_1_share_a_saturated_quota_3_to_1() {
    // A quota of 10/s rather than 2/s: 200 slots in the run instead of 40, so one call more or
    // less on either side (the first burst, the calls still queued at the end) moves the ratio by
    // a few percent, not by a third.
    let callers = [("heavy", 3.0, None), ("light", 1.0, None)];
    let app = sharing("fair-weights", &callers, Some(10.0)).await;
    let run = Duration::from_secs(20);
    // Both at 3x the quota.
    let (heavy, light) = tokio::join!(
        offer(&app, "heavy", Duration::from_millis(33), run),
        offer(&app, "light", Duration::from_millis(33), run),
    );
    let ratio = f64::from(heavy.0) / f64::from(light.0.max(1));
    eprintln!("heavy {heavy:?} light {light:?}: ratio {ratio:.2}");
    assert!(
        (2.4..=3.6).contains(&ratio),
        "heavy {heavy:?} light {light:?}: ratio {ratio:.2}"
    );
}

#[tokio::test]
async fn a_caller_over_its_own_max_rate_is_refused_and_the_others_are_not() {
    let file = auth_file(
        "fair-max-rate",
        &[("capped", 1.0, Some(1.0)), ("free", 1.0, None)],
    );
    let app = spawn_with(open_chats_with_quota(1000.0, 1000), move |c| {
        c.callers.auth_file = Some(file);
        c.telemetry.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut client = app.client.clone();
    let mut capped = Vec::new();
    for _ in 0..5 {
        capped.push(
            client
                .create_persistent_contact_association(as_caller("capped", fresh_session()))
                .await,
        );
        client
            .create_persistent_contact_association(as_caller("free", fresh_session()))
            .await
            .expect("the other caller is unaffected");
    }
    assert!(capped[0].is_ok(), "its first call fits its burst of 1");
    for refused in &capped[1..] {
        let status = refused.as_ref().expect_err("over its own rate");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "CALLER_RATE_LIMITED");
        assert_eq!(info.metadata.get("caller").unwrap(), "capped");
        assert_eq!(info.metadata.get("instanceId").unwrap(), INSTANCE);
        let quota = details.quota_failure().unwrap();
        assert_eq!(quota.violations[0].subject, "caller:capped");
        let retry = details.retry_info().unwrap().retry_delay.unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
    }
    // AWS saw the capped caller's one call and the other's five.
    assert_eq!(app.simulator.requests().len(), 6);
    let metrics = app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_caller_refusals_total{caller="capped",reason="caller_rate"}"#
        ),
        Some(4.0)
    );
}

/// A call refused for its caller's own rate logs its `rpc finished` line with the reason, the route
/// and the caller, as the runbook's questions need them.
#[tokio::test]
async fn a_caller_rate_refusal_is_logged_with_its_route_and_caller() {
    use connect_facade::proto::contact_service_client::ContactServiceClient;

    use crate::{
        support::channel,
        support::{facade, serving},
    };
    let file = auth_file("refusal-log", &[("quick", 1.0, Some(1.0))]);
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--auth-file",
        file.to_str().unwrap(),
    ]))
    .await;
    let mut client = ContactServiceClient::new(channel(serving.addr).await);
    let mut refused = None;
    for _ in 0..3 {
        if let Err(status) = client
            .create_persistent_contact_association(as_caller("quick", entire_session()))
            .await
        {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a burst over max_rate 1/s is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "CALLER_RATE_LIMITED"
    );
    let line = serving.line_with_reason("CALLER_RATE_LIMITED").await;
    assert_eq!(line["fields"]["message"], "rpc finished");
    assert_eq!(line["fields"]["route"], "default");
    assert_eq!(line["span"]["caller"], "quick");
    std::fs::remove_file(file).ok();
}
