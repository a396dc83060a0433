-- task_release: give back the entries delivered to this worker: the ones not started yet
-- (mode 'unstarted', end of a tick), or all of them (mode 'all', the node leaves: running
-- attempts are handed back too, without counting as failed). Each goes back to the queue
-- with a new entry at once.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] nodes hash
-- KEYS[9..] the worker's streams
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] 'unstarted' | 'all'
-- ARGV[10] instance token
-- Reply: the ids handed back, or a COLLISION error (include task_worker).
--- @include "task_worker"
redis.replicate_commands()
local type_error = task_header(1, 1)
if type_error then return type_error end
local collision = refused(KEYS[8], ARGV[10])
if collision then return collision end
local handed = {}
for i = 9, #KEYS do
  local stream = KEYS[i]
  local pel = redis.pcall('XPENDING', stream, GROUP, '-', '+', 1000, ME)
  if not failed(pel) then
    for _, p in ipairs(pel) do
      local eid = p[1]
      local id = entry_task(stream, eid)
      local f = id and redis.call('HMGET', task_key(id), 'state', 'entry', 'worker') or {}
      local current = f[2] == eid
      local running_here = current and f[1] == 'running' and f[3] == ME
      if not (running_here and ARGV[9] ~= 'all') then
        redis.call('XACK', stream, GROUP, eid)
        if running_here then redis.call('HINCRBY', task_key(id), 'attempts', -1) end
        if running_here or (current and f[1] == 'pending') then
          to_pending(id, 0)
          handed[#handed + 1] = id
        end
      end
    end
  end
end
return handed
