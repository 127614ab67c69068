//! One AWS quota across replicas: the Redis store's script against governor's GCRA, three facade
//! processes sharing one Redis and one simulator quota, deadlines while waiting for a reserved slot,
//! and Redis dying and coming back under load. Each test runs its own redis-server.

use crate::support::{one_quota_was_shared, replica_command};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use connect_facade::{
    proto::contact_service_client::ContactServiceClient,
    quota::{AdaptiveConfig, Full, QuotaLimits, Slot, SlotRequest, redis::RedisQuota},
    simulator::Simulator,
};
use governor::{Quota, RateLimiter, clock::Clock, nanos::Nanos};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    support::{
        RedisServer, channel, eventually, fresh_session, loopback, open_chats_with_quota,
        series_value, spawn_with,
    },
    support::{Serving, serving},
};

/// A clock the test sets, for governor's side of the comparison.
#[derive(Clone, Default)]
struct SettableClock(Arc<AtomicU64>);

impl SettableClock {
    fn set_micros(&self, micros: u64) {
        self.0.store(micros * 1_000, Ordering::Relaxed);
    }
}

impl Clock for SettableClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        self.0.load(Ordering::Relaxed).into()
    }
}

fn limits(rate_per_second: f64, burst: u32) -> QuotaLimits {
    QuotaLimits {
        rate_per_second,
        burst,
        per_instance: None,
        adaptive: AdaptiveConfig {
            decrease_factor: 0.7,
            increase_per_second: 0.1,
        },
    }
}

/// A small deterministic generator (xorshift), so a failing sequence is the same on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn the_redis_script_decides_as_governors_gcra_does_for_the_same_arrivals() {
    let redis = RedisServer::start().await;
    // An epoch-like origin for the script's clock; governor counts from its own start.
    let origin = Duration::from_secs(1_800_000_000);
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    for (case, (rate, burst)) in [(2.0, 5), (2.0, 1), (10.0, 3), (0.5, 2)]
        .into_iter()
        .enumerate()
    {
        let store = RedisQuota::new(
            &redis.url(),
            &format!("model-{case}"),
            limits(rate, burst),
            Duration::from_secs(2),
        )
        .unwrap();
        let clock = SettableClock::default();
        let period = Duration::from_secs_f64(1.0 / rate);
        let quota = Quota::with_period(period)
            .unwrap()
            .allow_burst(std::num::NonZeroU32::new(burst).unwrap());
        let model = RateLimiter::direct_with_clock(quota, clock.clone());
        let mut seed = 0x9E37_79B9_7F4A_7C15 ^ case as u64;
        let mut at = 0u64;
        for arrival in 0..400 {
            at += next(&mut seed) % (period.as_micros() as u64 * 2);
            let max_wait = match next(&mut seed) % 3 {
                0 => Duration::ZERO,
                _ => Duration::from_micros(next(&mut seed) % (period.as_micros() as u64 * 3)),
            };
            clock.set_micros(at);
            let expected = match model.check() {
                Ok(()) => Ok(Duration::ZERO),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now());
                    if wait <= max_wait {
                        // A reservation is a send at its slot's time.
                        clock.set_micros(at + wait.as_micros() as u64);
                        model.check().expect("the slot conforms when it is due");
                        Ok(wait)
                    } else {
                        Err(wait)
                    }
                }
            };
            let request = SlotRequest {
                key: "us-east-1",
                instance_id: "any",
                max_wait,
                deadline: far,
                caller: None,
            };
            let decided = store
                .reserve_at(request, Some(origin + Duration::from_micros(at)), None)
                .await
                .expect("Redis answers")
                .map(|slot| slot.wait)
                .map_err(|full| full.retry_after);
            assert_eq!(
                decided, expected,
                "rate {rate}/s burst {burst}: arrival {arrival} at {at} µs, max wait {max_wait:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_replica_back_from_its_fallback_waits_for_its_fallbacks_slots_and_finds_the_burst_spent()
{
    let redis = RedisServer::start().await;
    let store = RedisQuota::new(
        &redis.url(),
        "resumed",
        limits(2.0, 5),
        Duration::from_secs(2),
    )
    .unwrap();
    let now = Duration::from_secs(1_800_000_000);
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let request = |key| SlotRequest {
        key,
        instance_id: "any",
        max_wait: Duration::ZERO,
        deadline: far,
        caller: None,
    };
    let granted =
        |decision: Result<Result<Slot, Full>, _>| decision.expect("Redis answers").is_ok();
    // An idle (or emptied) bucket offers its whole burst...
    for _ in 0..5 {
        assert!(granted(
            store.reserve_at(request("idle"), Some(now), None).await
        ));
    }
    assert!(!granted(
        store.reserve_at(request("idle"), Some(now), None).await
    ));
    // ...but after an outage, the first slot comes after the fallback's last (1.2 s away here),
    // then one interval apart: the fallbacks were sending the whole quota.
    let pending = Duration::from_millis(1_200);
    let back = store
        .reserve_at(request("back"), Some(now), Some(pending))
        .await
        .expect("Redis answers")
        .expect_err("not before the fallback's last slot");
    assert_eq!(back.retry_after, pending);
    let after_it = now + pending;
    assert!(granted(
        store
            .reserve_at(request("back"), Some(after_it), None)
            .await
    ));
    let refused = store
        .reserve_at(request("back"), Some(after_it), None)
        .await
        .expect("Redis answers")
        .expect_err("the burst is spent");
    assert_eq!(
        refused.retry_after,
        Duration::from_millis(500),
        "one interval"
    );
    let later = after_it + Duration::from_millis(500);
    assert!(granted(
        store.reserve_at(request("back"), Some(later), None).await
    ));
}

/// A facade process sharing the quota through `redis`, calling `simulator`.
async fn replica(simulator: &Simulator, redis: &RedisServer) -> Serving {
    serving(replica_command(simulator, &redis.url(), &[])).await
}

#[tokio::test]
#[ignore = "slow tier: replicas and Redis under load"]
async fn three_replicas_sharing_redis_send_the_quota_and_are_almost_never_throttled() {
    let redis = RedisServer::start().await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(2.0, 5))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&simulator, &redis).await);
    }
    // 3x the quota (6 calls/s), spread over the replicas, for 20 s, each call on its own.
    let run = Duration::from_secs(20);
    let started = Instant::now();
    let mut calls = Vec::new();
    let clients = futures_clients(&replicas).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / 6.0));
    let mut sent = 0usize;
    while started.elapsed() < run {
        tick.tick().await;
        let mut client = clients[sent % clients.len()].clone();
        sent += 1;
        calls.push(tokio::spawn(async move {
            client
                .create_persistent_contact_association(fresh_session())
                .await
        }));
    }
    let mut ok = 0usize;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.get_error_details().retry_info().is_some(),
                    "every refusal says when to come back: {status:?}"
                );
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let attempts = simulator.requests().len();
    let throttled = simulator.throttled() as usize;
    let accepted = attempts - throttled;
    eprintln!(
        "{sent} calls, {ok} ok; {attempts} attempts, {accepted} accepted, {throttled} throttled in {elapsed:.1} s"
    );
    // The shared bucket is used, not left idle: at least 90% of the quota turned into answers.
    one_quota_was_shared(attempts, throttled, elapsed, run, 0.9);
    assert!(ok > 0 && ok < sent, "{ok} of {sent} calls succeeded");
}

