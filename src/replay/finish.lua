-- After the call that held the lock: keep its answer (when it succeeded) and release the lock, if it
-- is still this call's (its fingerprint; an expired lock may have been taken since).
--
-- KEYS[1] the kept answer   KEYS[2] the lock
-- ARGV[1] the answer, or '' after a failure   ARGV[2] the replay window (ms)   ARGV[3] the fingerprint
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
