//! The quota's buckets in Redis, shared by every replica: each attempt runs one Lua script
//! (`gcra.lua`, one round trip) that reserves its slot in the account and region's bucket, by Redis's
//! clock, never a replica's. The adapted rate lives beside the bucket (`adaptive.lua`).
//!
//! Keys are `PREFIX:{KEY}:account`, `PREFIX:{KEY}:rate`, `PREFIX:{KEY}:instance:ID` and, for the
//! callers' fleet-wide shares ([`super::fair`]), `PREFIX:{KEY}:callers`, `PREFIX:{KEY}:weights` and
//! `PREFIX:{KEY}:caller:NAME`: the hash tag
//! `{KEY}` puts a quota key's keys in one slot, so a script touches one slot and runs unchanged on
//! Redis Cluster, ElastiCache and Valkey. Every key expires once it no longer constrains anything.
//!
//! The connection ([`crate::store::StoreConnection`]) is standalone, cluster or sentinel alike; the
//! `redis` crate's `Script` sends EVALSHA and loads the script on NOSCRIPT (after a restart or a
//! failover). Errors are returned, never hidden: what to do when Redis fails is [`super::shared`]'s
//! decision.

use std::time::Duration;

use redis::{RedisError, Script};

use super::{
    Bucket, CallerWeight, Full, QuotaLimits, Slot, SlotRequest,
    adaptive::{CEILING_MARGIN, CEILING_RESET, DECREASE_INTERVAL, INCREASE_INTERVAL},
    fair::ACTIVE_CALLER_WINDOW,
};
use crate::store::{StoreAddress, StoreConnection};

/// How long the adapted rate outlives its last change: long after a ceiling reset, so a replica
/// restarted meanwhile finds it, yet an idle account is back at its configured rate by the next day.
const ADAPTIVE_STATE_TTL: Duration = Duration::from_secs(600);

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisQuotaError {
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("unexpected answer from the quota script: {0}")]
    Reply(String),
    #[error("{0}")]
    Address(#[from] crate::store::address::AddressError),
}

/// The buckets of every replica, in Redis.
#[derive(Clone)]
pub struct RedisQuota {
    connection: StoreConnection,
    prefix: String,
    limits: QuotaLimits,
    gcra: Script,
    adaptive: Script,
    fleet: Script,
}