async fn futures_clients(
    replicas: &[Serving],
) -> Vec<ContactServiceClient<tonic::transport::Channel>> {
    let mut clients = Vec::new();
    for replica in replicas {
        clients.push(ContactServiceClient::new(channel(replica.addr).await));
    }
    clients
}

#[tokio::test]
async fn no_call_is_answered_after_its_deadline_while_waiting_for_a_reserved_slot() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.quota.quota_store = connect_facade::config::QuotaStoreChoice::Redis(url.parse().unwrap());
        c.quota.rate_limit = 2.0;
        c.quota.rate_burst = 1;
        c.quota.max_queue_wait = Duration::from_secs(5);
    })
    .await;
    let deadline = Duration::from_millis(1_200);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = app.client.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(fresh_session());
                request.set_timeout(deadline);
                let started = Instant::now();
                let outcome = client
                    .clone()
                    .create_persistent_contact_association(request)
                    .await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        let (outcome, elapsed) = call.await.unwrap();
        assert!(
            elapsed <= deadline + Duration::from_millis(50),
            "answered after {elapsed:?}"
        );
        match outcome {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let details = status.get_error_details();
                assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
                assert!(details.retry_info().is_some());
                assert!(
                    elapsed < Duration::from_millis(300),
                    "a slot past the deadline is refused at once, not after {elapsed:?}"
                );
            }
        }
    }
    // Slots at 0, 0.5 and 1.0 s fit a 1.2 s deadline; the others are refused.
    assert_eq!(ok, 3, "{ok} calls got a slot");
}

