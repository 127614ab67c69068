//! No slot of the quota is spent twice on one association, and no caller is told "failed" about an
//! association that happened. A call is keyed by its contact (quota key, instance, initial contact),
//! whatever its token, and what it asks of it (type and source) is its fingerprint:
//!
//! - **replay**: a success is kept for `--replay-window`; the same fingerprint within it is answered
//!   from it (`x-facade-replayed: true`);
//! - **already associated** / **reuse**: another fingerprint for a remembered contact, or the
//!   caller's token with another fingerprint, is refused before AWS, as AWS would refuse it;
//! - **coalescing**: calls for a contact while one is in flight wait for its answer;
//! - **never dropped**: the first call's AWS call runs as a task of its own, to its end.
//!
//! The cache is this replica's memory ([`memory`]), and Redis with the shared store ([`redis`]).
//! The design: the book's "Designs" chapter (docs/building/designs.md).

pub(crate) mod memory;
mod metrics;
pub(crate) mod redis;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use parking_lot::{Mutex, MutexGuard};
use sha2::{Digest, Sha256};
use tokio::{sync::watch, time::Instant};
use tracing::Instrument;

use crate::{
    domain::{AssociationRequest, RehydrationType},
    error::{CallError, ExistingAssociation},
    lifecycle::Tasks,
    upstream::Association,
};

pub(crate) use memory::MemoryReplays;
pub(crate) use metrics::ReplayMetrics;
pub(crate) use redis::RedisReplays;

/// A call's key: its quota key, instance and initial contact, hashed (32 bytes whatever their length).
pub(crate) type ContactKey = [u8; 32];
/// What a call asks of its contact (rehydration type and source), hashed.
pub(crate) type Fingerprint = [u8; 32];
/// A client token, hashed.
pub(crate) type TokenHash = [u8; 32];

/// A successful association, as kept: what was asked, with which token, and AWS's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Replay {
    pub rehydration_type: RehydrationType,
    pub source_contact_id: String,
    pub token: TokenHash,
    pub association: Association,
}

impl Replay {
    fn fingerprint(&self) -> Fingerprint {
        fingerprint(self.rehydration_type, &self.source_contact_id)
    }
}

/// How a call was answered.
#[derive(Debug)]
pub(crate) enum Answered {
    /// By its own AWS call (`Err` is that call's failure).
    Called(Result<Association, CallError>),
    /// From the replay cache.
    Replayed(Association),
    /// By an identical call in flight (its outcome).
    Coalesced(Result<Association, CallError>),
}

/// How the first call for a contact settled, as every call waiting for it sees it.
#[derive(Clone, Debug)]
enum Settled {
    /// It went to AWS (its success as kept).
    Called(Result<Replay, CallError>),
    /// An answer for the contact was kept in Redis meanwhile (by another replica).
    Replayed(Replay),
    /// Another replica's call with its token and other fields is in flight.
    Reused,
}

/// What a call in flight tells the calls waiting for it: `None` until it settles.
type Settling = Option<Settled>;

struct InFlight {
    fingerprint: Fingerprint,
    token: TokenHash,
    answer: watch::Receiver<Settling>,
}

/// One call as the replayer sees it.
struct Asked<'a> {
    request: &'a AssociationRequest,
    fingerprint: Fingerprint,
    token: TokenHash,
    /// The caller's own token (a generated one is never repeated, so never "reused").
    callers_token: bool,
}

impl Asked<'_> {
    fn reuses(&self, fingerprint: &Fingerprint, token: &TokenHash) -> bool {
        self.callers_token && token == &self.token && fingerprint != &self.fingerprint
    }

    /// The answer to this call from a kept association for its contact.
    fn judge(&self, replay: Replay) -> Result<Answered, CallError> {
        let kept = replay.fingerprint();
        if kept == self.fingerprint {
            Ok(Answered::Replayed(replay.association))
        } else if self.reuses(&kept, &replay.token) {
            Err(CallError::ClientTokenReused)
        } else {
            Err(CallError::AlreadyAssociated {
                initial_contact_id: self.request.initial_contact_id().to_owned(),
                existing: ExistingAssociation::Remembered {
                    rehydration_type: replay.rehydration_type.as_aws_str(),
                    source_contact_id: replay.source_contact_id,
                    continued_from_contact_id: replay.association.continued_from_contact_id,
                },
            })
        }
    }

    fn kept(&self, association: Association) -> Replay {
        Replay {
            rehydration_type: self.request.rehydration_type(),
            source_contact_id: self.request.source_contact_id().to_owned(),
            token: self.token,
            association,
        }
    }
}

