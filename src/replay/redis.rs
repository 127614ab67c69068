//! The replay cache and the locks on calls in flight in Redis, shared by every replica (with
//! `--quota-store redis://…`, on the process's one [`SharedStore`], whatever its topology).
//!
//! Keys: `PREFIX:{KEY}:replay` (the answer, expiring after the replay window) and `PREFIX:{KEY}:lock`
//! (a call in flight, expiring with its caller's deadline, so a replica that dies holding it blocks
//! nobody for long; its value the call's fingerprint and token hash), where KEY is the hex of the
//! call's contact key. One script before a call
//! (`claim.lua`: the answer, or the lock) and one after (`finish.lua`).
//!
//! A replica whose identical call is in flight elsewhere asks again every [`POLL_INTERVAL`] until the
//! answer is kept, the lock is gone (that call failed: this one goes itself) or its deadline passes.
//! Any Redis error or a round trip past the store's timeout answers [`Claim::Unavailable`], and so
//! does a store that is down (without a round trip: the store's probe decides when it is back): the
//! call then goes on as if alone (the in-memory cache and the in-replica coalescing still apply).

use std::{sync::Arc, time::Duration};

use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ReplayMetrics;
use super::{ContactKey, Fingerprint, Replay, TokenHash, lock_ttl};
use crate::{domain::RehydrationType, store::SharedStore, upstream::Association};

/// How often a replica asks whether another replica's identical call has its answer.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// What Redis says before a call.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The answer is kept (its fingerprint may differ: the caller compares).
    Replayed(Replay),
    /// This call's token with other fields is in flight.
    Reused,
    /// This call holds the lock: it goes to AWS and [`RedisReplays::finish`]es.
    Lead,
    /// Redis did not answer in time: go on alone.
    Unavailable,
}

/// An answer as stored in Redis.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The rehydration type, as AWS writes it.
    y: String,
    /// The source contact id.
    s: String,
    /// The token's hash, hex.
    t: String,
    /// ContinuedFromContactId.
    c: String,
    /// AWS's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
}

/// Answers and locks in Redis.
#[derive(Clone)]
pub struct RedisReplays {
    store: SharedStore,
    window: Duration,
    claim: Arc<Script>,
    finish: Arc<Script>,
    metrics: ReplayMetrics,
}

impl RedisReplays {
    pub fn new(store: SharedStore, window: Duration, metrics: ReplayMetrics) -> Self {
        Self {
            store,
            window,
            claim: Arc::new(Script::new(include_str!("claim.lua"))),
            finish: Arc::new(Script::new(include_str!("finish.lua"))),
            metrics,
        }
    }