#[tokio::test]
#[ignore = "slow tier: replicas and Redis under load"]
async fn redis_dying_mid_run_falls_back_locally_and_the_replica_returns_within_two_seconds() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.quota.quota_store = connect_facade::config::QuotaStoreChoice::Redis(url.parse().unwrap());
        c.quota.rate_limit = 4.0;
        c.quota.rate_burst = 2;
        c.quota.quota_fallback_rate = Some(1.0);
        // Slots are granted at once or refused: a call answered while Redis is down took its slot
        // from the fallback, not from a reservation made before the kill.
        c.quota.max_queue_wait = Duration::ZERO;
        c.telemetry.metrics_listen = Some(loopback());
    })
    .await;
    let store_up =
        |metrics: &str| series_value(metrics, "connect_facade_quota_store_up{store=\"redis\"}");
    // Calls at 10/s throughout; each must be answered, within its 2 s deadline.
    let load = {
        let client = app.client.clone();
        tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..60 {
                tick.tick().await;
                let mut client = client.clone();
                calls.push(tokio::spawn(async move {
                    let mut request = tonic::Request::new(fresh_session());
                    request.set_timeout(Duration::from_secs(2));
                    let started = Instant::now();
                    let outcome = client.create_persistent_contact_association(request).await;
                    (Instant::now(), outcome, started.elapsed())
                }));
            }
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.unwrap());
            }
            outcomes
        })
    };
    // A fixed sleep: the load runs on Redis for a second before Redis dies.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(store_up(&app.scrape().await), Some(1.0));
    assert!(
        redis.holds_the_account_bucket().await,
        "the bucket lives in Redis"
    );
    redis.kill();
    let killed = Instant::now();
    // A fixed sleep: the load runs on the fallback for the two seconds measured.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(store_up(&app.scrape().await), Some(0.0), "on the fallback");
    let fallback_ok_from = killed + Duration::from_millis(300);
    let fallback_ok_to = Instant::now();
    redis.restart().await;
    let app_ref = &app;
    eventually(
        "back on Redis after its restart",
        Duration::from_secs(2),
        || async move { store_up(&app_ref.scrape().await) == Some(1.0) },
    )
    .await;
    let outcomes = load.await.unwrap();
    let mut on_fallback = 0;
    for (answered_at, outcome, elapsed) in &outcomes {
        assert!(
            *elapsed < Duration::from_secs(2),
            "answered after {elapsed:?}"
        );
        match outcome {
            Ok(_) => {
                if (fallback_ok_from..fallback_ok_to).contains(answered_at) {
                    on_fallback += 1;
                }
            }
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::ResourceExhausted | Code::Unavailable),
                    "{status:?}"
                );
                assert!(
                    status.get_error_details().retry_info().is_some(),
                    "{status:?}"
                );
            }
        }
    }
    // The fallback bucket: 1/s with the burst scaled with it (2 x 1/4, so 1), over at most 2 s.
    assert!(
        on_fallback <= 3,
        "{on_fallback} calls succeeded on the 1/s fallback in {:?}",
        fallback_ok_to - fallback_ok_from
    );
    assert!(on_fallback >= 1, "the fallback serves calls");
    let metrics = app.scrape().await;
    assert!(
        series_value(&metrics, "connect_facade_quota_store_errors_total").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_throttle_seen_by_one_replica_lowers_the_rate_of_every_replica() {
    let redis = RedisServer::start().await;
    let shared = |c: &mut connect_facade::config::ServeConfig| {
        c.quota.quota_store =
            connect_facade::config::QuotaStoreChoice::Redis(redis.url().parse().unwrap());
        c.quota.rate_limit = 10.0;
        c.quota.rate_burst = 10;
        c.retries.max_attempts = 1;
        c.telemetry.metrics_listen = Some(loopback());
    };
    let throttled = spawn_with(open_chats_with_quota(100.0, 100), shared).await;
    let other = spawn_with(open_chats_with_quota(100.0, 100), shared).await;
    let rate = "connect_facade_rate_limit_per_second{key=\"us-east-1\"}";
    other.call(fresh_session()).await.expect("served");
    assert_eq!(series_value(&other.scrape().await, rate), Some(10.0));
    throttled.simulator.add_fault(crate::support::fault(
        connect_facade::simulator::faults::FaultEffect::Error {
            code: "ThrottlingException".into(),
            status: None,
            message: None,
        },
    ));
    let (_, info, _) = throttled
        .call_expecting(fresh_session(), Code::ResourceExhausted)
        .await;
    assert_eq!(info.reason, "THROTTLED");
    // The throttle reaches Redis in the background, once the throttled call has its answer.
    let other = &other;
    eventually(
        "the other replica's slots come at the rate lowered by 0.7",
        Duration::from_secs(1),
        || async move {
            other.call(fresh_session()).await.expect("served");
            series_value(&other.scrape().await, rate) == Some(7.0)
        },
    )
    .await;
}

#[tokio::test]
async fn the_quota_is_shared_over_tls_with_an_acl_user() {
    let pki = crate::support::Pki::new("redis");
    let (cert, key) = pki.leaf("127.0.0.1");
    let tls_port = crate::support::free_port();
    let redis = RedisServer::start_with(vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        pki.write("redis.pem", &cert).display().to_string(),
        "--tls-key-file".into(),
        pki.write("redis.key", &key).display().to_string(),
        "--tls-ca-cert-file".into(),
        pki.write("ca.pem", &pki.ca_pem).display().to_string(),
        "--tls-auth-clients".into(),
        "no".into(),
        "--user".into(),
        "facade".into(),
        "on".into(),
        ">s3cret".into(),
        "~*".into(),
        "+@all".into(),
    ])
    .await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(100.0, 100))
        .await
        .unwrap();
    // A slow rate: the bucket's key lives until its next slot (10 s), so a loaded machine still
    // finds it when it looks.
    let mut command = replica_command(
        &simulator,
        &format!("rediss://facade:s3cret@127.0.0.1:{tls_port}"),
        // The first round trip dials TLS and authenticates: on a loaded machine, more than the
        // default 100 ms.
        &["--rate-limit", "0.1", "--quota-store-timeout", "2s"],
    );
    // rustls-native-certs reads the trusted roots from SSL_CERT_FILE, as for a private CA.
    command.env("SSL_CERT_FILE", pki.dir.join("ca.pem"));
    let replica = serving(command).await;
    let mut client = ContactServiceClient::new(channel(replica.addr).await);
    client
        .create_persistent_contact_association(fresh_session())
        .await
        .expect("served");
    assert!(
        redis.holds_the_account_bucket().await,
        "the slot was taken in Redis, over TLS"
    );
    let logs = replica.logs.lock().unwrap().join("\n");
    assert!(!logs.contains("s3cret"), "the password never reaches a log");
    assert!(!logs.contains("quota store failed"), "{logs}");
}

