-- task_reclaim: the leader's sweep, fenced by the lease. In order:
--   1. entries pending on consumers whose hb:<id> key is gone: XCLAIM to the leader, XACK,
--      the task to the retry path (a started attempt counts as failed; one never started
--      is re-queued); entries idle past their task's timeout + grace on live consumers too;
--      but an entry whose task runs under an attempt lease that holds is left alone (its
--      worker renews it while the handler runs, whether or not its heartbeat goes on);
--   2. running tasks in the running index whose attempt lease lapsed, whatever their entry
--      (acked or lost): the same retry path (the BATCH with the earliest deadlines per call);
--      a 'pre' attempt (claimed by a release before the attempt lease) only by the old rule:
--      its worker's hb key gone, or past its deadline + grace;
--   3. pending tasks whose entry can no longer be delivered (deleted or lost): re-queued;
--      SWEEP_MAX of them per call, from a cursor kept in KEYS[11] (a rank in the pending
--      index, back to 0 at its end), so tasks that wait long (for an absent node) never
--      hide a lost entry behind them: every pending task is looked at within
--      ceil(pending / SWEEP_MAX) calls;
--   4. done/dead index members past the retention (their records expire by themselves).
--
-- KEYS[1] leader (include fence)
-- KEYS[2] epoch
-- KEYS[3] term
-- KEYS[4..10] task header (include task_lib)
-- KEYS[11] sweep cursor
-- KEYS[12] events stream
-- ARGV[1] me (node id)
-- ARGV[2] my epoch
-- ARGV[3] my instance token
-- ARGV[4..11] task header (include task_lib)
-- ARGV[12] grace ms
-- ARGV[13] batch (entries or tasks per step)
-- ARGV[14] heartbeat key prefix
-- ARGV[15] attempt lease key prefix (keys.task_lease(''))
-- ARGV[16] events maxlen
-- ARGV[17] the end latch's key prefix (keys.task_ended(''); include task_lib)
-- ARGV[18] the end latch's ttl ms
-- Reply: {more (1 if a batch was full), {id, outcome, reason, ...}}; FENCED error if not leader.
--- @include "fence"
--- @include "task_lib"
redis.replicate_commands()
local fenced = fence(true)
if fenced then return fenced end
local type_error = task_header(4, 4)
if type_error then return type_error end
end_latch(17)
local GRACE_MS, BATCH, HB_PFX, LEASE_PFX = tonumber(ARGV[12]), tonumber(ARGV[13]), ARGV[14], ARGV[15]
EVENTS_KEY, EVENTS_MAXLEN = KEYS[12], ARGV[16]
local grace_text = tostring(GRACE_MS / 1000) .. 's grace'
local notes, more, alive = {}, 0, {}
local function note(id, outcome, reason)
  notes[#notes + 1] = id; notes[#notes + 1] = outcome; notes[#notes + 1] = reason
end
local function is_alive(node)
  if alive[node] == nil then alive[node] = redis.call('EXISTS', HB_PFX .. node) == 1 end
  return alive[node]
end
local function reclaim_entry(stream, eid, reason)
  local id = entry_task(stream, eid)
  local f = id and redis.call('HMGET', task_key(id), 'state', 'entry', 'attempts') or {}
  if f[2] == eid and f[1] == 'running' and lease_state(LEASE_PFX .. id, task_key(id)) == 'held' then
    return  -- its worker still renews the attempt's lease: the handler may be running
  end  -- ('pre' attempts come here only by the old rule: hb key gone, or idle past timeout + grace)
  redis.call('XCLAIM', stream, GROUP, ME, 0, eid, 'JUSTID')
  redis.call('XACK', stream, GROUP, eid)
  if not id or f[2] ~= eid then return end
  if f[1] == 'pending' then
    to_pending(id, 0)
    note(id, 'requeued', reason)
  elseif f[1] == 'running' then
    note(id, fail_attempt(id, 'attempt ' .. f[3] .. ': ' .. reason), reason)
  end
end

-- 1. the pending entries lists
for _, stream in ipairs(redis.call('SMEMBERS', STREAMS)) do
  if redis.call('EXISTS', stream) == 0 then
    redis.call('SREM', STREAMS, stream)
  else
    local summary = redis.pcall('XPENDING', stream, GROUP)
    if not failed(summary) and tonumber(summary[1]) > 0 then
      for _, c in ipairs(summary[4]) do
        if not is_alive(c[1]) then
          local pel = redis.call('XPENDING', stream, GROUP, '-', '+', BATCH, c[1])
          if #pel >= BATCH then more = 1 end
          for _, p in ipairs(pel) do reclaim_entry(stream, p[1], 'worker ' .. c[1] .. ' is offline or has left') end
        end
      end
      for _, p in ipairs(redis.call('XPENDING', stream, GROUP, '-', '+', BATCH)) do
        local eid, owner, idle = p[1], p[2], tonumber(p[3])
        if idle > GRACE_MS and is_alive(owner) then
          local id = entry_task(stream, eid)
          local timeout_ms = id and tonumber(redis.call('HGET', task_key(id), 'timeout_ms')) or 0
          if idle > (timeout_ms or 0) + GRACE_MS then
            reclaim_entry(stream, eid, 'no result from ' .. owner .. ' within its timeout plus ' .. grace_text
              .. ' (hung worker?)')
          end
        end
      end
    end
  end
end

-- 2. the running index: attempts whose lease lapsed ('pre' ones: by the old rule)
local function move_running(id, f, alive_reason)
  if f[3] and f[3] ~= '' then
    redis.pcall('XCLAIM', f[2], GROUP, ME, 0, f[3], 'JUSTID')
    redis.pcall('XACK', f[2], GROUP, f[3])
  end
  local reason = 'worker ' .. tostring(f[4]) .. ' is offline or has left'
  if is_alive(tostring(f[4])) then
    reason = 'no result from ' .. tostring(f[4]) .. alive_reason
  end
  note(id, fail_attempt(id, 'attempt ' .. tostring(f[5]) .. ': ' .. reason), reason)
end
local running = redis.call('ZRANGE', IDX_RUNNING, 0, BATCH - 1, 'WITHSCORES')
for i = 1, #running, 2 do
  local id, deadline = running[i], tonumber(running[i + 1])
  local f = redis.call('HMGET', task_key(id), 'state', 'stream', 'entry', 'worker', 'attempts')
  local state = f[1] == 'running' and lease_state(LEASE_PFX .. id, task_key(id))
  if f[1] ~= 'running' then
    redis.call('ZREM', IDX_RUNNING, id)
  elseif state == 'pre' then
    if deadline < NOW - GRACE_MS or not is_alive(tostring(f[4])) then
      move_running(id, f, ' by its deadline plus ' .. grace_text)
    end
  elseif state ~= 'held' then
    move_running(id, f, ' and its attempt lease lapsed (not renewed within '
      .. 'node.heartbeat_ttl: worker frozen, killed or cut off from Redis)')
  end
end

-- 3. pending tasks that lost their entry
local groups = {}
local function deliverable(stream, eid)
  if not stream or not eid or eid == '' then return false end
  if #redis.call('XRANGE', stream, eid, eid) == 0 then return false end
  if groups[stream] == nil then groups[stream] = group_info(stream) or false end
  local g = groups[stream]
  if not g then return false end
  if not id_le(eid, g['last-delivered-id']) then return true end
  return #redis.call('XPENDING', stream, GROUP, eid, eid, 1) > 0
end
local SWEEP_KEY, SWEEP_MAX = KEYS[11], math.min(BATCH, 100)
local sweep_error = expect(SWEEP_KEY, 'string')
if sweep_error then return sweep_error end
local sweep_from = tonumber(redis.call('GET', SWEEP_KEY) or '0') or 0
local oldest = redis.call('ZRANGEBYSCORE', IDX_PENDING, '-inf', NOW - GRACE_MS, 'LIMIT', sweep_from, SWEEP_MAX)
if #oldest == 0 and sweep_from > 0 then
  sweep_from = 0
  oldest = redis.call('ZRANGEBYSCORE', IDX_PENDING, '-inf', NOW - GRACE_MS, 'LIMIT', 0, SWEEP_MAX)
end
local stayed = 0  -- tasks that keep their rank (the others left the index or moved to its end)
for _, id in ipairs(oldest) do
  local f = redis.call('HMGET', task_key(id), 'state', 'stream', 'entry')
  if f[1] ~= 'pending' then
    redis.call('ZREM', IDX_PENDING, id)
  elseif not redis.call('ZSCORE', DELAYED, id) and not deliverable(f[2], f[3]) then
    to_pending(id, 0)
    note(id, 'requeued', 'its stream entry was lost')
  else
    stayed = stayed + 1
  end
end
if #oldest < SWEEP_MAX then redis.call('SET', SWEEP_KEY, 0) else redis.call('SET', SWEEP_KEY, sweep_from + stayed) end

-- 4. retention of the done and dead indexes
redis.call('ZREMRANGEBYSCORE', IDX_DONE, '-inf', NOW - DONE_TTL_MS)
redis.call('ZREMRANGEBYSCORE', IDX_DEAD, '-inf', NOW - DONE_TTL_MS)
return {more, notes}
