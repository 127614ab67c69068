//! Retries, the retry budget, deadlines, the rate limiter, the overload bound and the circuit breaker,
//! through the real server, the real SDK and the simulator's fault injection.

use std::time::{Duration, Instant};

use connect_facade::{
    proto::{CreatePersistentContactAssociationRequest, RehydrationType},
    simulator::{
        faults::{Fault, FaultEffect},
        fixtures::{Fixtures, QuotaFixture},
    },
};
use tonic::{Code, metadata::MetadataMap};
use tonic_types::StatusExt;

use crate::support::{always_error, entire_session, fault, spawn, spawn_with};

fn attempts(metadata: &MetadataMap) -> u32 {
    metadata
        .get("x-facade-attempts")
        .expect("x-facade-attempts metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn first(times: u32, code: &str) -> Fault {
    Fault {
        times: Some(times),
        ..always_error(code)
    }
}

/// A call AWS answers NotFound; each for a chat of its own, so none is coalesced with another.
fn unknown_instance() -> CreatePersistentContactAssociationRequest {
    let mut request = crate::support::fresh_session();
    request.instance_id = "not-in-the-fixtures".into();
    request
}

async fn ok_after_two_failures(code: &str) {
    let app = spawn().await;
    app.simulator.add_fault(first(2, code));
    let response = app
        .call(entire_session())
        .await
        .expect("third attempt succeeds");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    assert_eq!(attempts(response.metadata()), 3);
    assert_eq!(
        app.sent_tokens(),
        vec![Some(response.get_ref().client_token.clone()); 3]
    );
}

#[tokio::test]
async fn throttled_twice_then_ok_reuses_one_client_token() {
    ok_after_two_failures("ThrottlingException").await;
}

#[tokio::test]
async fn internal_error_twice_then_ok_reuses_one_client_token() {
    ok_after_two_failures("InternalServiceException").await;
}

#[tokio::test]
async fn persistent_throttling_is_resource_exhausted_after_the_configured_attempts() {
    let app = spawn_with(Fixtures::demo(), |c| c.retries.max_attempts = 4).await;
    app.simulator.add_fault(always_error("ThrottlingException"));
    let (status, info, details) = app
        .call_expecting(entire_session(), Code::ResourceExhausted)
        .await;
    assert_eq!(info.reason, "THROTTLED");
    assert!(details.retry_info().is_some());
    assert_eq!(attempts(status.metadata()), 4);
    assert_eq!(app.simulator.requests().len(), 4);
}

#[tokio::test]
async fn client_errors_are_tried_exactly_once() {
    for code in [
        "AccessDeniedException",
        "InvalidParameterException",
        "InvalidRequestException",
        "ResourceNotFoundException",
    ] {
        let app = spawn().await;
        app.simulator.add_fault(always_error(code));
        let status = app.call(entire_session()).await.expect_err("fails");
        assert_eq!(attempts(status.metadata()), 1, "{code}");
        assert_eq!(app.simulator.requests().len(), 1, "{code}");
    }
}

#[tokio::test]
async fn an_applied_but_unanswered_call_is_replayed_not_applied_twice() {
    let app = spawn().await;
    app.simulator.add_fault(Fault {
        times: Some(1),
        ..fault(FaultEffect::DropAfterApply)
    });
    let response = app
        .call(entire_session())
        .await
        .expect("the retry gets the original answer");
    assert_eq!(response.get_ref().continued_from_contact_id, "C3");
    assert_eq!(attempts(response.metadata()), 2);
    let requests = app.simulator.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].client_token, requests[1].client_token);
}

