//! Every slot of the quota does new work: answers replayed for a repeated `client_token`, and
//! identical calls in flight coalesced into one.
//!
//! A call that brings its own `client_token` (a generated one is never repeated, so those calls skip
//! all of this) is keyed by its token, exactly as sent, within its quota key (the AWS account and
//! region, where ClientToken is idempotent). Its fields, as AWS sees them (instance, both contacts,
//! the rehydration type), make its fingerprint.
//!
//! - **Replay**: a successful answer is kept for `--replay-window` (10 min). The same token and
//!   fingerprint within it is answered from the cache: no AWS call, no quota slot, and the metadata
//!   `x-facade-replayed: true`. Only successes are kept: a retry after an error still reaches AWS.
//! - **Reuse**: the same token with another fingerprint, cached or in flight, is refused before AWS
//!   (INVALID_ARGUMENT, CLIENT_TOKEN_REUSED), as AWS would refuse it, without spending a slot.
//! - **Coalescing**: identical calls while one is in flight wait for its answer (each within its own
//!   deadline) instead of each spending a slot. They share its outcome, errors included, except the
//!   first call's own deadline or cancellation: then one of them goes to AWS itself.
//!
//! The cache is this replica's memory ([`memory`], LRU bounded by `--replay-capacity`). With
//! `--quota-store redis://…` the answers are also written to Redis ([`redis`], keys with the window
//! as TTL) and a short lock key beside each marks a call in flight, so replicas replay and coalesce
//! each other's calls; Redis failing only loses the sharing, never a call.

pub mod memory;
pub mod redis;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use parking_lot::{Mutex, MutexGuard};
use sha2::{Digest, Sha256};
use tokio::{sync::watch, time::Instant};

use crate::{
    domain::AssociationRequest, metrics::Metrics, status::CallError, upstream::Association,
};

pub use memory::MemoryReplays;
pub use redis::RedisReplays;

/// A call's key: its quota key and token, hashed (so a key is 32 bytes whatever the token's length).
pub type TokenKey = [u8; 32];
/// What AWS would compare: the request's fields, hashed.
pub type Fingerprint = [u8; 32];

/// A successful answer, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub fingerprint: Fingerprint,
    pub association: Association,
}

/// How a call was answered.
#[derive(Debug)]
pub enum Answered {
    /// By its own AWS call (`Err` is that call's failure).
    Called(Result<Association, CallError>),
    /// From the replay cache.
    Replayed(Association),
    /// By an identical call in flight (its outcome).
    Coalesced(Result<Association, CallError>),
}

/// How the first of identical calls settled, as every call waiting for it sees it.
#[derive(Clone, Debug)]
enum Settled {
    /// It went to AWS.
    Called(Result<Association, CallError>),
    /// Another replica's answer was kept in Redis meanwhile.
    Replayed(Replay),
    /// Another replica's identical token with other fields is in flight.
    Reused,
}

/// What a call in flight shares with the calls waiting for it: `None` until settled.
type Shared = Option<Settled>;

struct InFlight {
    fingerprint: Fingerprint,
    answer: watch::Receiver<Shared>,
}

