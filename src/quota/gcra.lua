-- Reserves one slot of the account's bucket (and of the instance's, with a sub-limit) for a send
-- within max_wait, or says when one will be free. GCRA, as governor implements it: a bucket is its
-- theoretical arrival time (TAT, in microseconds); a send at time s conforms when
-- s >= TAT - (burst - 1) * T, and moves TAT to max(TAT, s) + T, where T = 1 / rate.
-- One script, one round trip, atomic: every replica's attempts go through it in order.
--
-- KEYS[1] the account bucket's TAT   KEYS[2] the adaptive rate (hash)   KEYS[3] the instance's TAT (optional)
-- ARGV[1] configured rate/s   ARGV[2] burst   ARGV[3] max wait (µs)
-- ARGV[4] instance rate/s     ARGV[5] instance burst (both ignored without KEYS[3])
-- ARGV[6] the time (µs since the epoch) to decide at, or "" for Redis's own clock: replicas' clocks
--         are never used; tests pass one to compare decisions with governor's.
-- ARGV[7] when a replica comes back from its fallback, how long (µs) until the last slot its
--         fallback granted is sent, else "": the fleet was just sending the account's rate through
--         the fallbacks, so AWS's bucket is as good as empty and their granted slots are still to
--         come. The account's next slot comes after them, with its burst spent (one slot, then the
--         rate), whatever this bucket saw while Redis was away, or lost in a restart or a failover.
-- Returns {granted (1/0), wait or retry-after (µs), bucket (0 account, 1 instance), rate/s as a string}.
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
if KEYS[3] then
  it = 1000000 / tonumber(ARGV[4])
  local iat
  itat, iat = earliest(KEYS[3], it, tonumber(ARGV[5]))
  if iat > at then
    at = iat
    bucket = 1
  end
end
local wait = math.max(at - now, 0)
if wait > max_wait then
  return {0, math.ceil(wait), bucket, tostring(rate)}
end

local send = now + wait
local function take(key, tat, t)
  local next = math.max(tat, send) + t
  -- The key outlives its TAT by nothing: once TAT has passed, an absent key means the same.
  redis.call('SET', key, string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
end
take(KEYS[1], tat, t)
if KEYS[3] then
  take(KEYS[3], itat, it)
end
return {1, math.ceil(wait), bucket, tostring(rate)}