#[tokio::test]
async fn a_slow_upstream_meets_the_callers_deadline_and_no_attempt_starts_after_it() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.aws.attempt_timeout = Duration::from_millis(300);
    })
    .await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 2_000 }));
    let started = Instant::now();
    let (status, elapsed) = app
        .call_with_deadline(entire_session(), Duration::from_millis(500))
        .await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed < Duration::from_millis(600),
        "answered after {elapsed:?}"
    );
    let deadline = started + Duration::from_millis(500);
    let requests = app.simulator.requests();
    assert!(requests.len() >= 2, "the timed-out attempt was retried");
    assert!(requests.iter().all(|r| r.at < deadline));
    // A fixed sleep: proves no attempt starts after the deadline, so it waits past it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        app.simulator.requests().len(),
        requests.len(),
        "nothing started later"
    );
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_aws_fails_persistently() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.retries.breaker_failures = 0;
        c.retries.retry_base_delay = Duration::from_millis(1);
    })
    .await;
    app.simulator
        .add_fault(always_error("InternalServiceException"));
    let calls = 100;
    for _ in 0..calls {
        app.call_expecting(entire_session(), Code::Unavailable)
            .await;
    }
    let upstream = app.simulator.requests().len();
    // 20% of the calls, plus the floor: 1 retry/s over the 10 s window.
    let allowed = calls + calls / 5 + 10;
    assert!(
        upstream <= allowed,
        "{upstream} upstream attempts for {calls} calls (allowed {allowed})"
    );
    assert!(upstream > calls, "some retries were made");
}

#[tokio::test]
async fn overload_is_held_to_the_configured_rate_and_excess_is_refused_promptly() {
    let fixtures = Fixtures {
        quota: Some(QuotaFixture {
            rate_per_second: 15.0,
            burst: 2,
        }),
        ..Fixtures::demo()
    };
    let app = spawn_with(fixtures, |c| {
        c.quota.rate_limit = 10.0;
        c.quota.rate_burst = 1;
        c.quota.max_queue_wait = Duration::ZERO;
    })
    .await;
    // 10x the configured rate for two seconds.
    let mut calls = Vec::new();
    for _ in 0..200 {
        let client = app.client.clone();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = client
                .clone()
                .create_persistent_contact_association(unknown_instance())
                .await;
            (outcome, started.elapsed())
        }));
        // A fixed sleep: paces the offered load (100 calls/s).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut refused = 0;
    for call in calls {
        let (outcome, elapsed) = call.await.unwrap();
        let status = outcome.expect_err("unknown instance or refused");
        match status.code() {
            Code::NotFound => {}
            Code::ResourceExhausted => {
                let details = status.get_error_details();
                assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
                assert_eq!(
                    details.quota_failure().unwrap().violations[0].subject,
                    "region:us-east-1",
                    "the account key as callers read it (the facade's own identity)"
                );
                assert!(details.retry_info().is_some());
                assert!(
                    elapsed < Duration::from_millis(100),
                    "refused after {elapsed:?}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    let requests = app.simulator.requests();
    let span = requests.last().unwrap().at - requests[0].at;
    let rate = (requests.len() - 1) as f64 / span.as_secs_f64();
    assert!(
        (9.0..=11.0).contains(&rate),
        "{rate:.2} requests/s reached AWS"
    );
    assert!(refused >= 150, "only {refused} refused");
}

#[tokio::test]
async fn concurrency_cap_and_waiting_bound_hold_under_a_burst() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.peers.max_in_flight = 2;
        c.peers.max_waiting = 2;
    })
    .await;
    app.simulator
        .add_fault(fault(FaultEffect::Latency { millis: 300 }));
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = app.client.clone();
            tokio::spawn(async move {
                let outcome = client
                    .clone()
                    .create_persistent_contact_association(unknown_instance())
                    .await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    let (mut admitted, mut shed) = (0, 0);
    for call in calls {
        let (outcome, elapsed) = call.await.unwrap();
        let status = outcome.expect_err("not found or shed");
        match status.code() {
            Code::NotFound => admitted += 1,
            Code::ResourceExhausted => {
                let details = status.get_error_details();
                assert_eq!(details.error_info().unwrap().reason, "OVERLOADED");
                assert!(
                    elapsed < Duration::from_millis(150),
                    "shed after {elapsed:?}"
                );
                shed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, shed), (4, 6));
    let requests = app.simulator.requests();
    let late = requests
        .iter()
        .filter(|r| r.at - started >= Duration::from_millis(250))
        .count();
    assert_eq!(late, 2, "two calls waited for a slot");
}

#[tokio::test]
async fn the_circuit_opens_fails_fast_and_closes_after_recovery() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.retries.max_attempts = 1;
        c.retries.breaker_failures = 3;
        c.retries.breaker_cool_down = Duration::from_millis(400);
        c.telemetry.metrics_listen = Some(crate::support::loopback());
    })
    .await;
    let breaker_open = |metrics: &str| {
        crate::support::series_value(
            metrics,
            r#"connect_facade_circuit_breaker_open{key="us-east-1"}"#,
        )
    };
    assert_eq!(breaker_open(&app.scrape().await), Some(0.0));
    app.simulator
        .add_fault(always_error("InternalServiceException"));
    for _ in 0..3 {
        let (_, info, _) = app
            .call_expecting(entire_session(), Code::Unavailable)
            .await;
        assert_eq!(info.reason, "SERVICE_UNAVAILABLE");
    }
    let started = Instant::now();
    let (status, info, details) = app
        .call_expecting(entire_session(), Code::Unavailable)
        .await;
    assert_eq!(info.reason, "CIRCUIT_OPEN");
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(details.retry_info().is_some());
    assert_eq!(attempts(status.metadata()), 0);
    assert_eq!(app.simulator.requests().len(), 3, "AWS spared while open");
    assert_eq!(breaker_open(&app.scrape().await), Some(1.0));

    app.simulator.clear_faults();
    // A fixed sleep: the breaker's cool-down (400 ms) passes.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        breaker_open(&app.scrape().await),
        Some(0.0),
        "read from the breaker at the scrape: the next call may probe"
    );
    app.call(entire_session())
        .await
        .expect("the probe succeeds");
    let mut second = entire_session();
    second.initial_contact_id = "new-chat-2".into();
    second.rehydration_type = RehydrationType::FromSegment.into();
    second.source_contact_id = "C2".into();
    app.call(second).await.expect("closed again");
}

