-- task_claim: start the first pending task delivered to this worker (its entries in the
-- group's pending list, XPENDING, in stream order). Entries of tasks that moved on are
-- acked; an entry whose task is still `running` here, taken by this instance (its token on the
-- task) and whose attempt lease lapsed, is an attempt a crashed earlier run left behind: it counts
-- as failed (retry or dead). One whose lease holds is left alone (its worker still renews it), and
-- so is one another instance with this node id took (the leader's reclaim moves it once it lapsed).
-- A 'pre' attempt (claimed here by a release before the attempt lease, so no instance of its own)
-- counts as interrupted at once, as that release's claim did (the node's record names this instance).
-- The claim nonce (ARGV[14]) makes a claim safe to send again when its reply was lost: a claim records
-- it on the task it starts (field claim_nonce); a claim with the same nonce finds that attempt (still
-- running here, taken by this instance, its lease held), renews its lease and deadline and returns it
-- instead of starting another, so the worker runs the attempt its lost reply named.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] nodes hash
-- KEYS[9] events stream
-- KEYS[10..] the streams the worker reads, in priority order
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] pending entries examined per stream
-- ARGV[10] instance token
-- ARGV[11] attempt lease key prefix (keys.task_lease(''))
-- ARGV[12] attempt lease ms (node.heartbeat_ttl)
-- ARGV[13] events maxlen
-- ARGV[14] claim nonce: new for each claim, the same when a claim is sent again ('': none)
-- ARGV[15] the end latch's key prefix (keys.task_ended(''); include task_lib)
-- ARGV[16] the end latch's ttl ms
-- Reply: {task, waiting, interrupted}: task = {id, type, payload, attempt, max attempts,
--   timeout ms, token, stream, entry id} (started, or found by its nonce) or {}; waiting = further
--   delivered entries not started;
--   interrupted = {id, 'retry' | 'dead', ...}; or a COLLISION error (include task_worker).
--- @include "task_worker"
redis.replicate_commands()
local type_error = task_header(1, 1)
if type_error then return type_error end
end_latch(15)
local collision = refused(KEYS[8], ARGV[10])
if collision then return collision end
EVENTS_KEY, EVENTS_MAXLEN = KEYS[9], ARGV[13]
local instance, lease_pfx, lease_ms, nonce = ARGV[10], ARGV[11], tonumber(ARGV[12]), ARGV[14]

-- The attempt an earlier send of this claim started: its lease and deadline run from now (its
-- handler has not started), nothing else changes (the same attempt, token and count).
local function resume_attempt(id, stream, eid)
  local t = task_key(id)
  redis.call('XCLAIM', stream, GROUP, ME, 0, eid, 'JUSTID')  -- restart the idle clock, as start_attempt does
  local f = redis.call('HMGET', t, 'type', 'payload', 'attempts', 'max_attempts', 'timeout_ms', 'token')
  local timeout_ms = tonumber(f[5])
  redis.call('HSET', t, 'deadline_ms', NOW + timeout_ms, 'lease_until_ms', NOW + lease_ms, 'updated_ms', NOW)
  redis.call('SET', lease_pfx .. id, lease_value(f[6], instance), 'PX', lease_ms)
  redis.call('ZADD', IDX_RUNNING, NOW + timeout_ms, id)
  return {id, f[1], f[2], tonumber(f[3]), tonumber(f[4]), timeout_ms, f[6], stream, eid}
end

local first, resumed, waiting, interrupted = nil, nil, 0, {}
for i = 10, #KEYS do
  local stream = KEYS[i]
  local pel = redis.pcall('XPENDING', stream, GROUP, '-', '+', tonumber(ARGV[9]), ME)
  if not failed(pel) then
    for _, p in ipairs(pel) do
      local eid = p[1]
      local id = entry_task(stream, eid)
      local f = id and redis.call('HMGET', task_key(id), 'state', 'entry', 'worker', 'attempts', 'instance',
        'claim_nonce') or {}
      local ours = f[2] == eid and f[1] == 'running' and f[3] == ME
      if f[2] == eid and f[1] == 'pending' then
        if first then waiting = waiting + 1 else first = {id, stream, eid} end
      elseif ours and f[5] and f[5] ~= instance then
        -- running elsewhere (another instance with this node id): the leader's reclaim moves it once it lapsed
      elseif ours and lease_state(lease_pfx .. id, task_key(id)) == 'held' then
        -- still renewed by its worker; or started by an earlier send of this very claim
        if nonce ~= '' and f[6] == nonce and f[5] == instance and not resumed then
          resumed = resume_attempt(id, stream, eid)
        end
      else
        redis.call('XACK', stream, GROUP, eid)
        if ours then
          interrupted[#interrupted + 1] = id
          interrupted[#interrupted + 1] = fail_attempt(id, 'attempt ' .. f[4] .. ' on ' .. ME
            .. ' was interrupted before it reported a result (worker crashed or was killed)')
        end
      end
    end
  end
end
local claimed = {}
if resumed then
  claimed = resumed
  if first then waiting = waiting + 1 end
elseif first then
  claimed = start_attempt(first[1], first[2], first[3], lease_pfx .. first[1], lease_ms, instance)
  if nonce ~= '' then redis.call('HSET', task_key(first[1]), 'claim_nonce', nonce) end
end
return {claimed, waiting, interrupted}
