-- The replay cache's one round trip before a call: the answer if one is kept; else the lock on the
-- call in flight, taken for this call if nobody holds it.
--
-- KEYS[1] the kept answer   KEYS[2] the lock on the call in flight (its value: the call's fingerprint)
-- ARGV[1] this call's fingerprint   ARGV[2] the lock's time to live (ms)
-- Returns {'hit', answer} | {'lead', ''} | {'wait', the fingerprint of the call in flight}.
local answer = redis.call('GET', KEYS[1])
if answer then
  return {'hit', answer}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'lead', ''}
end
return {'wait', redis.call('GET', KEYS[2]) or ''}
