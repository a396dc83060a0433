-- task_finish: store an attempt's outcome, only if the attempt is still the task's current one.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] the entry's stream
-- KEYS[9] nodes hash
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] task id
-- ARGV[10] attempt token
-- ARGV[11] entry id
-- ARGV[12] 'ok' | 'fail'
-- ARGV[13] result (ok) or error (fail)
-- ARGV[14] 1 if the result was truncated
-- ARGV[15] bytes of output the handler wrote (kept or not)
-- ARGV[16] instance token
-- ARGV[17] the end latch's key prefix (keys.task_ended(''); include task_lib)
-- ARGV[18] the end latch's ttl ms
-- Reply: {'done'} | {'retry'} | {'dead'} | {'stale', current state, current token}
--   (stale: the attempt was reclaimed or handed back meanwhile; nothing is overwritten),
--   or a COLLISION error (include task_worker).
--- @include "task_worker"
redis.replicate_commands()
local type_error = task_header(1, 1)
if type_error then return type_error end
end_latch(17)
local collision = refused(KEYS[9], ARGV[16])
if collision then return collision end
local id, token, eid = ARGV[9], ARGV[10], ARGV[11]
local f = redis.call('HMGET', task_key(id), 'state', 'token', 'entry')
if f[1] ~= 'running' or f[2] ~= token then
  if f[3] ~= eid then redis.call('XACK', KEYS[8], GROUP, eid) end
  return {'stale', f[1] or 'missing', f[2] or ''}
end
redis.call('XACK', KEYS[8], GROUP, eid)
redis.call('HSET', task_key(id), 'output_bytes', ARGV[15])
if ARGV[12] == 'ok' then
  to_done(id, ARGV[13], ARGV[14])
  return {'done'}
end
return {fail_attempt(id, ARGV[13])}