/// The replay cache and the calls in flight, for one process.
pub struct Replayer {
    memory: MemoryReplays,
    redis: Option<RedisReplays>,
    in_flight: Mutex<HashMap<ContactKey, InFlight>>,
    metrics: ReplayMetrics,
    tasks: Tasks,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Replayer {
    pub fn new(
        memory: MemoryReplays,
        redis: Option<RedisReplays>,
        metrics: ReplayMetrics,
        tasks: Tasks,
    ) -> Self {
        Self {
            memory,
            redis,
            in_flight: Mutex::new(HashMap::new()),
            metrics,
            tasks,
        }
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<ContactKey, InFlight>> {
        self.in_flight.lock()
    }

    /// Answers `request` from the cache, from a call in flight for its contact, or by `call` (run at
    /// most once, in a task of its own). `scope` is the quota key; `deadline` bounds the waits.
    pub(crate) async fn answer<F, Fut>(
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
        let key = contact_key(scope, request);
        let asked = Asked {
            request,
            fingerprint: fingerprint(request.rehydration_type(), request.source_contact_id()),
            token: token_hash(request.client_token().as_str()),
            callers_token: !request.client_token().was_generated(),
        };
        let mut call = Some(call);
        let mut coalesced = false;
        loop {
            if let Some(replay) = self.memory.get(&key) {
                return self.judged(&asked, replay);
            }
            let role = {
                let mut in_flight = self.in_flight();
                match in_flight.get(&key) {
                    Some(other) if asked.reuses(&other.fingerprint, &other.token) => Role::Reused,
                    Some(other) => Role::Wait(other.answer.clone(), other.fingerprint),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        in_flight.insert(
                            key,
                            InFlight {
                                fingerprint: asked.fingerprint,
                                token: asked.token,
                                answer: rx.clone(),
                            },
                        );
                        Role::First(tx, rx)
                    }
                }
            };
            let (first, identical, mut answer) = match role {
                Role::Reused => {
                    self.metrics.client_token_reused();
                    return Err(CallError::ClientTokenReused);
                }
                Role::Wait(answer, theirs) => {
                    if !coalesced {
                        coalesced = true;
                        self.metrics.coalesced();
                    }
                    (false, theirs == asked.fingerprint, answer)
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
                    let template = asked.kept(Association::default());
                    // In the call's span, so its AWS attempts stay in the caller's trace.
                    self.tasks.spawn(
                        lead.run(template, asked.fingerprint, deadline, call())
                            .in_current_span(),
                    );
                    (true, true, rx)
                }
            };
            let settled = answer
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|shared| shared.clone());
            match settled {
                Some(Settled::Replayed(replay)) => return self.judged(&asked, replay),
                Some(Settled::Reused) if first => return Err(CallError::ClientTokenReused),
                Some(Settled::Called(outcome)) if first => {
                    return Ok(Answered::Called(outcome.map(|replay| replay.association)));
                }
                Some(Settled::Called(Ok(replay))) => {
                    return match asked.judge(replay) {
                        Ok(Answered::Replayed(association)) => {
                            Ok(Answered::Coalesced(Ok(association)))
                        }
                        other => other,
                    };
                }
                Some(Settled::Called(Err(error)))
                    if !matches!(
                        error,
                        CallError::DeadlineExceeded { .. } | CallError::ShuttingDown
                    ) && identical =>
                {
                    return Ok(Answered::Coalesced(Err(error)));
                }
                // The first call's own deadline, another call's failure or token: go again,
                // maybe as the first.
                Some(Settled::Called(Err(_)) | Settled::Reused) | None => {}
            }
        }
    }
}

impl Replayer {
    /// The answer from a kept association, counted.
    fn judged(&self, asked: &Asked<'_>, replay: Replay) -> Result<Answered, CallError> {
        let answer = asked.judge(replay);
        match &answer {
            Ok(_) => self.metrics.replayed(),
            Err(CallError::ClientTokenReused) => self.metrics.client_token_reused(),
            Err(_) => {}
        }
        answer
    }

    fn keep(&self, key: ContactKey, replay: Replay) {
        self.memory.insert(key, replay);
        self.metrics.set_entries(self.memory.entries());
    }
}

