-- task_prepare: before a worker reads: make sure its streams have the group, give the
-- retries that are due a stream entry, and name the routes this worker qualifies for.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] routes set
-- KEYS[9..] the streams the worker reads
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] most retries to promote
-- ARGV[10..] the labels the worker offers (its node.labels and capabilities)
-- Reply: {retries promoted, {requirement, ...}, ms until the earliest retry still delayed comes due
--   (Redis's clock; 0: due now, more than ARGV[9] were; -1: none)}: the requirements are every one in
--   the routes set whose labels the worker all offers, sorted (the worker reads their streams from
--   then on); a worker that blocks between ticks wakes when that retry comes due.
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
local next_due_ms = -1
local earliest = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
if #earliest > 0 then next_due_ms = math.max(0, tonumber(earliest[2]) - NOW) end
return {#due, routes, next_due_ms}
