"""The project's Lua scripts, each a named constant with its contract.

Conventions:
- Scripts that read Redis's clock call ``redis.replicate_commands()`` first
  (required on Redis 5 before a write that follows TIME).
- A *fenced* script starts with ``FENCE``: KEYS[1] is the leader key, KEYS[2]
  the epoch key, ARGV[1] the writer's node id, ARGV[2] the writer's epoch.
  It refuses with a ``FENCED ...`` error reply unless the writer still holds
  the lease at that epoch, so a paused or partitioned old leader changes
  nothing. Its own keys and arguments start at KEYS[3] and ARGV[3].
- Wrong-typed keys are reported as ``WRONGTYPE <key> ...`` naming the key.
"""

from redis_client import Script

# Returns the first of KEYS[i..] whose type is not the expected one, as an error reply.
_TYPE_GUARD = """
local function expect(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. t .. ', expected a ' .. want)
  end
end
"""

FENCE = _TYPE_GUARD + """
redis.replicate_commands()
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local holder = redis.call('GET', KEYS[1])
local current = redis.call('GET', KEYS[2])
if holder ~= ARGV[1] or current ~= ARGV[2] then
  return redis.error_reply('FENCED ' .. ARGV[1] .. ' at epoch ' .. ARGV[2] .. ' is not the leader (leader: '
    .. tostring(holder or 'none') .. ', epoch ' .. tostring(current or 'none') .. ')')
end
"""

# HEARTBEAT: register or refresh this node, atomically, by Redis's clock. Also restores the
# epoch floor: if Redis's epoch is below what this node remembers and nobody holds the
# lease (Redis lost data), the epoch is raised so the next leader's epoch is above it.
# KEYS[1] nodes hash, KEYS[2] hb:{id}, KEYS[3] epoch, KEYS[4] leader
# ARGV[1] node id, ARGV[2] ttl in ms, ARGV[3] the node's own fields as a JSON object
#         (must include "instance", the token that tells this node's processes apart
#         from another machine claiming the same id), ARGV[4] highest epoch it remembers
# Returns {'ok', now, epoch} or {'collision', <the other record's JSON>}.
HEARTBEAT = Script(_TYPE_GUARD + """
redis.replicate_commands()
local err = expect(KEYS[1], 'hash') or expect(KEYS[2], 'string') or expect(KEYS[3], 'string')
if err then return err end
local t = redis.call('TIME')
local now = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local mine = cjson.decode(ARGV[3])
local epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
local remembered = tonumber(ARGV[4])
if epoch < remembered and redis.call('EXISTS', KEYS[4]) == 0 then
  epoch = remembered
  redis.call('SET', KEYS[3], epoch)
end
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
local rec = string.sub(ARGV[3], 1, -2) .. ',"status":"online","last_heartbeat":' .. now
  .. ',"started_at":' .. started .. '}'
redis.call('HSET', KEYS[1], ARGV[1], rec)
redis.call('SET', KEYS[2], now, 'PX', ARGV[2])
return {'ok', now, epoch}
""")

_EVENT = """
local function event(kind, node, epoch, maxlen, extra)
  local t = redis.call('TIME')
  local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  local fields = {'type', kind, 'node', node, 'epoch', tostring(epoch), 'time', at}
  local msg = '{"type":"' .. kind .. '","node":"' .. node .. '","epoch":' .. tostring(epoch) .. ',"time":' .. at
  if extra then
    fields[#fields + 1] = 'detail'; fields[#fields + 1] = extra
    msg = msg .. ',"detail":' .. cjson.encode(extra)
  end
  redis.call('XADD', EVENTS_KEY, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  redis.call('PUBLISH', EVENTS_KEY, msg .. '}')
end
"""