#[tokio::test]
async fn sustained_throttling_never_opens_the_circuit_nor_takes_the_replica_out_of_service() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.retries.max_attempts = 2;
        c.retries.breaker_failures = 2;
        c.retries.breaker_cool_down = Duration::from_secs(5);
        c.retries.readiness_follows_breaker = true;
    })
    .await;
    app.simulator.add_fault(always_error("ThrottlingException"));
    for _ in 0..6 {
        let (status, info, details) = app
            .call_expecting(entire_session(), Code::ResourceExhausted)
            .await;
        assert_eq!(info.reason, "THROTTLED", "{status:?}");
        assert!(details.retry_info().is_some());
    }
    assert_eq!(
        app.simulator.requests().len(),
        12,
        "every attempt reached AWS"
    );
    // With readiness following the breaker, SERVING also says the breaker never opened.
    // A fixed sleep: readiness is read every 200 ms; it must still say SERVING after a round.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        crate::support::overall_health(app.addr).await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
#[ignore = "slow tier: adaptation over seconds of load"]
async fn a_rate_above_the_aws_quota_adapts_until_throttles_die_out() {
    let fixtures = Fixtures {
        quota: Some(QuotaFixture {
            rate_per_second: 5.0,
            burst: 2,
        }),
        ..Fixtures::demo()
    };
    let app = spawn_with(fixtures, |c| {
        c.quota.rate_limit = 20.0;
        c.quota.rate_burst = 2;
        c.retries.max_attempts = 1;
        c.quota.max_queue_wait = Duration::ZERO;
        c.retries.breaker_failures = 0;
        c.quota.adaptive_decrease = 0.7;
        c.quota.adaptive_increase = 0.2;
    })
    .await;
    // Offered load: 40 calls/s for 6 s, far above both rates.
    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..240 {
        let client = app.client.clone();
        calls.push(tokio::spawn(async move {
            let outcome = client
                .clone()
                .create_persistent_contact_association(unknown_instance())
                .await;
            (outcome, started.elapsed())
        }));
        // A fixed sleep: paces the offered load (40 calls/s).
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (mut early, mut late) = (0, 0);
    for call in calls {
        let (outcome, at) = call.await.unwrap();
        let status = outcome.expect_err("not found, refused or throttled");
        if status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            == Some("THROTTLED".into())
        {
            if at < Duration::from_secs(3) {
                early += 1;
            } else {
                late += 1;
            }
        }
    }
    assert!(
        early >= 3,
        "AWS throttled the configured rate ({early} times)"
    );
    assert!(
        late <= 2,
        "throttles kept coming: {late} in the last 3 s ({early} before)"
    );
    // The rate that reached AWS after the first 3 s, over however long the rest of the run took.
    let late_start = started + Duration::from_secs(3);
    let late: Vec<_> = app
        .simulator
        .requests()
        .into_iter()
        .filter(|r| r.at >= late_start)
        .collect();
    let span = late.last().unwrap().at - late_start;
    let rate = (late.len() as f64 - 2.0) / span.as_secs_f64();
    assert!(
        rate <= 5.0,
        "{} requests reached AWS in {span:?}: {rate:.2}/s beyond the burst",
        late.len()
    );
}

#[tokio::test]
async fn a_per_instance_sub_limit_refuses_one_instance_without_starving_others() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.quota.instance_rate_limit = Some(0.5);
        c.quota.instance_rate_burst = 1;
        c.quota.max_queue_wait = Duration::ZERO;
    })
    .await;
    app.call_expecting(unknown_instance(), Code::NotFound).await;
    let (_, info, details) = app
        .call_expecting(unknown_instance(), Code::ResourceExhausted)
        .await;
    assert_eq!(info.reason, "RATE_LIMITED");
    let violation = &details.quota_failure().expect("QuotaFailure").violations[0];
    assert_eq!(violation.subject, "instance:not-in-the-fixtures");
    let delay = details.retry_info().unwrap().retry_delay.unwrap();
    assert!(
        delay > Duration::from_millis(1_500) && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    app.call(entire_session())
        .await
        .expect("another instance is served");
}

