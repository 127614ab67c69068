-- Registers one replica among the live replicas of a quota key and counts them, by Redis's clock.
-- KEYS[1]: the key's sorted set of replicas, scored by their last registration (ms).
-- ARGV[1]: this replica's id; ARGV[2]: how long a registration lasts (ms).
-- Returns the number of replicas registered within the last ARGV[2] ms, this one included.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