/// What a call does when no answer is kept.
enum Role {
    /// Its token is in flight with other fields.
    Reused,
    /// Wait for the call in flight for its contact (its fingerprint: only an identical call
    /// shares its failure).
    Wait(watch::Receiver<Settling>, Fingerprint),
    /// Go first: for itself and the calls that come meanwhile.
    First(watch::Sender<Settling>, watch::Receiver<Settling>),
}

/// The first call for a contact, in its own task: on drop (settled, or panicked) it leaves the
/// in-flight map, and the calls waiting for it get its answer, or go again.
struct Lead {
    replayer: Arc<Replayer>,
    key: ContactKey,
    answer: watch::Sender<Settling>,
}

impl Lead {
    /// With Redis, unless another replica's call for the contact is in flight (its answer is then
    /// this one's), runs `call` and keeps its answer if it succeeded. The waiting calls are answered
    /// before Redis is told: the lock keeps other replicas waiting until it is.
    async fn run(
        self,
        template: Replay,
        fingerprint: Fingerprint,
        deadline: Instant,
        call: impl Future<Output = Result<Association, CallError>>,
    ) {
        let replayer = &self.replayer;
        let token = template.token;
        let mut claimed = false;
        if let Some(redis) = &replayer.redis {
            match redis.claim(&self.key, fingerprint, token, deadline).await {
                redis::Claim::Replayed(replay) => {
                    replayer.keep(self.key, replay.clone());
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
        let outcome = call.await.map(|association| Replay {
            association,
            ..template
        });
        if let Ok(replay) = &outcome {
            replayer.keep(self.key, replay.clone());
        }
        let kept = outcome.as_ref().ok().cloned();
        self.settle(Settled::Called(outcome));
        if let Some(redis) = replayer.redis.as_ref().filter(|_| claimed) {
            redis
                .finish(&self.key, kept.as_ref(), fingerprint, token)
                .await;
        }
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

/// The key of a call's contact within `scope` (its quota key).
pub(crate) fn contact_key(scope: &str, request: &AssociationRequest) -> ContactKey {
    hash_fields(&[scope, request.instance_id(), request.initial_contact_id()])
}

/// What a call asks of its contact, as AWS compares a repeat.
pub(crate) fn fingerprint(
    rehydration_type: RehydrationType,
    source_contact_id: &str,
) -> Fingerprint {
    hash_fields(&[rehydration_type.as_aws_str(), source_contact_id])
}

pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

fn hash_fields(fields: &[&str]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for field in fields {
        // Length-prefixed, so no two different field lists hash the same bytes.
        hash.update((field.len() as u64).to_le_bytes());
        hash.update(field.as_bytes());
    }
    hash.finalize().into()
}

/// How long a lock on a call in flight may outlive a replica that died holding it.
pub(crate) fn lock_ttl(deadline: Instant) -> Duration {
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
    fn a_call_is_keyed_by_its_contact_whatever_its_token_or_source() {
        assert_eq!(
            contact_key("eu-west-2", &request("c2", "a")),
            contact_key("eu-west-2", &request("c3", "b"))
        );
        assert_ne!(
            contact_key("eu-west-2", &request("c2", "a")),
            contact_key("us-east-1", &request("c2", "a"))
        );
    }

    #[test]
    fn a_kept_association_replays_the_same_fields_and_refuses_others() {
        let kept = Replay {
            rehydration_type: RehydrationType::FromSegment,
            source_contact_id: "c2".into(),
            token: token_hash("first"),
            association: Association {
                continued_from_contact_id: "c2".into(),
                request_id: None,
            },
        };
        let asked = |request: &AssociationRequest| {
            Asked {
                request,
                fingerprint: fingerprint(request.rehydration_type(), request.source_contact_id()),
                token: token_hash(request.client_token().as_str()),
                callers_token: !request.client_token().was_generated(),
            }
            .judge(kept.clone())
        };
        let retry = request("c2", "another-token");
        assert!(matches!(asked(&retry), Ok(Answered::Replayed(_))));
        let conflict = request("c3", "another-token");
        assert!(matches!(
            asked(&conflict),
            Err(CallError::AlreadyAssociated {
                existing: ExistingAssociation::Remembered { source_contact_id, .. },
                ..
            }) if source_contact_id == "c2"
        ));
        let reused = request("c3", "first");
        assert!(matches!(asked(&reused), Err(CallError::ClientTokenReused)));
    }
}