/// The replay cache and the calls in flight, for one process.
pub struct Replayer {
    memory: MemoryReplays,
    redis: Option<RedisReplays>,
    in_flight: Mutex<HashMap<TokenKey, InFlight>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Replayer {
    pub fn new(memory: MemoryReplays, redis: Option<RedisReplays>, metrics: Arc<Metrics>) -> Self {
        Self {
            memory,
            redis,
            in_flight: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<TokenKey, InFlight>> {
        self.in_flight.lock()
    }

    /// Answers `request` from the cache, from an identical call in flight, or by `call` (run at most
    /// once). `scope` is the quota key the token is idempotent in; `deadline` bounds the waits.
    ///
    /// `call` runs in a task of its own: if this call's caller goes away (its deadline, a cancel),
    /// the AWS call it paid a slot for still finishes and its answer is kept, so the caller's retry
    /// with the same token is replayed instead of spending another slot.
    pub async fn answer<F, Fut>(
        self: &Arc<Self>,
        scope: &str,
        request: &AssociationRequest,
        deadline: Instant,
        call: F,
    ) -> Result<Answered, CallError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Association, CallError>> + Send + 'static,
    {
        let key = token_key(scope, request.client_token().as_str());
        let fingerprint = fingerprint(request);
        let mut call = Some(call);
        let mut coalesced = false;
        loop {
            if let Some(replay) = self.cached(&key) {
                return self.replayed(replay, fingerprint);
            }
            let role = {
                let mut in_flight = self.in_flight();
                match in_flight.get(&key) {
                    Some(other) if other.fingerprint != fingerprint => Role::Reused,
                    Some(other) => Role::Wait(other.answer.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        in_flight.insert(
                            key,
                            InFlight {
                                fingerprint,
                                answer: rx.clone(),
                            },
                        );
                        Role::First(tx, rx)
                    }
                }
            };
            let (first, mut answer) = match role {
                Role::Reused => {
                    self.metrics.client_token_reused();
                    return Err(CallError::ClientTokenReused);
                }
                Role::Wait(answer) => {
                    if !coalesced {
                        coalesced = true;
                        self.metrics.coalesced();
                    }
                    (false, answer)
                }
                Role::First(tx, rx) => {
                    let lead = Lead {
                        replayer: self.clone(),
                        key,
                        answer: tx,
                    };
                    // A first call returns whatever its own call settles with, so it never comes
                    // round again: its call is always there to take.
                    let Some(call) = call.take() else {
                        return Err(CallError::ShuttingDown);
                    };
                    tokio::spawn(lead.run(fingerprint, deadline, call()));
                    (true, rx)
                }
            };
            let settled = answer
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|shared| shared.clone());
            match settled {
                Some(Settled::Replayed(replay)) => return self.replayed(replay, fingerprint),
                Some(Settled::Reused) => return Err(CallError::ClientTokenReused),
                Some(Settled::Called(outcome)) if first => return Ok(Answered::Called(outcome)),
                Some(Settled::Called(Ok(association))) => {
                    return Ok(Answered::Coalesced(Ok(association)));
                }
                // The first call's own deadline, not this one's: go again, maybe as the first.
                Some(Settled::Called(Err(
                    CallError::DeadlineExceeded { .. } | CallError::ShuttingDown,
                )))
                | None => {}
                Some(Settled::Called(Err(error))) => {
                    return Ok(Answered::Coalesced(Err(error)));
                }
            }
        }
    }
}
impl Replayer {
    /// This replica's kept answer. Redis is asked by the first call's claim, which answers a kept
    /// answer or the lock in one round trip: a separate lookup first would make it three.
    fn cached(&self, key: &TokenKey) -> Option<Replay> {
        self.memory.get(key)
    }

    fn replayed(&self, replay: Replay, fingerprint: Fingerprint) -> Result<Answered, CallError> {
        if replay.fingerprint == fingerprint {
            self.metrics.replayed();
            Ok(Answered::Replayed(replay.association))
        } else {
            self.metrics.client_token_reused();
            Err(CallError::ClientTokenReused)
        }
    }

    fn keep(&self, key: TokenKey, replay: Replay) {
        self.memory.insert(key, replay);
        self.metrics.set_replay_entries(self.memory.entries());
    }
}

/// What a call does when no answer is kept.
enum Role {
    /// Its token is in flight with other fields.
    Reused,
    /// Wait for the identical call in flight.
    Wait(watch::Receiver<Shared>),
    /// Go first: for itself and the calls that come meanwhile.
    First(watch::Sender<Shared>, watch::Receiver<Shared>),
}

/// The first of identical calls, in its own task: on drop (settled, or panicked) it leaves the
/// in-flight map, and the calls waiting for it get its answer, or go again.
struct Lead {
    replayer: Arc<Replayer>,
    key: TokenKey,
    answer: watch::Sender<Shared>,
}

impl Lead {
    /// With Redis, unless another replica's identical call is already in flight (its answer is then
    /// this one's), runs `call` and keeps its answer if it succeeded.
    async fn run(
        self,
        fingerprint: Fingerprint,
        deadline: Instant,
        call: impl Future<Output = Result<Association, CallError>>,
    ) {
        let replayer = &self.replayer;
        let mut claimed = false;
        if let Some(redis) = &replayer.redis {
            match redis.claim(&self.key, fingerprint, deadline).await {
                redis::Claim::Replayed(replay) => {
                    if replay.fingerprint == fingerprint {
                        replayer.keep(self.key, replay.clone());
                    }
                    self.settle(Settled::Replayed(replay));
                    return;
                }
                redis::Claim::Reused => {
                    self.settle(Settled::Reused);
                    return;
                }
                redis::Claim::Lead => claimed = true,
                // Redis is failing or too slow: this replica goes on alone.
                redis::Claim::Unavailable => {}
            }
        }
        let outcome = call.await;
        let replay = outcome.as_ref().ok().map(|association| Replay {
            fingerprint,
            association: association.clone(),
        });
        if let Some(redis) = replayer.redis.as_ref().filter(|_| claimed) {
            redis.finish(&self.key, replay.as_ref(), fingerprint).await;
        }
        if let Some(replay) = replay {
            replayer.keep(self.key, replay);
        }
        self.settle(Settled::Called(outcome));
    }
}

impl Lead {
    /// Leaves the in-flight map before settling, so a call that goes again finds no stale entry;
    /// only this lead's own entry, as a new first call may have taken the key since.
    fn settle(&self, settled: Settled) {
        self.leave();
        self.answer.send_replace(Some(settled));
    }

    fn leave(&self) {
        let mut in_flight = self.replayer.in_flight();
        let ours = in_flight
            .get(&self.key)
            .is_some_and(|entry| entry.answer.same_channel(&self.answer.subscribe()));
        if ours {
            in_flight.remove(&self.key);
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The key of `token` within `scope`.
pub fn token_key(scope: &str, token: &str) -> TokenKey {
    let mut hash = Sha256::new();
    hash.update(scope.as_bytes());
    hash.update([0]);
    hash.update(token.as_bytes());
    hash.finalize().into()
}

/// The request's fields as AWS compares them for an idempotent retry: every field but the token.
pub fn fingerprint(request: &AssociationRequest) -> Fingerprint {
    let mut hash = Sha256::new();
    for field in [
        request.instance_id(),
        request.initial_contact_id(),
        request.rehydration_type().as_aws_str(),
        request.source_contact_id(),
    ] {
        // Length-prefixed, so no two different field lists hash the same bytes.
        hash.update((field.len() as u64).to_le_bytes());
        hash.update(field.as_bytes());
    }
    hash.finalize().into()
}

/// How long a lock on a call in flight may outlive a replica that died holding it.
pub fn lock_ttl(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RehydrationType, UnvalidatedRequest};

    fn request(source: &str, token: &str) -> AssociationRequest {
        AssociationRequest::parse(UnvalidatedRequest {
            instance_id: "instance".into(),
            initial_contact_id: "c1".into(),
            rehydration_type: Some(RehydrationType::FromSegment),
            source_contact_id: source.into(),
            client_token: token.into(),
        })
        .unwrap()
    }

    #[test]
    fn the_fingerprint_ignores_the_token_and_sees_every_field() {
        assert_eq!(
            fingerprint(&request("c2", "a")),
            fingerprint(&request("c2", "b"))
        );
        assert_ne!(
            fingerprint(&request("c2", "a")),
            fingerprint(&request("c3", "a"))
        );
    }

    #[test]
    fn a_token_is_idempotent_within_its_scope_only() {
        assert_eq!(token_key("eu-west-2", "t"), token_key("eu-west-2", "t"));
        assert_ne!(token_key("eu-west-2", "t"), token_key("us-east-1", "t"));
        assert_ne!(token_key("eu-west-2", "t"), token_key("eu-west-2", "T"));
    }
}