# ELECT: one election step for one node, atomically: renew the lease if held,
# otherwise acquire it if vacant and this node is eligible.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] hb:{me}, KEYS[4] nodes hash, KEYS[5] events stream,
# KEYS[6] bootstrap, KEYS[7] released:{me}
# ARGV[1] me, ARGV[2] lease ms, ARGV[3] highest epoch this node remembers, ARGV[4] events maxlen,
# ARGV[5] bootstrap wait ms (one heartbeat interval)
# Returns {outcome, leader, epoch, lease pttl ms} where outcome is one of
#   renewed     this node held the lease and extended it
#   acquired    this node took the vacant lease at a new epoch
#   follower    another node holds the lease
#   stepped_down this node held the lease but its own heartbeat had expired: released
#   ineligible  the lease is vacant but this node is not registered and alive, or it has
#               just released the lease (graceful handover: another node takes it)
#   waiting     Redis has no epoch (a new cluster, or Redis lost its data): nobody is elected
#               for one heartbeat round, while every live node's heartbeat raises the epoch
#               to the highest it remembers, so the next epoch is above all of them
ELECT = Script(_TYPE_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[5]
""" + _EVENT + """
local err = expect(KEYS[1], 'string') or expect(KEYS[2], 'string') or expect(KEYS[4], 'hash')
  or expect(KEYS[5], 'stream')
if err then return err end
local me, lease_ms, remembered, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local holder = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if holder and epoch < remembered then
  -- Redis lost data under a live lease (a replica missed the last INCR): the holder must
  -- adopt a fresh epoch, never one a past leader used; its writes at the old one are refused.
  epoch = remembered + 1
  redis.call('SET', KEYS[2], epoch)
end
local alive = redis.call('EXISTS', KEYS[3]) == 1
if holder == me then
  if not alive then
    redis.call('DEL', KEYS[1])
    event('leader_stepped_down', me, epoch, maxlen, 'own heartbeat expired')
    return {'stepped_down', '', epoch, 0}
  end
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  return {'renewed', me, epoch, lease_ms}
end
if holder then
  return {'follower', holder, epoch, redis.call('PTTL', KEYS[1])}
end
local rec = redis.call('HGET', KEYS[4], me)
local registered = false
if rec then
  local ok, node = pcall(cjson.decode, rec)
  registered = ok and type(node) == 'table' and node.status ~= 'left'
end
if not (alive and registered) or redis.call('EXISTS', KEYS[7]) == 1 then
  return {'ineligible', '', epoch, 0}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], remembered)
  redis.call('SET', KEYS[6], '1', 'PX', ARGV[5])
  return {'waiting', '', remembered, 0}
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  return {'waiting', '', epoch, redis.call('PTTL', KEYS[6])}
end
epoch = redis.call('INCR', KEYS[2])
if epoch <= remembered then
  -- Redis restarted empty or lost the last INCR: never reuse an epoch this node has seen
  epoch = remembered + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], me, 'PX', lease_ms)
event('leader_elected', me, epoch, maxlen)
return {'acquired', me, epoch, lease_ms}
""")

# RELEASE: give the lease up at once (graceful leave, SIGTERM in loop mode), and stay out of
# the next election for one lease, so another node takes over rather than this one again.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] events stream, KEYS[4] released:{me}
# ARGV[1] me, ARGV[2] epoch, ARGV[3] maxlen, ARGV[4] lease ms
# Returns 1 if this node held the lease at that epoch and released it, else 0.
RELEASE = Script("""
redis.replicate_commands()
local EVENTS_KEY = KEYS[3]
""" + _EVENT + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
event('leader_released', ARGV[1], ARGV[2], ARGV[3])
return 1
""")

# REDLOCK_CLAIM: on one of several independent masters, take or extend the lease.
# KEYS[1] leader, KEYS[2] epoch; ARGV[1] me, ARGV[2] lease ms
# Returns {'mine', epoch} or {'other', holder, epoch}.
REDLOCK_CLAIM = Script("""
local holder = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if holder and holder ~= ARGV[1] then return {'other', holder, epoch} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'mine', epoch}
""")

# REDLOCK_RAISE: write a new epoch back to an instance, never lowering it.
# KEYS[1] leader, KEYS[2] epoch; ARGV[1] me, ARGV[2] epoch. Returns 1 if the lease is still ours.
REDLOCK_RAISE = Script("""
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0
""")