#[tokio::test]
async fn a_rate_limit_of_zero_leaves_the_limiter_out() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.quota.rate_limit = 0.0;
        c.quota.rate_burst = 1;
        c.quota.max_queue_wait = Duration::ZERO;
    })
    .await;
    // At a limit of 1/s with no queueing, 39 of these 40 would be refused.
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .create_persistent_contact_association(unknown_instance())
                    .await
            })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().expect_err("unknown instance");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert_eq!(app.simulator.requests().len(), 40, "every call reached AWS");
}

#[tokio::test]
async fn an_instance_limit_without_the_account_limiter_is_refused_at_startup() {
    let mut config = crate::support::offline_config();
    config.quota.rate_limit = 0.0;
    config.quota.instance_rate_limit = Some(1.0);
    let err = connect_facade::app::App::build(config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--instance-rate-limit"), "{err}");
}

#[tokio::test]
async fn zero_breaker_failures_leaves_the_breaker_out() {
    let app = spawn_with(Fixtures::demo(), |c| {
        c.retries.breaker_failures = 0;
        c.retries.max_attempts = 1;
    })
    .await;
    app.simulator
        .add_fault(always_error("InternalServiceException"));
    for _ in 0..12 {
        let status = app
            .client
            .clone()
            .create_persistent_contact_association(entire_session())
            .await
            .expect_err("AWS keeps failing");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_ne!(
            status.get_error_details().error_info().unwrap().reason,
            "CIRCUIT_OPEN"
        );
    }
    assert_eq!(app.simulator.requests().len(), 12, "no call failed fast");
}