    /// `connect-facade check`'s dry run: loads both scripts (`SCRIPT LOAD`), then claims and
    /// releases a lock of its own, whose key expires within a second even if the release is lost.
    /// Unlike a call's, its errors are returned, not taken as the store being down.
    pub(crate) async fn dry_run(&self) -> redis::RedisResult<()> {
        let mut connection = self.store.connection();
        for script in [&self.claim, &self.finish] {
            script.prepare_invoke().load_async(&mut connection).await?;
        }
        let key = format!("{}:{{check-{}}}", self.store.prefix(), uuid::Uuid::new_v4());
        let (answer, lock) = (format!("{key}:replay"), format!("{key}:lock"));
        let fingerprint = "connect-facade-check";
        let _: (String, String) = self
            .claim
            .key(&answer)
            .key(&lock)
            .arg(fingerprint)
            .arg(1000)
            .invoke_async(&mut connection)
            .await?;
        let _: i64 = self
            .finish
            .key(&answer)
            .key(&lock)
            .arg("")
            .arg(1000)
            .arg(fingerprint)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    fn keys(&self, key: &ContactKey) -> (String, String) {
        let key = hex::encode(key);
        (
            format!("{}:{{{key}}}:replay", self.store.prefix()),
            format!("{}:{{{key}}}:lock", self.store.prefix()),
        )
    }

    /// Runs one Redis operation within the store's timeout and the call's deadline.
    async fn ask<T>(
        &self,
        deadline: Instant,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let bound = deadline.saturating_duration_since(Instant::now());
        self.store.ask(bound, operation).await
    }

    /// Before a call: its kept answer, or the lock for it, waiting meanwhile for another replica's
    /// identical call in flight.
    pub(crate) async fn claim(
        &self,
        key: &ContactKey,
        fingerprint: Fingerprint,
        token: TokenHash,
        deadline: Instant,
    ) -> Claim {
        let (answer, lock) = self.keys(key);
        let ours = lock_value(fingerprint, token);
        let mut waited = false;
        loop {
            let mut invocation = self.claim.prepare_invoke();
            invocation
                .key(&answer)
                .key(&lock)
                .arg(&ours)
                .arg(lock_ttl(deadline).as_millis() as u64);
            let mut connection = self.store.connection();
            let reply: Option<(String, String)> = self
                .ask(deadline, async move {
                    invocation.invoke_async(&mut connection).await
                })
                .await;
            match reply
                .as_ref()
                .map(|(what, value)| (what.as_str(), value.as_str()))
            {
                Some(("hit", stored)) => {
                    return decode(stored).map_or(Claim::Unavailable, Claim::Replayed);
                }
                Some(("lead", _)) => return Claim::Lead,
                Some(("wait", theirs)) if reuses(&ours, theirs) => return Claim::Reused,
                Some(("wait", _)) => {
                    if !waited {
                        waited = true;
                        self.metrics.coalesced();
                    }
                    if Instant::now() + POLL_INTERVAL >= deadline {
                        return Claim::Unavailable;
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                _ => return Claim::Unavailable,
            }
        }
    }

    /// After a call that held the lock: keeps its answer (`None` after a failure) and releases the
    /// lock. Bounded by the store's timeout alone: the caller's answer is ready.
    pub(crate) async fn finish(
        &self,
        key: &ContactKey,
        replay: Option<&Replay>,
        fingerprint: Fingerprint,
        token: TokenHash,
    ) {
        let (answer, lock) = self.keys(key);
        let stored = replay.map_or_else(String::new, encode);
        let mut invocation = self.finish.prepare_invoke();
        invocation
            .key(answer)
            .key(lock)
            .arg(stored)
            .arg(self.window.as_millis() as u64)
            .arg(lock_value(fingerprint, token));
        let mut connection = self.store.connection();
        let _: Option<i64> = self
            .ask(Instant::now() + self.store.timeout(), async move {
                invocation.invoke_async(&mut connection).await
            })
            .await;
    }
}

/// A lock's value: the fingerprint and token of the call holding it.
fn lock_value(fingerprint: Fingerprint, token: TokenHash) -> String {
    format!("{}:{}", hex::encode(fingerprint), hex::encode(token))
}

/// Whether the call in flight (`theirs`) has this call's token with other fields. (A generated
/// token is never another call's, so only a caller's own token can match.)
fn reuses(ours: &str, theirs: &str) -> bool {
    let (Some((our_fingerprint, our_token)), Some((their_fingerprint, their_token))) =
        (ours.split_once(':'), theirs.split_once(':'))
    else {
        return false;
    };
    our_token == their_token && our_fingerprint != their_fingerprint
}

fn encode(replay: &Replay) -> String {
    serde_json::to_string(&Stored {
        y: replay.rehydration_type.as_aws_str().to_owned(),
        s: replay.source_contact_id.clone(),
        t: hex::encode(replay.token),
        c: replay.association.continued_from_contact_id.clone(),
        r: replay.association.request_id.clone(),
    })
    .unwrap_or_default()
}

fn decode(text: &str) -> Option<Replay> {
    let stored: Stored = serde_json::from_str(text).ok()?;
    let mut token = [0u8; 32];
    hex::decode_to_slice(&stored.t, &mut token).ok()?;
    let rehydration_type = match stored.y.as_str() {
        "ENTIRE_PAST_SESSION" => RehydrationType::EntirePastSession,
        "FROM_SEGMENT" => RehydrationType::FromSegment,
        _ => return None,
    };
    Some(Replay {
        rehydration_type,
        source_contact_id: stored.s,
        token,
        association: Association {
            continued_from_contact_id: stored.c,
            request_id: stored.r,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_survives_its_encoding() {
        let replay = Replay {
            rehydration_type: RehydrationType::EntirePastSession,
            source_contact_id: "c1".into(),
            token: [7; 32],
            association: Association {
                continued_from_contact_id: "c3\nwith \"quotes\"".into(),
                request_id: Some("req-1".into()),
            },
        };
        assert_eq!(decode(&encode(&replay)), Some(replay));
        assert_eq!(decode("not json"), None);
    }

    #[test]
    fn only_this_calls_token_with_other_fields_is_reuse() {
        let ours = lock_value([1; 32], [9; 32]);
        assert!(reuses(&ours, &lock_value([2; 32], [9; 32])));
        assert!(
            !reuses(&ours, &lock_value([1; 32], [9; 32])),
            "identical: wait"
        );
        assert!(
            !reuses(&ours, &lock_value([2; 32], [8; 32])),
            "another call: wait"
        );
    }
}