# REDLOCK_RELEASE: KEYS[1] leader; ARGV[1] me. Deletes the lease only if it is ours.
REDLOCK_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# REDLOCK_ANNOUNCE: after winning a quorum, mirror the lease into the data Redis, where
# fenced writes are checked. Refuses an epoch lower than the one already there, so a
# stale winner cannot roll the data Redis back.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] hb:{me}, KEYS[4] nodes, KEYS[5] events
# ARGV[1] me, ARGV[2] validity ms, ARGV[3] epoch, ARGV[4] events maxlen
# Returns {'ok', epoch} | {'stale', current epoch} | {'ineligible', epoch}.
REDLOCK_ANNOUNCE = Script(_TYPE_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[5]
""" + _EVENT + """
local me, epoch = ARGV[1], tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current > epoch then return {'stale', current} end
local rec = redis.call('HGET', KEYS[4], me)
local ok, node = pcall(cjson.decode, rec or 'null')
if redis.call('EXISTS', KEYS[3]) == 0 or not ok or type(node) ~= 'table' or node.status == 'left' then
  return {'ineligible', current}
end
redis.call('SET', KEYS[1], me, 'PX', ARGV[2])
if current < epoch then
  redis.call('SET', KEYS[2], epoch)
  event('leader_elected', me, epoch, ARGV[4], 'redlock')
end
return {'ok', epoch}
""")

# FAILOVER_SCAN: the leader's sweep of one page of members, fenced by the lease:
# marks members whose heartbeat key has expired as offline, once, with an event.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] nodes hash, KEYS[4] events stream, KEYS[5] hb:{me}
# ARGV[1] me, ARGV[2] my epoch ('' on the first page: whatever epoch I hold now),
# ARGV[3] HSCAN cursor, ARGV[4] page size, ARGV[5] events maxlen
# Returns {'vacant'} | {'follower', holder} | {'stale'} (my heartbeat expired) |
#         {'fenced', epoch} (my epoch is gone) | {'leader', epoch, next cursor, {newly offline ids}}
FAILOVER_SCAN = Script(_TYPE_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[4]
""" + _EVENT + """
local err = expect(KEYS[3], 'hash') or expect(KEYS[4], 'stream')
if err then return err end
local me = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if not holder then return {'vacant'} end
if holder ~= me then return {'follower', holder} end
if redis.call('EXISTS', KEYS[5]) == 0 then return {'stale'} end
local epoch = redis.call('GET', KEYS[2]) or '0'
if ARGV[2] ~= '' and ARGV[2] ~= epoch then return {'fenced', epoch} end
local page = redis.call('HSCAN', KEYS[3], ARGV[3], 'COUNT', ARGV[4])
local fields, marked = page[2], {}
local t = redis.call('TIME')
local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
for i = 1, #fields, 2 do
  local id, raw = fields[i], fields[i + 1]
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' and (rec.status == 'online' or rec.status == nil)
      and redis.call('EXISTS', 'hb:' .. id) == 0 then
    local body = string.gsub(raw, '"status":"online"', '"status":"offline"', 1)
    if not string.find(body, '"status":"offline"', 1, true) then
      body = string.sub(body, 1, -2) .. ',"status":"offline"}'
    end
    body = string.sub(body, 1, -2) .. ',"offline_at":' .. at .. ',"epoch":' .. epoch .. '}'
    redis.call('HSET', KEYS[3], id, body)
    event('node_offline', id, epoch, ARGV[5])
    marked[#marked + 1] = id
  end
end
return {'leader', epoch, page[1], marked}
""")