#[tokio::test]
async fn a_redis_down_at_startup_only_delays_sharing_the_quota() {
    let mut redis = RedisServer::start().await;
    redis.kill();
    let url = redis.url();
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.quota.quota_store = connect_facade::config::QuotaStoreChoice::Redis(url.parse().unwrap());
        // A slot every 500 ms: the bucket's key outlives the call long enough to be seen.
        c.quota.rate_limit = 2.0;
        c.telemetry.metrics_listen = Some(loopback());
    })
    .await;
    app.call(fresh_session())
        .await
        .expect("served from the fallback bucket");
    let up = "connect_facade_quota_store_up{store=\"redis\"}";
    assert_eq!(series_value(&app.scrape().await, up), Some(0.0));
    redis.restart().await;
    let app_ref = &app;
    eventually("on Redis", Duration::from_secs(2), || async move {
        series_value(&app_ref.scrape().await, up) == Some(1.0)
    })
    .await;
    app.call(fresh_session()).await.expect("served");
    assert!(redis.holds_the_account_bucket().await);
}

#[tokio::test]
async fn the_per_instance_sub_limit_is_shared_through_redis_too() {
    let redis = RedisServer::start().await;
    let shared = |c: &mut connect_facade::config::ServeConfig| {
        c.quota.quota_store =
            connect_facade::config::QuotaStoreChoice::Redis(redis.url().parse().unwrap());
        c.quota.rate_limit = 100.0;
        c.quota.instance_rate_limit = Some(0.5);
        c.quota.instance_rate_burst = 1;
        c.quota.max_queue_wait = Duration::ZERO;
    };
    let first = spawn_with(open_chats_with_quota(100.0, 100), shared).await;
    let second = spawn_with(open_chats_with_quota(100.0, 100), shared).await;
    first
        .call(fresh_session())
        .await
        .expect("the instance's slot");
    let (_, info, details) = second
        .call_expecting(fresh_session(), Code::ResourceExhausted)
        .await;
    assert_eq!(info.reason, "RATE_LIMITED");
    let violation = &details.quota_failure().expect("QuotaFailure").violations[0];
    assert_eq!(
        violation.subject,
        format!("instance:{}", crate::support::INSTANCE)
    );
    let mut other = fresh_session();
    other.instance_id = "another-instance".into();
    let status = second.call(other).await.expect_err("not in the fixtures");
    assert_eq!(
        status.code(),
        Code::NotFound,
        "another instance has its own bucket, so the call reached AWS: {status:?}"
    );
}
