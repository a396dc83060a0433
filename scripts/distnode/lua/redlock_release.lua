-- redlock_release: delete a claim only if it is this process's and of the given term; with a
-- time to keep (ARGV[4] > 0 ms), shorten it to at most that instead (a claim must not end before
-- the data Redis's lease of its term, when that lease cannot be deleted).
--
-- KEYS[1] leader
-- KEYS[2] redlock claim hash
-- ARGV[1] me (node id)
-- ARGV[2] instance token
-- ARGV[3] the term's epoch ('0': a claim no term was tied to yet; '': any term of this process)
-- ARGV[4] optional: keep at most this many ms
-- Reply: 1 if released (or shortened), else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HGET', KEYS[2], 'instance') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and (redis.call('HGET', KEYS[2], 'epoch') or '0') ~= ARGV[3] then return 0 end
local keep = tonumber(ARGV[4] or '0') or 0
if keep > 0 then
  if redis.call('PTTL', KEYS[1]) > keep then
    redis.call('PEXPIRE', KEYS[1], keep)
    redis.call('PEXPIRE', KEYS[2], keep)
  end
  return 1
end
return redis.call('DEL', KEYS[1], KEYS[2]) > 0 and 1 or 0
