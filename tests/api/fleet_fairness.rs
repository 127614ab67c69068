//! Fair shares across replicas sharing one Redis. Each caller sits on one replica, as a gRPC
//! client's one connection does behind a Kubernetes Service: weights and the quiet caller's
//! protection must still hold fleet-wide (`src/quota/fair/`).
//!
//! The quota is 10 requests/s (the simulator's, and the facade's with a burst of 10), so a 20 s run
//! gives 200 slots: one call more or less (the first burst, the calls still queued at the end)
//! moves a ratio by a few percent, not by a third.

use std::time::Duration;

use connect_facade::{proto::contact_service_client::ContactServiceClient, simulator::Simulator};
use tonic::transport::Channel;

use crate::{
    support::replica_command,
    support::{RedisServer, channel, loopback, open_chats_with_quota},
    support::{Serving, serving},
    support::{auth_file, offer_on},
};

const RATE: f64 = 10.0;

/// A fleet of `replicas` facade processes on one Redis, sharing a 10/s quota among `callers`.
struct Fleet {
    simulator: Simulator,
    clients: Vec<ContactServiceClient<Channel>>,
    _replicas: Vec<Serving>,
    _redis: RedisServer,
}

async fn fleet(test: &str, callers: &[(&str, f64, Option<f64>)], replicas: usize) -> Fleet {
    let redis = RedisServer::start().await;
    let simulator = Simulator::start(loopback(), open_chats_with_quota(RATE, RATE as u32 + 1))
        .await
        .unwrap();
    let auth = auth_file(test, callers);
    let auth = auth.to_str().unwrap();
    let rate = RATE.to_string();
    let burst = (RATE as u32).to_string();
    let mut serving_replicas = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..replicas {
        let command = replica_command(
            &simulator,
            &redis.url(),
            &[
                "--rate-limit",
                &rate,
                "--rate-burst",
                &burst,
                "--auth-file",
                auth,
            ],
        );
        let replica = serving(command).await;
        clients.push(ContactServiceClient::new(channel(replica.addr).await));
        serving_replicas.push(replica);
    }
    Fleet {
        simulator,
        clients,
        _replicas: serving_replicas,
        _redis: redis,
    }
}

/// Within `margin` (0.2: 20%) of `expected`.
fn near(actual: f64, expected: f64, margin: f64) -> bool {
    (actual / expected - 1.0).abs() <= margin
}

/// 3x the quota from each caller.
const FLOOD: Duration = Duration::from_millis(33);
const RUN: Duration = Duration::from_secs(20);

#[tokio::test]
#[ignore = "slow tier: replicas under 20 s of load"]
async fn weights_3_to_1_hold_with_each_caller_on_its_own_replica() {
    let fleet = fleet(
        "fleet-weights",
        &[("heavy", 3.0, None), ("light", 1.0, None)],
        2,
    )
    .await;
    let (heavy, light) = tokio::join!(
        offer_on(&fleet.clients[0], "heavy", FLOOD, RUN),
        offer_on(&fleet.clients[1], "light", FLOOD, RUN),
    );
    let (heavy, light) = (heavy.ok, light.ok);
    let ratio = f64::from(heavy) / f64::from(light.max(1));
    eprintln!("heavy {heavy} light {light}: ratio {ratio:.2}");
    assert!(
        near(ratio, 3.0, 0.2),
        "heavy {heavy} light {light}: ratio {ratio:.2}"
    );
    // The shares use the whole quota, and AWS throttled (almost) nothing.
    let served = heavy + light;
    assert!(
        f64::from(served) >= 0.9 * RATE * RUN.as_secs_f64(),
        "{served} calls served in {RUN:?} at {RATE}/s"
    );
    assert!(fleet.simulator.throttled() * 50 <= fleet.simulator.requests().len() as u64);
}

#[tokio::test]
#[ignore = "slow tier: replicas under 20 s of load"]
async fn weights_3_to_1_to_1_hold_over_three_replicas() {
    let fleet = fleet(
        "fleet-weights-3",
        &[
            ("heavy", 3.0, None),
            ("light", 1.0, None),
            ("other", 1.0, None),
        ],
        3,
    )
    .await;
    let (heavy, light, other) = tokio::join!(
        offer_on(&fleet.clients[0], "heavy", FLOOD, RUN),
        offer_on(&fleet.clients[1], "light", FLOOD, RUN),
        offer_on(&fleet.clients[2], "other", FLOOD, RUN),
    );
    let (heavy, light, other) = (
        f64::from(heavy.ok),
        f64::from(light.ok),
        f64::from(other.ok),
    );
    eprintln!("heavy {heavy} light {light} other {other}");
    assert!(
        near(heavy / light.max(1.0), 3.0, 0.2) && near(heavy / other.max(1.0), 3.0, 0.2),
        "heavy {heavy} light {light} other {other}"
    );
    assert!(
        heavy + light + other >= 0.9 * RATE * RUN.as_secs_f64(),
        "{} calls served",
        heavy + light + other
    );
}

#[tokio::test]
#[ignore = "slow tier: replicas under 20 s of load"]
async fn a_quiet_caller_is_served_on_the_flooded_replica_and_on_another() {
    let fleet = fleet(
        "fleet-quiet",
        &[
            ("flood", 1.0, None),
            ("quiet-here", 1.0, None),
            ("quiet-there", 1.0, None),
        ],
        2,
    )
    .await;
    // Each quiet caller at a quarter of the quota, the flood at 3x.
    let quarter = Duration::from_secs_f64(4.0 / RATE);
    let (flood, here, there) = tokio::join!(
        offer_on(&fleet.clients[0], "flood", FLOOD, RUN),
        offer_on(&fleet.clients[0], "quiet-here", quarter, RUN),
        offer_on(&fleet.clients[1], "quiet-there", quarter, RUN),
    );
    eprintln!(
        "flood {} ok; quiet here {} of {} (p50 {:?}), there {} of {} (p50 {:?})",
        flood.ok,
        here.ok,
        here.ok + here.refused,
        here.p50(),
        there.ok,
        there.ok + there.refused,
        there.p50()
    );
    for (name, quiet) in [("on the flooded replica", &here), ("on the other", &there)] {
        let offered = quiet.ok + quiet.refused;
        assert!(
            quiet.ok * 100 >= offered * 90,
            "the quiet caller {name}: {} of {offered} served (flood {})",
            quiet.ok,
            flood.ok
        );
        // Within its share, it waits for the account's next slot, not behind the flood.
        assert!(
            quiet.p50() < Duration::from_millis(500),
            "the quiet caller {name}: p50 {:?}",
            quiet.p50()
        );
    }
    // What the quiet callers leave is lent to the flood: the quota is used.
    let served = flood.ok + here.ok + there.ok;
    assert!(
        f64::from(served) >= 0.9 * RATE * RUN.as_secs_f64(),
        "{served} calls served"
    );
}
