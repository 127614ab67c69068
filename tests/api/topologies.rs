//! The shared quota on the Redis deployments operators run and through the ways Redis fails: a Redis
//! Cluster reached through any node, a cluster master failing over, a master found through Sentinel
//! and found again after a failover, a hung store, and the fallback of a fleet of four while Redis is
//! down. Real `redis-server` processes built by each test ([`crate::redis_topologies`]), the real SDK
//! and the simulator.

use std::time::{Duration, Instant};

use connect_facade::{config::ServeConfig, simulator::Simulator};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    support::replica_command,
    support::serving,
    support::{
        Answer, RedisServer, Replica, TestApp, channel, eventually, fresh_session, loopback,
        open_chats_with_quota, scrape, series_value, spawn_replica, spawn_with,
    },
    support::{HungRedis, RedisCluster, RedisSentinels},
};

/// The account bucket's key under the default prefix (its slot is the `{us-east-1}` hash tag's).
const BUCKET: &str = "connect-facade:{us-east-1}:account";
const STORE_UP: &str = "connect_facade_quota_store_up{store=\"redis\"}";

/// Every call's outcome and how long it took.
type Outcomes = Vec<(Instant, Answer, Duration)>;

/// Calls at `per_second` for `run`, round robin over `clients`, each with `deadline`.
async fn offer(
    clients: Vec<
        connect_facade::proto::contact_service_client::ContactServiceClient<
            tonic::transport::Channel,
        >,
    >,
    per_second: f64,
    run: Duration,
    deadline: Duration,
) -> Outcomes {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    let mut calls = Vec::new();
    let mut sent = 0usize;
    while started.elapsed() < run {
        tick.tick().await;
        let client = clients[sent % clients.len()].clone();
        sent += 1;
        calls.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(fresh_session());
            request.set_timeout(deadline);
            let began = Instant::now();
            let answer = client
                .clone()
                .create_persistent_contact_association(request)
                .await;
            (Instant::now(), answer, began.elapsed())
        }));
    }
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("the call task ends"));
    }
    outcomes
}