# LEAVE: this node leaves the cluster gracefully, in one atomic step: releases the
# lease if it holds it (so another node takes over in one tick, not one TTL), deletes
# its heartbeat key and marks its record ``left``.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] hb:{me}, KEYS[4] nodes, KEYS[5] events
# ARGV[1] me, ARGV[2] events maxlen
# Returns {released lease (0/1), had record (0/1)}.
LEAVE = Script(_TYPE_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[5]
""" + _EVENT + """
local err = expect(KEYS[4], 'hash')
if err then return err end
local me = ARGV[1]
local epoch = redis.call('GET', KEYS[2]) or '0'
local released = 0
if redis.call('GET', KEYS[1]) == me then
  redis.call('DEL', KEYS[1])
  released = 1
  event('leader_released', me, epoch, ARGV[2], 'node left')
end
redis.call('DEL', KEYS[3])
local raw = redis.call('HGET', KEYS[4], me)
if not raw then return {released, 0} end
local t = redis.call('TIME')
local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local body = string.gsub(raw, '"status":"[a-z]*"', '"status":"left"', 1)
redis.call('HSET', KEYS[4], me, string.sub(body, 1, -2) .. ',"left_at":' .. at .. '}')
event('node_left', me, epoch, ARGV[2])
return {released, 1}
""")

# PRUNE: forget members that are gone (offline or left) since longer than a given age.
# KEYS[1] nodes; ARGV[1] minimum age in seconds (by Redis's clock)
# Returns the pruned ids. A member whose heartbeat key exists is never pruned.
PRUNE = Script(_TYPE_GUARD + """
redis.replicate_commands()
local err = expect(KEYS[1], 'hash')
if err then return err end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local flat, pruned = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #flat, 2 do
  local id = flat[i]
  local ok, rec = pcall(cjson.decode, flat[i + 1])
  if ok and type(rec) == 'table' and redis.call('EXISTS', 'hb:' .. id) == 0 then
    local last = tonumber(rec.left_at or rec.offline_at or rec.last_heartbeat)
    if last and now - last >= tonumber(ARGV[1]) then
      redis.call('HDEL', KEYS[1], id)
      pruned[#pruned + 1] = id
    end
  end
end
return pruned
""")


# -- state --------------------------------------------------------------------
# The cluster snapshot (fenced, leader only) and the agents' key-value store (not fenced:
# any agent may write, but every write is one atomic script).

# PUBLISH_STATE: the leader publishes the cluster snapshot, fenced by its lease.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] state hash
# ARGV[1] me, ARGV[2] my epoch,
# ARGV[3] content: compact JSON object whose keys all sort before "updated" (it must carry
#         "epoch" = ARGV[2]); ARGV[4], ARGV[5] the epoch and version of the caller's mirror
# The version goes up and "updated" (Redis clock) is stamped only when the content changed.
# Returns {'published'|'unchanged', epoch, version, doc or nil (nil: the caller's mirror is current)}.
# Refuses with FENCED (not the leader at that epoch) or STALE (a snapshot of a higher epoch is there).
PUBLISH_STATE = Script(FENCE + """
local err = expect(KEYS[3], 'hash')
if err then return err end
local cur = redis.call('HMGET', KEYS[3], 'epoch', 'version', 'content')
if tonumber(cur[1] or '0') > tonumber(ARGV[2]) then
  return redis.error_reply('STALE the published snapshot is at epoch ' .. cur[1] .. ', above ' .. ARGV[2])
end
local version, outcome = tonumber(cur[2] or '0'), 'unchanged'
if cur[3] ~= ARGV[3] then
  version, outcome = version + 1, 'published'
  local now = string.format('%.3f', now_s())
  local doc = string.sub(ARGV[3], 1, -2) .. ',"updated":' .. now .. ',"version":' .. version .. '}'
  redis.call('HSET', KEYS[3], 'content', ARGV[3], 'doc', doc, 'epoch', ARGV[2], 'version', version,
             'updated', now)
end
local doc = false
if ARGV[4] ~= ARGV[2] or tonumber(ARGV[5]) ~= version then doc = redis.call('HGET', KEYS[3], 'doc') end
return {outcome, tonumber(ARGV[2]), version, doc}
""")

# STATE_READ: a follower's one read per tick: the snapshot, only if its mirror is out of date.
# KEYS[1] leader, KEYS[2] state hash; ARGV[1], ARGV[2] the epoch and version of the caller's mirror
# Returns {leader or '', epoch, version (0: nothing published), doc or nil (nil: mirror current)}.
STATE_READ = Script(_TYPE_GUARD + """
local err = expect(KEYS[2], 'hash')
if err then return err end
local cur = redis.call('HMGET', KEYS[2], 'epoch', 'version')
local doc = false
if cur[2] and (cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2]) then doc = redis.call('HGET', KEYS[2], 'doc') end
return {redis.call('GET', KEYS[1]) or '', tonumber(cur[1] or '0'), tonumber(cur[2] or '0'), doc}
""")

# KV_SET: write one entry of the key-value store; with an expected version, only if the
# entry is at that version (compare-and-set). Versions come from one counter, so they only
# grow, also across a delete and re-create (no ABA for compare-and-set).
# KEYS[1] kv:<name>, KEYS[2] kv index, KEYS[3] kv version counter
# ARGV[1] name, ARGV[2] value (JSON text), ARGV[3] expected version ('': any; '0': must not exist),
# ARGV[4] the caller's operation token (a retry whose first reply was lost finds its own write),
# ARGV[5] channel that announces the change (message: the name)
# Returns {'ok', version, updated} | {'conflict', current version (0: missing), updated or ''}.
KV_SET = Script(_TYPE_GUARD + """
redis.replicate_commands()
local err = expect(KEYS[1], 'hash') or expect(KEYS[2], 'zset') or expect(KEYS[3], 'string')
if err then return err end
local cur = redis.call('HMGET', KEYS[1], 'version', 'updated', 'op')
local current = tonumber(cur[1] or '0')
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= current then
  if cur[3] == ARGV[4] then return {'ok', current, cur[2]} end
  return {'conflict', current, cur[2] or ''}
end
local version = redis.call('INCR', KEYS[3])
local t = redis.call('TIME')
local now = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'version', version, 'updated', now, 'op', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return {'ok', version, now}
""")

# KV_DELETE: delete one entry; with an expected version, only if the entry is at it.
# KEYS[1] kv:<name>, KEYS[2] kv index; ARGV[1] name, ARGV[2] expected version ('': any),
# ARGV[3] channel that announces the change
# Returns {'deleted', old version} | {'missing', 0} | {'conflict', current version}.
KV_DELETE = Script(_TYPE_GUARD + """
local err = expect(KEYS[1], 'hash') or expect(KEYS[2], 'zset')
if err then return err end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then return {'conflict', current} end
if current == 0 then return {'missing', 0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {'deleted', current}
""")

# KV_LIST: names in a lexical range of the index, with their versions and update times.
# KEYS[1] kv index; ARGV[1], ARGV[2] ZRANGEBYLEX bounds, ARGV[3] most names to return,
# ARGV[4] the prefix of entry keys (keys.kv(""))
# Returns a flat list {name, version, updated, ...}; a name whose entry is gone is skipped.
KV_LIST = Script(_TYPE_GUARD + """
local err = expect(KEYS[1], 'zset')
if err then return err end
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local cur = redis.call('HMGET', ARGV[4] .. name, 'version', 'updated')
  if cur[1] then
    out[#out + 1] = name; out[#out + 1] = cur[1]; out[#out + 1] = cur[2] or ''
  end
end
return out
""")
