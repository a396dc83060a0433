-- include task_lib: the task queue's shared Lua (tasks/__init__.py holds the state machine it
-- implements). Every task script shares one header of keys and arguments:
--   KEYS[k..k+6]  pending index, running index, done index, dead index, delayed zset,
--                 dead-letter stream, set of task streams
--   ARGV[a..a+7]  me (node id), consumer group, task hash key prefix, idempotency key prefix,
--                 backoff base ms, backoff max ms, done/dead retention ms, stream maxlen
-- task_header(k, a) reads it from KEYS[k]/ARGV[a] (plain task scripts pass 1, 1; the fenced
-- task_reclaim passes 4, 4, after the fence's own three), reads Redis's clock into NOW (ms; the
-- script has called redis.replicate_commands() first) and returns a WRONGTYPE error reply if a
-- header key has the wrong type, else nil. Call it before anything else below.
-- Task hashes and idempotency keys are named from those prefixes, and a stream entry's body is
-- only {task = id}: the task hash is the truth, the stream delivers.
--- @include "type_guard"
--- @include "event"
local IDX_PENDING, IDX_RUNNING, IDX_DONE, IDX_DEAD, DELAYED, DEAD_STREAM, STREAMS
local ME, GROUP, TASK_PFX, IDEM_PFX, BACKOFF_BASE_MS, BACKOFF_MAX_MS, DONE_TTL_MS, STREAM_MAXLEN
local NOW
local EVENTS_MAXLEN = 0
local ENDED_PFX, ENDED_TTL_MS

local function task_header(k, a)
  IDX_PENDING, IDX_RUNNING, IDX_DONE, IDX_DEAD = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  DELAYED, DEAD_STREAM, STREAMS = KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  ME, GROUP, TASK_PFX, IDEM_PFX = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  BACKOFF_BASE_MS, BACKOFF_MAX_MS = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  DONE_TTL_MS, STREAM_MAXLEN = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local clock = redis.call('TIME')
  NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  return expect(IDX_PENDING, 'zset') or expect(IDX_RUNNING, 'zset') or expect(IDX_DONE, 'zset')
    or expect(IDX_DEAD, 'zset') or expect(DELAYED, 'zset') or expect(DEAD_STREAM, 'stream')
    or expect(STREAMS, 'set')
end

local function task_key(id) return TASK_PFX .. id end

local function failed(reply) return type(reply) ~= 'table' or reply.err ~= nil end

local function as_table(flat)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end

-- Stream ids compare as (milliseconds, sequence) pairs.
local function id_le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm end
  return as <= bs
end

local function group_info(stream)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if failed(groups) then return nil end
  for _, g in ipairs(groups) do
    local f = as_table(g)
    if f['name'] == GROUP then return f end
  end
  return nil
end

-- A missing stream is made by XADD + XDEL of a seed entry: XGROUP's MKSTREAM came late in 5.0.
local function ensure_group(stream)
  if not group_info(stream) then
    if redis.call('EXISTS', stream) == 0 then
      local seed = redis.call('XADD', stream, '*', 'seed', '1')
      redis.call('XGROUP', 'CREATE', stream, GROUP, seed)
      redis.call('XDEL', stream, seed)
    else
      redis.call('XGROUP', 'CREATE', stream, GROUP, '0')
    end
  end
  redis.call('SADD', STREAMS, stream)
end

local function entry_task(stream, eid)
  local found = redis.call('XRANGE', stream, eid, eid)
  if #found == 0 then return nil end
  return as_table(found[1][2])['task']
end

-- How many entries at the head of a stream every group has delivered and acknowledged:
-- only those may be trimmed, so MAXLEN never drops a task that is still on its way.
local function droppable_head(stream, count)
  local limits = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = as_table(g)
    local oldest = false
    if tonumber(f['pending']) > 0 then oldest = redis.call('XPENDING', stream, f['name'])[2] end
    limits[#limits + 1] = {f['last-delivered-id'], oldest}
  end
  local n = 0
  for _, e in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', count)) do
    for _, l in ipairs(limits) do
      if not id_le(e[1], l[1]) or (l[2] and id_le(l[2], e[1])) then return n end
    end
    n = n + 1
  end
  return n
end

local function trim(stream)
  local len = redis.call('XLEN', stream)
  if len <= STREAM_MAXLEN then return end
  local n = droppable_head(stream, math.min(len - STREAM_MAXLEN, 100))
  if n > 0 then redis.call('XTRIM', stream, 'MAXLEN', len - n) end
end

-- A fresh stream entry for a pending task (the old one, if any, is acked by the caller).
local function enqueue(id)
  local t = task_key(id)
  local stream = redis.call('HGET', t, 'stream')
  ensure_group(stream)
  local eid = redis.call('XADD', stream, '*', 'task', id)
  redis.call('HSET', t, 'entry', eid)
  trim(stream)
  return eid
end

local function expire_record(t)
  redis.call('PEXPIRE', t, DONE_TTL_MS)
  local key = redis.call('HGET', t, 'key')
  if key and key ~= '' then redis.call('PEXPIRE', IDEM_PFX .. key, DONE_TTL_MS) end
end

-- The end latch (keys.task_ended): a list that holds the final state once a task ended, so that
-- `submit --wait` (tasks/submit.py), blocked on it with BRPOPLPUSH onto itself, wakes at once, and
-- every other waiter after it (the element stays). It lives ENDED_TTL_MS, never past the record.
-- A script that may end a task, or take an ended one back or away, calls end_latch(a) after
-- task_header: ARGV[a] the latch key prefix, ARGV[a + 1] its ttl ms. to_done and to_dead fail
-- loudly without it. The others (submit, release, prepare) need none: they move only tasks that
-- never ended, or whose latch is gone (purged with the record, or expired no later than it).
local function end_latch(a) ENDED_PFX, ENDED_TTL_MS = ARGV[a], tonumber(ARGV[a + 1]) end

local function mark_ended(id, state)
  local latch = ENDED_PFX .. id
  redis.call('DEL', latch)  -- one element, the last end's; whatever stood under the name (a stale key) goes
  -- pcall: an ACL user of an older release without list commands still ends the task (waiters then
  -- see the end when their block runs out)
  if type(redis.pcall('RPUSH', latch, state)) == 'number' then
    redis.pcall('PEXPIRE', latch, math.min(ENDED_TTL_MS, DONE_TTL_MS))
  end
end

-- A task leaving done/dead (retry, purge): a waiter of its next run must not wake on the old end.
local function forget_end(id)
  if ENDED_PFX then redis.call('DEL', ENDED_PFX .. id) end
end

-- -> pending: a new stream entry now, or the delayed zset when a backoff applies.
local function to_pending(id, delay_ms)
  local t = task_key(id)
  forget_end(id)
  redis.call('ZREM', IDX_RUNNING, id)
  redis.call('ZADD', IDX_PENDING, NOW, id)
  redis.call('HSET', t, 'state', 'pending', 'entry', '', 'updated_ms', NOW)
  redis.call('HDEL', t, 'deadline_ms')
  if delay_ms > 0 then
    redis.call('HSET', t, 'due_ms', NOW + delay_ms)
    redis.call('ZADD', DELAYED, NOW + delay_ms, id)
  else
    redis.call('HDEL', t, 'due_ms')
    redis.call('ZREM', DELAYED, id)
    enqueue(id)
  end
end

local function to_done(id, result, truncated)
  local t = task_key(id)
  redis.call('HSET', t, 'state', 'done', 'result', result, 'result_truncated', truncated, 'entry', '',
    'finished_ms', NOW, 'updated_ms', NOW)
  redis.call('HDEL', t, 'deadline_ms')
  redis.call('ZREM', IDX_RUNNING, id)
  redis.call('ZADD', IDX_DONE, NOW, id)
  expire_record(t)
  mark_ended(id, 'done')
end

local function to_dead(id, reason)
  local t = task_key(id)
  local f = redis.call('HMGET', t, 'type', 'attempts', 'worker')
  local dead_entry = redis.call('XADD', DEAD_STREAM, 'MAXLEN', '~', STREAM_MAXLEN, '*', 'task', id,
    'type', f[1] or '', 'attempts', f[2] or '0', 'worker', f[3] or '', 'error', reason)
  redis.call('HSET', t, 'state', 'dead', 'error', reason, 'entry', '', 'dead_entry', dead_entry,
    'finished_ms', NOW, 'updated_ms', NOW)
  redis.call('HDEL', t, 'due_ms', 'deadline_ms')
  redis.call('ZREM', IDX_RUNNING, id)
  redis.call('ZREM', IDX_PENDING, id)
  redis.call('ZREM', DELAYED, id)
  redis.call('ZADD', IDX_DEAD, NOW, id)
  expire_record(t)
  mark_ended(id, 'dead')
end

-- An attempt ended without a result: retry after a backoff, or dead-letter once attempts are used up.
local function fail_attempt(id, reason)
  local t = task_key(id)
  local f = redis.call('HMGET', t, 'attempts', 'max_attempts')
  local attempts, max_attempts = tonumber(f[1]) or 0, tonumber(f[2]) or 1
  redis.call('HSET', t, 'error', reason)
  if attempts >= max_attempts then
    to_dead(id, reason)
    return 'dead'
  end
  local delay_ms = math.min(BACKOFF_BASE_MS * 2 ^ math.max(attempts - 1, 0), BACKOFF_MAX_MS)
  to_pending(id, math.floor(delay_ms))
  return 'retry'
end

-- The running attempt's lease (keys.task_lease): '<token> <instance>' with a PX TTL, set at the
-- claim, renewed by its worker (task_renew.lua); each also writes the task's `lease_until_ms` (Redis
-- TIME + the lease's ttl) and the claim `lease_of` (the attempt's token). A running attempt is
-- moved (reclaimed, or counted as interrupted) only once its lease lapsed: the key no longer names
-- the attempt AND Redis's clock is past lease_until_ms (a key deleted by hand, or lost in a
-- failover, moves nothing before then); its handler has been killed by then (procs/supervisor.py).
-- An attempt whose lease_of is not its token was claimed by a release before the attempt lease
-- (a rolling upgrade): 'pre', moved only by the old rule (its node's heartbeat gone, or past its
-- deadline + tasks.reclaim_grace_s). A lease key of another type is never an error: before
-- lease_until_ms it counts as held; after it, it is deleted (an event names it) and lapsed.
local function lease_value(token, instance) return tostring(token) .. ' ' .. tostring(instance or '') end