/// Every call answered before `bound`, and either served or refused with when to come back.
fn all_answered_in_time(outcomes: &Outcomes, bound: Duration) -> usize {
    let mut ok = 0;
    for (_, answer, took) in outcomes {
        assert!(
            *took <= bound,
            "a call answered after {took:?} (bound {bound:?})"
        );
        match answer {
            Ok(_) => ok += 1,
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
    ok
}

/// A replica in this process on the store at `url`, sending at most `rate` per second.
async fn replica_on(simulator: &Simulator, url: String, rate: f64) -> Replica {
    spawn_replica(simulator, move |c| {
        shared(c, &url);
        c.quota.rate_limit = rate;
    })
    .await
}

fn shared(c: &mut ServeConfig, url: &str) {
    c.quota.quota_store = connect_facade::config::QuotaStoreChoice::Redis(url.parse().unwrap());
    c.quota.rate_limit = 2.0;
    c.quota.rate_burst = 5;
    c.telemetry.metrics_listen = Some(loopback());
}

/// Waits until `app`'s store is up again and `node` holds the account bucket; returns when.
async fn back_on(
    metrics_addr: Option<std::net::SocketAddr>,
    node: &RedisServer,
    since: Instant,
) -> Duration {
    let within = Duration::from_secs(10).saturating_sub(since.elapsed());
    eventually("back on Redis", within, || async move {
        series_value(&scrape(metrics_addr).await, STORE_UP) == Some(1.0)
            && node.command(&["EXISTS", BUCKET]).await.as_deref() == Some(":1")
    })
    .await;
    since.elapsed()
}

/// After a failover under load (2 s deadlines): `replica` is back on `new_master` within 2 s of the
/// promotion, and every call was answered in time, at least 80% of them served.
async fn followed_the_failover(
    replica: &Replica,
    new_master: &RedisServer,
    killed: Instant,
    promoted: Instant,
    load: tokio::task::JoinHandle<Outcomes>,
) {
    let back = back_on(replica.metrics_addr, new_master, promoted).await;
    eprintln!(
        "promoted {:?} after the kill; back on Redis {back:?} after the promotion",
        promoted - killed
    );
    assert!(
        back <= Duration::from_secs(2),
        "back {back:?} after the promotion"
    );
    let outcomes = load.await.unwrap();
    let ok = all_answered_in_time(&outcomes, Duration::from_millis(2_100));
    assert!(
        ok * 10 >= outcomes.len() * 8,
        "{ok} of {} served",
        outcomes.len()
    );
}

#[tokio::test]
#[ignore = "slow tier: Redis topologies, failovers and elections"]
async fn replicas_pointed_at_different_cluster_masters_share_one_quota() {
    let cluster = RedisCluster::start(3, 0).await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(2.0, 5))
        .await
        .unwrap();
    // Two replicas name one master each (cluster mode is detected); the third names all three as
    // seeds. Only one of the three masters holds the account's slot.
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect();
    let urls = [
        cluster.nodes[0].url(),
        cluster.nodes[1].url(),
        format!("redis+cluster://{}", seeds.join(",")),
    ];
    let mut replicas = Vec::new();
    for url in &urls {
        replicas.push(serving(replica_command(&simulator, url, &[])).await);
    }
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(
            connect_facade::proto::contact_service_client::ContactServiceClient::new(
                channel(replica.addr).await,
            ),
        );
    }
    let run = Duration::from_secs(12);
    let started = Instant::now();
    let outcomes = offer(clients, 6.0, run, Duration::from_secs(5)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = all_answered_in_time(&outcomes, Duration::from_secs(5));
    let attempts = simulator.requests().len();
    let throttled = simulator.throttled() as usize;
    eprintln!(
        "{} calls, {ok} ok; {attempts} attempts, {throttled} throttled in {elapsed:.1} s",
        outcomes.len()
    );
    crate::support::one_quota_was_shared(attempts, throttled, elapsed, run, 0.8);
    for replica in &replicas {
        let logs = replica.logs.lock().unwrap().join("\n");
        assert!(!logs.contains("quota store failed"), "{logs}");
    }
}

#[tokio::test]
#[ignore = "slow tier: Redis topologies, failovers and elections"]
async fn a_cluster_master_failing_over_during_calls_is_followed() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(100.0, 100))
        .await
        .unwrap();
    let replica = replica_on(&simulator, cluster.nodes[0].url(), 100.0).await;
    let load = tokio::spawn(offer(
        vec![replica.client.clone()],
        10.0,
        Duration::from_secs(8),
        Duration::from_secs(2),
    ));
    // A fixed sleep: the load runs on the cluster before a master fails.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old = cluster.master_of(BUCKET).await;
    cluster.nodes[old].kill();
    let killed = Instant::now();
    let new = cluster.master_of(BUCKET).await;
    let promoted = Instant::now();
    assert_ne!(old, new);
    followed_the_failover(&replica, &cluster.nodes[new], killed, promoted, load).await;
}

#[tokio::test]
#[ignore = "slow tier: Redis topologies, failovers and elections"]
async fn the_master_named_by_sentinels_is_found_again_after_a_failover() {
    let mut group = RedisSentinels::start().await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(100.0, 100))
        .await
        .unwrap();
    let replica = replica_on(&simulator, group.url(), 100.0).await;
    replica.call(fresh_session()).await.expect("served");
    assert_eq!(
        group.master.command(&["EXISTS", BUCKET]).await.as_deref(),
        Some(":1"),
        "the bucket is on the master the sentinels name"
    );
    let load = tokio::spawn(offer(
        vec![replica.client.clone()],
        10.0,
        Duration::from_secs(9),
        Duration::from_secs(2),
    ));
    // A fixed sleep: the load runs on the first master before the failover.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_port = group.master.port;
    group.master.kill();
    let killed = Instant::now();
    let watched = &group;
    eventually(
        "the sentinels promote the replica",
        // Within a few seconds (down after 1 s); a loaded machine may need an election again.
        Duration::from_secs(40),
        || async move { watched.master_port().await != Some(old_port) },
    )
    .await;
    let promoted = Instant::now();
    assert_eq!(group.master_port().await, Some(group.replica.port));
    followed_the_failover(&replica, &group.replica, killed, promoted, load).await;
}

