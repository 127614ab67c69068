-- Reserves one slot of the account's bucket (and of the instance's, with a sub-limit) for a send
-- within max_wait, or says when one will be free. GCRA, as governor implements it: a bucket is its
-- theoretical arrival time (TAT, in microseconds); a send at time s conforms when
-- s >= TAT - (burst - 1) * T, and moves TAT to max(TAT, s) + T, where T = 1 / rate.
-- One script, one round trip, atomic: every replica's attempts go through it in order.
--
-- With a caller (ARGV[8]), the account's rate is also shared among the callers that asked within
-- the last ARGV[10] ms, by weight, fleet-wide (see fair.rs for the design and its reasoning):
-- each caller's share is a GCRA of its own (rate * weight / the active callers' weights, one
-- interval of tolerance). A caller within its share reserves the account's next slot, now or
-- later; a caller over its share only borrows a slot free now (work-conserving: what the others
-- leave unused is lent), else it is told when to ask again, and nothing is reserved. Over-share callers never hold future slots, so a caller within its share always finds
-- the account's next slot, at most one replica's reservation away.
--
-- KEYS[1] the account bucket's TAT   KEYS[2] the adaptive rate (hash)
-- KEYS[3] the active callers (sorted set, scored by their last request, ms)
-- KEYS[4] the callers' weights (hash)   KEYS[5] this caller's share TAT
-- KEYS[6] the instance's TAT (optional)
-- ARGV[1] configured rate/s   ARGV[2] burst   ARGV[3] max wait (µs)
-- ARGV[4] instance rate/s     ARGV[5] instance burst (both ignored without KEYS[6])
-- ARGV[6] the time (µs since the epoch) to decide at, or "" for Redis's own clock: replicas' clocks
--         are never used; tests pass one to compare decisions with governor's.
-- ARGV[7] when a replica comes back from its fallback, how long (µs) until the last slot its
--         fallback granted is sent, else "": the fleet was just sending the account's rate through
--         the fallbacks, so AWS's bucket is as good as empty and their granted slots are still to
--         come. The account's next slot comes after them, with its burst spent (one slot, then the
--         rate), whatever this bucket saw while Redis was away, or lost in a restart or a failover.
-- ARGV[8] the caller's name, or "" for no sharing among callers (KEYS[3..5] are then unused)
-- ARGV[9] its weight   ARGV[10] how long (ms) a caller counts as active after its last request
-- Returns {granted (1/0), wait or retry-after (µs), bucket (0 account, 1 instance, 2 the caller's
-- share), rate/s as a string, the caller's share of the rate (0..1) as a string}.
local now
if ARGV[6] ~= '' then
  now = tonumber(ARGV[6])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local rate = tonumber(redis.call('HGET', KEYS[2], 'rate')) or tonumber(ARGV[1])
local max_wait = tonumber(ARGV[3])

local function earliest(key, t, burst)
  local tat = math.max(tonumber(redis.call('GET', key)) or now, now)
  return tat, tat - (burst - 1) * t
end

local t = 1000000 / rate
local tat, at = earliest(KEYS[1], t, tonumber(ARGV[2]))
if ARGV[7] ~= '' then
  tat = math.max(tat, now + tonumber(ARGV[7]) + (tonumber(ARGV[2]) - 1) * t)
  at = tat - (tonumber(ARGV[2]) - 1) * t
  -- Kept even if this attempt is refused: the replica resumes once.
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local bucket = 0
local it, itat
if KEYS[6] then
  it = 1000000 / tonumber(ARGV[4])
  local iat
  itat, iat = earliest(KEYS[6], it, tonumber(ARGV[5]))
  if iat > at then
    at = iat
    bucket = 1
  end
end

-- The caller's share: registered as active with its weight, then compared with the others'.
local caller = ARGV[8]
local share = 1
local ct, ctat, entitled
if caller ~= '' then
  local window = tonumber(ARGV[10])
  local now_ms = math.floor(now / 1000)
  redis.call('ZADD', KEYS[3], now_ms, caller)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms - window)
  redis.call('HSET', KEYS[4], caller, ARGV[9])
  redis.call('PEXPIRE', KEYS[3], window)
  redis.call('PEXPIRE', KEYS[4], window)
  local active = redis.call('ZRANGE', KEYS[3], 0, -1)
  local weights = redis.call('HMGET', KEYS[4], unpack(active))
  local total = 0
  for _, weight in ipairs(weights) do
    total = total + (tonumber(weight) or 0)
  end
  local weight = tonumber(ARGV[9])
  share = weight / math.max(total, weight)
  ct = t / share
  -- One interval of tolerance, so a slot that came late (behind another replica's reservation)
  -- does not push every later one back.
  ctat = math.max(tonumber(redis.call('GET', KEYS[5])) or now, now)
  entitled = ctat - ct
end

local wait = math.max(at - now, 0)
local over_share = entitled ~= nil and entitled > now
if over_share and wait > 0 then
  -- Nothing free now to lend: come back when the account's next slot frees (if no caller within
  -- its share has reserved it by then, it is lent) or when the share allows a slot, if sooner.
  return {0, math.ceil(math.min(entitled - now, wait)), 2, tostring(rate), tostring(share)}
end
if wait > max_wait then
  return {0, math.ceil(wait), bucket, tostring(rate), tostring(share)}
end

local send = now + wait
local function take(key, tat, t)
  local next = math.max(tat, send) + t
  -- The key outlives its TAT by nothing: once TAT has passed, an absent key means the same.
  redis.call('SET', key, string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
end
take(KEYS[1], tat, t)
if KEYS[6] then
  take(KEYS[6], itat, it)
end
if ct then
  -- A borrowed slot leaves no debt beyond one interval: the share allows the next slot one interval
  -- after it (as fair queuing restarts an idle lane at the virtual time, it never owes either).
  local next = math.min(math.max(ctat, send) + ct, send + 2 * ct)
  redis.call('SET', KEYS[5], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
end
return {1, math.ceil(wait), bucket, tostring(rate), tostring(share)}
