-- The account-wide rate shared by every replica, adapted to AWS's throttling with the same rule as the
-- local store's (adaptive.rs): a throttle cuts the rate by a factor at most once per interval and
-- leaves the bucket empty; each quiet interval climbs it by a step, stopping just under the rate that
-- was last throttled until a long quiet period has passed. Times are Redis's, in microseconds.
--
-- KEYS[1] the adaptive rate (hash: rate, ceiling, last_change, last_throttle)   KEYS[2] the bucket's TAT
-- ARGV[1] "throttled" or "accepted"   ARGV[2] configured rate/s   ARGV[3] burst
-- ARGV[4] decrease factor   ARGV[5] floor rate/s   ARGV[6] ceiling margin   ARGV[7] increase step/s
-- ARGV[8] decrease interval (µs)   ARGV[9] increase interval (µs)   ARGV[10] ceiling reset (µs)
-- ARGV[11] how long the state outlives its last change (ms)
-- Returns the rate now in force, as a string.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local configured = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'rate', 'ceiling', 'last_change', 'last_throttle')
local rate = tonumber(state[1]) or configured
local last_change = tonumber(state[3]) or 0
local last_throttle = tonumber(state[4])

if ARGV[1] == 'throttled' then
  if last_throttle and now - last_throttle < tonumber(ARGV[8]) then
    return tostring(rate)
  end
  local lowered = math.max(rate * tonumber(ARGV[4]), tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'rate', tostring(lowered), 'ceiling', tostring(rate * tonumber(ARGV[6])),
    'last_change', now, 'last_throttle', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[11])
  -- The bucket starts empty at the lowered rate: its next slot is one interval away.
  local t = 1000000 / lowered
  local tat = math.max(tonumber(redis.call('GET', KEYS[2])) or 0, now + tonumber(ARGV[3]) * t)
  redis.call('SET', KEYS[2], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  return tostring(lowered)
end

if rate >= configured or now - last_change < tonumber(ARGV[9]) then
  return tostring(rate)
end
local ceiling = tonumber(state[2]) or configured
if not last_throttle or now - last_throttle >= tonumber(ARGV[10]) then
  ceiling = configured
end
local raised = math.min(rate + tonumber(ARGV[7]), math.max(ceiling, rate))
if raised > rate then
  redis.call('HSET', KEYS[1], 'rate', tostring(raised), 'last_change', now)
else
  redis.call('HSET', KEYS[1], 'last_change', now)
end
redis.call('PEXPIRE', KEYS[1], ARGV[11])
return tostring(raised)
