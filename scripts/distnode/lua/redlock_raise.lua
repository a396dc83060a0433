-- redlock_raise: write a new epoch back to an instance, never lowering it, and tie this
-- process's claim there to that term.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] redlock claim hash
-- ARGV[1] me (node id)
-- ARGV[2] epoch
-- ARGV[3] instance token
-- Reply: 1 if the claim is still this process's, else 0.
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HGET', KEYS[3], 'instance') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[3], 'epoch', ARGV[2])
return 1
