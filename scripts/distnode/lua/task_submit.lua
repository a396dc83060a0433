-- task_submit: create a task (pending, with a stream entry) unless its idempotency key is taken.
-- An untargeted task with a requirement goes to that requirement's route stream (KEYS[8]), and
-- the requirement joins the routes set, where qualified workers find it (task_prepare.lua); a
-- requirement new to the set is announced with a `route_added` cluster event (detail: the
-- requirement), which wakes the workers blocked between ticks that do not read its stream yet.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] the stream it goes to
-- KEYS[9] nodes hash
-- KEYS[10] routes set
-- KEYS[11] cluster events stream
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] task id
-- ARGV[10] type
-- ARGV[11] payload
-- ARGV[12] target node ('' = any)
-- ARGV[13] idempotency key ('' = none)
-- ARGV[14] max attempts
-- ARGV[15] timeout ms
-- ARGV[16] requirement (labels the runner needs, sorted and joined by ','; '' = none)
-- ARGV[17] events stream maxlen
-- Reply: {'created' | 'duplicate', task id, 1 if the target node is a known member (or none)
--   else 0}.
--- @include "task_lib"
redis.replicate_commands()
local type_error = task_header(1, 1)
if type_error then return type_error end
local routes_error = expect(KEYS[10], 'set')
if routes_error then return routes_error end
EVENTS_KEY = KEYS[11]
local id, key, target, requirement = ARGV[9], ARGV[13], ARGV[12], ARGV[16]
-- the events stream is written only for a new route: only then may its type refuse the submit
local new_route = requirement ~= '' and target == '' and redis.call('SISMEMBER', KEYS[10], requirement) == 0
if new_route then
  local events_error = expect(KEYS[11], 'stream')
  if events_error then return events_error end
end
local known = 1
if target ~= '' then known = redis.call('HEXISTS', KEYS[9], target) end
if key ~= '' then
  local prev = redis.call('GET', IDEM_PFX .. key)
  if prev and redis.call('EXISTS', task_key(prev)) == 1 then return {'duplicate', prev, known} end
end
local t = task_key(id)
if redis.call('EXISTS', t) == 1 then return {'duplicate', id, known} end
redis.call('HSET', t, 'id', id, 'type', ARGV[10], 'payload', ARGV[11], 'target', target, 'key', key,
  'max_attempts', ARGV[14], 'timeout_ms', ARGV[15], 'stream', KEYS[8], 'attempts', 0, 'runs', 0,
  'created_ms', NOW, 'submitted_by', ME, 'requires', requirement)
if key ~= '' then redis.call('SET', IDEM_PFX .. key, id) end
if new_route then
  redis.call('SADD', KEYS[10], requirement)
  event('route_added', ME, 0, ARGV[17], requirement)
end
to_pending(id, 0)
return {'created', id, known}
