-- task_purge: delete done (or dead) tasks that ended at least a given age ago: record,
-- idempotency key, dead-letter entry, end latch, index member.
--
-- KEYS[1..7] task header (include task_lib)
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] 'done' | 'dead'
-- ARGV[10] minimum age ms
-- ARGV[11] most tasks examined in this call
-- ARGV[12] the end latch's key prefix (keys.task_ended(''); include task_lib)
-- ARGV[13] the end latch's ttl ms
-- Reply: {records deleted, index members examined}.
--- @include "task_lib"
redis.replicate_commands()
local type_error = task_header(1, 1)
if type_error then return type_error end
end_latch(12)
local state = ARGV[9]
local index = IDX_DEAD
if state == 'done' then index = IDX_DONE end
local ids = redis.call('ZRANGEBYSCORE', index, '-inf', NOW - tonumber(ARGV[10]), 'LIMIT', 0, tonumber(ARGV[11]))
local removed = 0
for _, id in ipairs(ids) do
  local t = task_key(id)
  local f = redis.call('HMGET', t, 'state', 'key', 'dead_entry')
  if not f[1] or f[1] == state then
    if f[2] and f[2] ~= '' and redis.call('GET', IDEM_PFX .. f[2]) == id then redis.call('DEL', IDEM_PFX .. f[2]) end
    if f[3] then redis.call('XDEL', DEAD_STREAM, f[3]) end
    forget_end(id)  -- a task submitted again under this id must not wake its waiters at once
    if f[1] then
      redis.call('DEL', t)
      removed = removed + 1
    end
  end
  redis.call('ZREM', index, id)
end
return {removed, #ids}
