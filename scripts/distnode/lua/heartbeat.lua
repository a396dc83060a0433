-- heartbeat: register or refresh this node, atomically, by Redis's clock. Also restores the
-- epoch floor: if Redis's epoch is below what this node remembers (Redis lost data: restarted,
-- or a failover to a lagging replica), the epoch is raised to it and a bootstrap round starts
-- (unless one runs), in which nobody is elected and no new term starts, so every live node's
-- heartbeat can raise it further; a lease held meanwhile is fenced (its term's epoch is no
-- longer Redis's) until its holder starts a new term after the round (see elect.lua).
-- A missing epoch is left missing: that is how elect.lua knows to hold the bootstrap round in
-- which every live node's heartbeat raises it (creating it here would skip that round, and
-- a node that never saw the last epoch could then be elected at it).
--
-- KEYS[1] nodes hash
-- KEYS[2] hb:{id}
-- KEYS[3] epoch
-- KEYS[4] bootstrap
-- ARGV[1] node id
-- ARGV[2] heartbeat ttl ms
-- ARGV[3] the node's own fields as a JSON object (must include "instance", the token that tells
--         this node's processes apart from another machine claiming the same id)
-- ARGV[4] highest epoch the node remembers
-- ARGV[5] bootstrap wait ms (one heartbeat interval)
-- Reply: {'ok', now (seconds, Redis's clock), epoch} | {'collision', <the other record's JSON>}.
--   A collision changes nothing, the epoch included: it is checked before any write. An epoch
--   key that is not an epoch (include epoch_guard) is left alone and reported as 0: membership
--   goes on, the election step names the key.
--- @include "type_guard"
--- @include "epoch_guard"
redis.replicate_commands()
local err = expect(KEYS[1], 'hash') or expect(KEYS[2], 'string') or expect(KEYS[3], 'string')
if err then return err end
local t = redis.call('TIME')
local now = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local mine = cjson.decode(ARGV[3])
local started = now
local prev_raw = redis.call('HGET', KEYS[1], ARGV[1])
if prev_raw then
  local ok, prev = pcall(cjson.decode, prev_raw)
  if ok and type(prev) == 'table' then
    if prev.instance and prev.instance ~= mine.instance and redis.call('EXISTS', KEYS[2]) == 1 then
      return {'collision', prev_raw}
    end
    if prev.instance == mine.instance and prev.status ~= 'left' and tonumber(prev.started_at) then
      started = string.format('%.3f', tonumber(prev.started_at))
    end
  end
end
local epoch = 0
if not epoch_error(KEYS[3]) then
  epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
  local remembered = tonumber(ARGV[4]) or 0
  if epoch < remembered and remembered < EPOCH_LIMIT and redis.call('EXISTS', KEYS[3]) == 1 then
    epoch = remembered
    redis.call('SET', KEYS[3], string.format('%d', epoch))
    redis.call('SET', KEYS[4], '1', 'PX', ARGV[5], 'NX')
  end
end
local rec = string.sub(ARGV[3], 1, -2) .. ',"status":"online","last_heartbeat":' .. now
  .. ',"started_at":' .. started .. '}'
redis.call('HSET', KEYS[1], ARGV[1], rec)
redis.call('SET', KEYS[2], now, 'PX', ARGV[2])
return {'ok', now, epoch}
