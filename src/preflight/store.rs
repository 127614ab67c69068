//! The quota store's checks: Redis answers, which topology it is, and the facade's scripts load and
//! run there (ACLs and some managed Redis forbid `EVAL`, which the facade would only learn from a
//! quiet fallback to the local quota on the first call).

use std::{future::ready, time::Instant};

use redis::aio::ConnectionLike;

use super::{Checks, Verdict, bounded};
use crate::{
    config::{QuotaStoreChoice, ServeConfig},
    lifecycle::Lifecycle,
    metrics::MetricsRegistry,
    quota::redis::RedisQuota,
    replay::{RedisReplays, ReplayMetrics},
    store::{SharedStore, StoreAddress, StoreConnection, StoreMetrics},
};

pub(super) async fn check(checks: &mut Checks, config: &ServeConfig) {
    let QuotaStoreChoice::Redis(address) = &config.quota.quota_store else {
        let local =
            Verdict::Pass("local: the quota lives in this process (no Redis to reach)".to_owned());
        checks.run("quota store", "quota-store", ready(local)).await;
        return;
    };
    let timeout = checks.step_timeout;
    let connection = StoreConnection::new(address.clone(), config.quota.quota_store_timeout);
    let reachable = checks
        .run(
            "quota store: reachable",
            "quota-store",
            reach(timeout, connection.clone(), address),
        )
        .await;
    if !reachable {
        return;
    }
    checks
        .run(
            "quota store: durability",
            "quota-store-durability",
            durability(timeout, connection.clone()),
        )
        .await;
    let prefix = &config.quota.quota_key_prefix;
    let lifecycle = Lifecycle::default();
    let store = SharedStore::new(
        address.clone(),
        prefix,
        config.quota.quota_store_timeout,
        StoreMetrics::register(&mut MetricsRegistry::new()),
        lifecycle.tasks(),
    );
    let quota = RedisQuota::with_connection(connection, prefix, config.quota_limits());
    let replays = RedisReplays::new(
        store,
        config.quota.replay_window,
        ReplayMetrics::register(&mut MetricsRegistry::new()),
    );
    let key = format!("check-{}", uuid::Uuid::new_v4());
    checks
        .run("quota store: scripts", "quota-store-scripts", async {
            let ran = async {
                quota.dry_run(&key).await.map_err(|e| e.to_string())?;
                replays.dry_run().await.map_err(|e| e.to_string())
            };
            match bounded(timeout, "Redis", ran).await {
                Ok(Ok(())) => Verdict::Pass(format!(
                    "the quota's 3 scripts and the replay cache's 2 loaded and ran, on keys of \
                     their own that expire ({prefix}:{{{key}}}:…)"
                )),
                Ok(Err(error)) => Verdict::fail(
                    format!("a script could not run: {error}"),
                    "the Redis user needs EVALSHA, EVAL and SCRIPT LOAD on the prefix's keys \
                     (ACL SETUSER <user> +evalsha +eval +script|load ~<prefix>:*); a managed \
                     Redis that forbids scripts cannot hold the shared quota",
                ),
                Err(failed) => failed,
            }
        })
        .await;
    lifecycle.stop(std::time::Duration::from_millis(100)).await;
}

/// What the store keeps through a restart, a failover and memory pressure.
async fn durability(timeout: std::time::Duration, mut connection: StoreConnection) -> Verdict {
    let read = async {
        let mut info = String::new();
        for section in ["persistence", "replication", "memory"] {
            let answer: redis::Value = redis::cmd("INFO")
                .arg(section)
                .query_async(&mut connection)
                .await?;
            collect_text(&answer, &mut info);
        }
        // CONFIG is often renamed or forbidden on managed Redis: RDB is then unknown.
        let save = match redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async::<redis::Value>(&mut connection)
            .await
        {
            Ok(answer) => {
                let mut text = String::new();
                collect_text(&answer, &mut text);
                Some(text.replace("save", ""))
            }
            Err(_) => None,
        };
        redis::RedisResult::Ok((info, save))
    };
    match bounded(timeout, "Redis", read).await {
        Ok(Ok((info, save))) => {
            super::durability::Durability::read(&info, save.as_deref()).verdict()
        }
        Ok(Err(error)) => Verdict::warn(
            format!("INFO could not be read: {error}"),
            "allow INFO to the facade's Redis user (ACL SETUSER <user> +info) so this can be checked",
        ),
        Err(failed) => failed,
    }
}

/// The text of an answer, whatever its shape (a cluster answers INFO per node).
fn collect_text(value: &redis::Value, into: &mut String) {
    match value {
        redis::Value::BulkString(bytes) => into.push_str(&String::from_utf8_lossy(bytes)),
        redis::Value::SimpleString(text) | redis::Value::VerbatimString { text, .. } => {
            into.push_str(text)
        }
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                collect_text(item, into);
                into.push('\n');
            }
        }
        redis::Value::Map(pairs) => {
            for (key, item) in pairs {
                collect_text(key, into);
                into.push(' ');
                collect_text(item, into);
                into.push('\n');
            }
        }
        _ => {}
    }
}

/// A `PING` answered, timed on the second (the first also connects).
async fn reach(
    timeout: std::time::Duration,
    mut connection: StoreConnection,
    address: &StoreAddress,
) -> Verdict {
    let mut ping = async || -> redis::RedisResult<std::time::Duration> {
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        let started = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(started.elapsed())
    };
    match bounded(timeout, "Redis", ping()).await {
        Ok(Ok(round_trip)) => Verdict::Pass(format!(
            "{} Redis at {address}, round trip {:.1} ms (database {})",
            connection.kind().map_or("an unknown", |kind| kind.as_str()),
            round_trip.as_secs_f64() * 1000.0,
            connection.get_db()
        )),
        Ok(Err(error)) => Verdict::fail(
            format!("{address} did not answer: {error}"),
            "check that Redis is up at the --quota-store address and reachable from here \
             (network policy, rediss:// for TLS, the user and password in the URL)",
        ),
        Err(failed) => failed,
    }
}