#[tokio::test]
#[ignore = "slow tier: Redis topologies, failovers and elections"]
async fn a_hung_store_costs_one_timeout_not_one_per_call() {
    let hung = HungRedis::start().await;
    let url = hung.url();
    let app: TestApp = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        shared(c, &url);
        c.quota.rate_limit = 50.0;
        c.quota.quota_store_timeout = Duration::from_millis(200);
    })
    .await;
    let started = Instant::now();
    app.call(fresh_session())
        .await
        .expect("served from the fallback");
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(200),
        "the first call met the timeout: {first:?}"
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        app.call(fresh_session())
            .await
            .expect("served from the fallback");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(100),
        "after the first timeout no call waits on the store: slowest {slowest:?}"
    );
    assert_eq!(series_value(&app.scrape().await, STORE_UP), Some(0.0));
}

#[tokio::test]
#[ignore = "slow tier: Redis topologies, failovers and elections"]
async fn four_replicas_falling_back_together_stay_within_the_quota() {
    let mut redis = RedisServer::start().await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(2.0, 5))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(replica_on(&simulator, redis.url(), 2.0).await);
    }
    // Every replica has registered and counted the fleet.
    for replica in &replicas {
        eventually(
            "the fleet of 4 is counted",
            Duration::from_secs(10),
            || async {
                series_value(
                    &replica.scrape().await,
                    "connect_facade_quota_fleet_replicas{key=\"us-east-1\"}",
                ) == Some(4.0)
            },
        )
        .await;
    }
    let clients = replicas
        .iter()
        .map(|replica| replica.client.clone())
        .collect();
    let run = Duration::from_secs(16);
    let load = tokio::spawn(offer(clients, 8.0, run, Duration::from_secs(5)));
    // A fixed sleep: the replicas share Redis under load before they fall back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.kill();
    let killed = Instant::now();
    let (attempts_before, throttled_before) = (simulator.requests().len(), simulator.throttled());
    let outcomes = load.await.unwrap();
    let seconds = killed.elapsed().as_secs_f64();
    all_answered_in_time(&outcomes, Duration::from_secs(5));
    let attempts = simulator.requests().len() - attempts_before;
    let throttled = (simulator.throttled() - throttled_before) as usize;
    let accepted = attempts - throttled;
    eprintln!(
        "while Redis was down ({seconds:.1} s): {attempts} attempts, {throttled} throttled, {accepted} accepted"
    );
    assert!(
        throttled * 20 <= attempts,
        "{throttled} of {attempts} attempts throttled while Redis was down (at most 5%)"
    );
    assert!(
        accepted as f64 >= 0.8 * 2.0 * seconds,
        "{accepted} accepted in {seconds:.1} s: at least 80% of the quota"
    );
    let metrics = replicas[0].scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            "connect_facade_quota_fallback_rate_per_second{key=\"us-east-1\"}"
        ),
        Some(0.5),
        "a quarter of the 2/s rate"
    );
}

#[tokio::test]
#[ignore = "slow tier: Redis topologies, failovers and elections"]
async fn redis_killed_under_load_again_and_again_answers_every_call_within_its_bound() {
    let mut redis = RedisServer::start().await;
    // AWS's quota is half the rate the replicas were given: attempts are throttled and retried, and
    // a retry waits only for what is left of its call's queue wait.
    let simulator = Simulator::start(loopback(), open_chats_with_quota(1.0, 2))
        .await
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica_on(&simulator, redis.url(), 2.0).await);
    }
    let clients = replicas
        .iter()
        .map(|replica| replica.client.clone())
        .collect();
    // 3x the quota, with the caller's own 5 s deadline; Redis dies twice.
    let load = tokio::spawn(offer(
        clients,
        6.0,
        Duration::from_secs(14),
        Duration::from_secs(5),
    ));
    let started = Instant::now();
    for (at, alive) in [(3, false), (7, true), (10, false)] {
        tokio::time::sleep_until((started + Duration::from_secs(at)).into()).await;
        if alive {
            redis.restart().await;
        } else {
            redis.kill();
        }
    }
    let outcomes = load.await.unwrap();
    // --max-queue-wait (3 s) and the store's timeout (100 ms), plus a margin for AWS's own time
    // (with a wait per attempt, a retried call was answered after 3.5 s here, and before the
    // fleet-sized fallback one met its caller's 5 s timeout).
    let bound = Duration::from_millis(3_100 + 300);
    let ok = all_answered_in_time(&outcomes, bound);
    let slowest = outcomes
        .iter()
        .map(|(_, _, took)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{ok} of {} served; slowest answer {slowest:?}",
        outcomes.len()
    );
    assert!(ok > 0);
}