local function lease_state(lease_key, t)
  local f = redis.call('HMGET', t, 'token', 'instance', 'lease_of', 'lease_until_ms')
  if not f[1] or f[3] ~= f[1] then return 'pre' end
  local kind = redis.call('TYPE', lease_key).ok
  if kind == 'string' and redis.call('GET', lease_key) == lease_value(f[1], f[2]) then return 'held' end
  local lease_until = tonumber(f[4])
  if lease_until and NOW <= lease_until then return 'held' end
  if kind ~= 'string' and kind ~= 'none' then
    redis.call('DEL', lease_key)
    if EVENTS_KEY then
      event('task_lease_wrong_type', ME, 0, EVENTS_MAXLEN, lease_key .. ' was a ' .. kind
        .. ', not the attempt lease of ' .. tostring(f[1]) .. ': deleted, the attempt counts as lapsed')
    end
  end
  return 'lapsed'
end

-- pending -> running on this node; the token (runs@node) names this attempt and no other; the
-- attempt's lease (lease_key, lease_ms) is taken for ``instance``, the claiming process.
local function start_attempt(id, stream, eid, lease_key, lease_ms, instance)
  local t = task_key(id)
  redis.call('XCLAIM', stream, GROUP, ME, 0, eid, 'JUSTID')  -- restart the idle clock: it times this attempt
  local attempts = redis.call('HINCRBY', t, 'attempts', 1)
  local runs = redis.call('HINCRBY', t, 'runs', 1)
  local f = redis.call('HMGET', t, 'type', 'payload', 'max_attempts', 'timeout_ms')
  local timeout_ms = tonumber(f[4])
  local token = runs .. '@' .. ME
  redis.call('HSET', t, 'state', 'running', 'worker', ME, 'token', token, 'started_ms', NOW, 'updated_ms', NOW,
    'deadline_ms', NOW + timeout_ms, 'instance', instance, 'lease_of', token, 'lease_until_ms', NOW + lease_ms)
  redis.call('SET', lease_key, lease_value(token, instance), 'PX', lease_ms)
  redis.call('ZREM', IDX_PENDING, id)
  redis.call('ZADD', IDX_RUNNING, NOW + timeout_ms, id)
  return {id, f[1], f[2], attempts, tonumber(f[3]), timeout_ms, token, stream, eid}
end