impl std::fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuota")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisQuota {
    /// A store of its own for `url` (any `--quota-store` Redis URL); it connects on first use.
    pub fn new(
        url: &str,
        prefix: &str,
        limits: QuotaLimits,
        timeout: Duration,
    ) -> Result<Self, RedisQuotaError> {
        let address: StoreAddress = url.parse()?;
        Ok(Self::with_connection(
            StoreConnection::new(address, timeout),
            prefix,
            limits,
        ))
    }

    /// A store on the process's one connection (whatever the number of accounts).
    pub fn with_connection(connection: StoreConnection, prefix: &str, limits: QuotaLimits) -> Self {
        Self {
            connection,
            prefix: prefix.to_owned(),
            limits,
            gcra: Script::new(include_str!("gcra.lua")),
            adaptive: Script::new(include_str!("adaptive.lua")),
            fleet: Script::new(include_str!("fleet.lua")),
        }
    }

    fn key(&self, key: &str, what: &str) -> String {
        format!("{}:{{{key}}}:{what}", self.prefix)
    }

    /// Reserves a slot by Redis's clock.
    pub async fn reserve(
        &self,
        request: SlotRequest<'_>,
    ) -> Result<Result<Slot, Full>, RedisQuotaError> {
        self.reserve_at(request, None, None).await
    }

    /// Reserves a slot, deciding at `now` (since the Unix epoch) instead of Redis's clock when given
    /// (how tests compare the script's decisions with governor's for the same arrivals).
    /// `resuming` is for a replica back from its fallback: how long until the last slot its fallback
    /// granted is sent. The account's next slot comes after it, with the burst spent (one slot,
    /// then the rate): the fleet's fallbacks were just sending the whole quota.
    pub async fn reserve_at(
        &self,
        request: SlotRequest<'_>,
        now: Option<Duration>,
        resuming: Option<Duration>,
    ) -> Result<Result<Slot, Full>, RedisQuotaError> {
        let mut invocation = self.gcra.prepare_invoke();
        let caller = request.caller.map_or("", |c| c.name);
        invocation
            .key(self.key(request.key, "account"))
            .key(self.key(request.key, "rate"))
            .key(self.key(request.key, "callers"))
            .key(self.key(request.key, "weights"))
            .key(self.key(request.key, &format!("caller:{caller}")))
            .arg(self.limits.rate_per_second)
            .arg(self.limits.burst)
            .arg(micros(request.max_wait));
        match self.limits.per_instance {
            Some((rate, burst)) => invocation
                .key(self.key(request.key, &format!("instance:{}", request.instance_id)))
                .arg(rate)
                .arg(burst),
            None => invocation.arg(0).arg(0),
        };
        invocation
            .arg(now.map_or_else(String::new, |now| micros(now).to_string()))
            .arg(resuming.map_or_else(String::new, |after| micros(after).to_string()))
            .arg(caller)
            .arg(request.caller.map_or(1.0, |c| c.weight))
            .arg(ACTIVE_CALLER_WINDOW.as_millis() as u64);
        let (granted, wait, bucket, rate, share): (u8, u64, u8, String, String) = invocation
            .invoke_async(&mut self.connection.clone())
            .await?;
        let rate = parse_rate(&rate)?;
        let share = match share.parse::<f64>() {
            Ok(share) if share > 0.0 && share <= 1.0 => share,
            _ => return Err(RedisQuotaError::Reply(format!("share `{share}`"))),
        };
        let wait = Duration::from_micros(wait);
        Ok(if granted == 1 {
            Ok(Slot {
                wait,
                queued: !wait.is_zero(),
                rate,
            })
        } else {
            Err(Full {
                bucket: match bucket {
                    1 => Bucket::Instance,
                    2 => Bucket::Share,
                    _ => Bucket::Account,
                },
                retry_after: wait,
                rate,
                share,
                fallback: false,
            })
        })
    }

    /// AWS throttled: lowers the one shared rate (at most once per interval); returns it.
    pub async fn throttled(&self, key: &str) -> Result<f64, RedisQuotaError> {
        self.adapt(key, "throttled").await
    }

    /// AWS accepted: the shared rate may climb; returns it.
    pub async fn accepted(&self, key: &str) -> Result<f64, RedisQuotaError> {
        self.adapt(key, "accepted").await
    }

    async fn adapt(&self, key: &str, event: &str) -> Result<f64, RedisQuotaError> {
        let limits = &self.limits;
        let rate: String = self
            .adaptive
            .key(self.key(key, "rate"))
            .key(self.key(key, "account"))
            .arg(event)
            .arg(limits.rate_per_second)
            .arg(limits.burst)
            .arg(limits.adaptive.decrease_factor)
            .arg(limits.adaptive.floor(limits.rate_per_second))
            .arg(CEILING_MARGIN)
            .arg(limits.adaptive.increase_per_second)
            .arg(micros(DECREASE_INTERVAL))
            .arg(micros(INCREASE_INTERVAL))
            .arg(micros(CEILING_RESET))
            .arg(ADAPTIVE_STATE_TTL.as_millis() as u64)
            .invoke_async(&mut self.connection.clone())
            .await?;
        parse_rate(&rate)
    }

    /// `connect-facade check`'s dry run: loads each script (`SCRIPT LOAD`), then runs each once on
    /// `key`'s own keys, which expire by themselves (the bucket's within a second, the adapted
    /// rate's after [`ADAPTIVE_STATE_TTL`]): no other key is touched.
    pub(crate) async fn dry_run(&self, key: &str) -> Result<(), RedisQuotaError> {
        let mut connection = self.connection.clone();
        for script in [&self.gcra, &self.adaptive, &self.fleet] {
            script.prepare_invoke().load_async(&mut connection).await?;
        }
        // Granted or not, the script ran.
        let _granted = self
            .reserve(SlotRequest {
                key,
                instance_id: "check",
                max_wait: Duration::ZERO,
                deadline: tokio::time::Instant::now() + Duration::from_secs(1),
                caller: Some(CallerWeight {
                    name: "connect-facade-check",
                    weight: 1.0,
                }),
            })
            .await?;
        self.accepted(key).await?;
        self.register(key, "connect-facade-check", Duration::from_secs(1))
            .await?;
        Ok(())
    }

    /// Registers `replica` among the replicas live for `key` (for `ttl`), and counts them.
    pub async fn register(
        &self,
        key: &str,
        replica: &str,
        ttl: Duration,
    ) -> Result<u32, RedisQuotaError> {
        let live: u32 = self
            .fleet
            .key(replicas_key(&self.prefix, key))
            .arg(replica)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(live)
    }
}

/// The sorted set of the replicas registered for `key`, scored by their last registration (ms
/// since the epoch, by Redis's clock).
pub(crate) fn replicas_key(prefix: &str, key: &str) -> String {
    format!("{prefix}:{{{key}}}:replicas")
}

/// The replicas registered for `key` and when each last registered (ms since the epoch), in one
/// round trip.
pub(crate) async fn replicas(
    connection: &mut StoreConnection,
    prefix: &str,
    key: &str,
) -> Result<Vec<(String, f64)>, RedisError> {
    redis::cmd("ZRANGE")
        .arg(replicas_key(prefix, key))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(connection)
        .await
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn parse_rate(text: &str) -> Result<f64, RedisQuotaError> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(RedisQuotaError::Reply(format!("rate `{text}`"))),
    }
}
