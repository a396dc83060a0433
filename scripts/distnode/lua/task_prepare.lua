-- task_prepare: before a worker reads: make sure its streams have the group, give the
-- retries that are due a stream entry, and name the routes this worker qualifies for.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] routes set
-- KEYS[9..] the streams the worker reads
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] most retries to promote
-- ARGV[10..] the labels the worker offers (its node.labels and capabilities)
-- Reply: {retries promoted, {requirement, ...}}: every requirement in the routes set whose
--   labels the worker all offers, sorted (the worker reads their streams from then on).
--- @include "task_lib"
redis.replicate_commands()
local type_error = task_header(1, 1)
if type_error then return type_error end
local routes_error = expect(KEYS[8], 'set')
if routes_error then return routes_error end
for i = 9, #KEYS do ensure_group(KEYS[i]) end
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[9]))
for _, id in ipairs(due) do
  redis.call('ZREM', DELAYED, id)
  local t = task_key(id)
  if redis.call('HGET', t, 'state') == 'pending' then
    redis.call('HDEL', t, 'due_ms')
    enqueue(id)
  end
end
local offered, routes = {}, {}
for i = 10, #ARGV do offered[ARGV[i]] = true end
for _, requirement in ipairs(redis.call('SMEMBERS', KEYS[8])) do
  local able = true
  for label in string.gmatch(requirement, '[^,]+') do
    if not offered[label] then able = false end
  end
  if able then routes[#routes + 1] = requirement end
end
table.sort(routes)
return {#due, routes}
