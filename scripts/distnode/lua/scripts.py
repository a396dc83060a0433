"""The project's Lua scripts, each a named constant with its contract.

Conventions:
- Scripts that read Redis's clock call ``redis.replicate_commands()`` first
  (required on Redis 5 before a write that follows TIME).
- A *fenced* script starts with ``FENCE``: KEYS[1] is the leader key, KEYS[2]
  the epoch key, KEYS[3] the term hash; ARGV[1] the writer's node id, ARGV[2]
  the writer's epoch, ARGV[3] the writer's instance token. It refuses with a
  ``FENCED ...`` error reply unless the writer still holds the lease at that
  epoch, as the process that took it (the term's instance: a second process
  with the same node id is refused), in a term that is confirmed (with
  ``election.min_replicas_acked``, only once WAIT confirmed it), so a paused
  or partitioned old leader, a duplicate node id or an unconfirmed term
  changes nothing. Its own keys and arguments start at KEYS[4] and ARGV[4].
- Wrong-typed keys are reported as ``WRONGTYPE <key> ...`` naming the key.
"""

from distnode.core.local_state import EPOCH_LIMIT
from distnode.redis.client import Script

# Returns the first of KEYS[i..] whose type is not the expected one, as an error reply.
_TYPE_GUARD = """
local function expect(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. t .. ', expected a ' .. want)
  end
end
"""


assert str(EPOCH_LIMIT) == "1" + "0" * (len(str(EPOCH_LIMIT)) - 1), "EPOCH_LIMIT is a power of 10"

# Defines EPOCH_LIMIT (local_state.EPOCH_LIMIT: every epoch is below it, see there) and
# epoch_error(key): an error reply naming ``key`` when it holds something that is not an epoch
# (a plain integer below EPOCH_LIMIT, no sign, no leading zero, no exponent), else nil. Checked
# before a script's first write: a script error does not undo the writes made before it.
_EPOCH_GUARD = """
local EPOCH_LIMIT = %d
local function epoch_error(key)
  local raw = redis.call('GET', key)
  if raw and not (raw == '0' or (#raw <= %d and string.match(raw, '^[1-9]%%d*$'))) then
    local shown = string.gsub(string.sub(raw, 1, 32), '[^%%w%%.%%+%%-]', '?')
    return redis.error_reply('BADEPOCH ' .. key .. ' holds "' .. shown .. '", not an epoch (a plain integer below '
      .. '10^%d): set it to the last epoch the cluster used, or delete it and let the nodes restore it')
  end
end
""" % (EPOCH_LIMIT, len(str(EPOCH_LIMIT)) - 1, len(str(EPOCH_LIMIT)) - 1)


def _fence(confirmed_only: bool) -> str:
    """The fence (see the module docstring); ``confirmed_only`` False also admits a term WAIT has
    not confirmed yet (only the scripts that confirm a term use that)."""
    return _TYPE_GUARD + """
redis.replicate_commands()
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local fence_type_error = expect(KEYS[3], 'hash')
if fence_type_error then return fence_type_error end
local fence_holder = redis.call('GET', KEYS[1])
local fence_epoch = redis.call('GET', KEYS[2])
local fence_term = redis.call('HMGET', KEYS[3], 'instance', 'epoch', 'confirmed')
local fence_why = nil
if fence_holder ~= ARGV[1] or fence_epoch ~= ARGV[2] then
  fence_why = 'leader: ' .. tostring(fence_holder or 'none') .. ', epoch ' .. tostring(fence_epoch or 'none')
elseif fence_term[1] ~= ARGV[3] then
  fence_why = 'the term belongs to another process with this node id'
elseif fence_term[2] ~= ARGV[2] then
  fence_why = 'the term is at epoch ' .. tostring(fence_term[2] or 'none') .. ': a new term is due'
elseif """ + ("fence_term[3] ~= '1'" if confirmed_only else "false") + """ then
  fence_why = 'the term is not confirmed by replicas yet'
end
if fence_why then
  return redis.error_reply('FENCED ' .. ARGV[1] .. ' at epoch ' .. ARGV[2] .. ' is not the leader (' .. fence_why
    .. ')')
end
"""


FENCE = _fence(True)
_FENCE_UNCONFIRMED = _fence(False)

# HEARTBEAT: register or refresh this node, atomically, by Redis's clock. Also restores the
# epoch floor: if Redis's epoch is below what this node remembers (Redis lost data: restarted,
# or a failover to a lagging replica), the epoch is raised to it and a bootstrap round starts
# (unless one runs), in which nobody is elected and no new term starts, so every live node's
# heartbeat can raise it further; a lease held meanwhile is fenced (its term's epoch is no
# longer Redis's) until its holder starts a new term after the round (see ELECT).
# A missing epoch is left missing: that is how ELECT knows to hold the bootstrap round in
# which every live node's heartbeat raises it (creating it here would skip that round, and
# a node that never saw the last epoch could then be elected at it).
# KEYS[1] nodes hash, KEYS[2] hb:{id}, KEYS[3] epoch, KEYS[4] bootstrap
# ARGV[1] node id, ARGV[2] ttl in ms, ARGV[3] the node's own fields as a JSON object
#         (must include "instance", the token that tells this node's processes apart
#         from another machine claiming the same id), ARGV[4] highest epoch it remembers,
# ARGV[5] bootstrap wait ms (one heartbeat interval)
# Returns {'ok', now, epoch} or {'collision', <the other record's JSON>}. A collision changes
# nothing, the epoch included: it is checked before any write. An epoch key that is not an
# epoch (see _EPOCH_GUARD) is left alone and reported as 0: membership goes on, the election
# step names the key.
HEARTBEAT = Script(_TYPE_GUARD + _EPOCH_GUARD + """
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
""")

_EVENT = """
local function event(kind, node, epoch, maxlen, extra)
  local t = redis.call('TIME')
  local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  local e = string.format('%d', tonumber(epoch) or 0)  -- never tostring(): 14 digits, then 1e+14
  local fields = {'type', kind, 'node', node, 'epoch', e, 'time', at}
  local msg = '{"type":"' .. kind .. '","node":"' .. node .. '","epoch":' .. e .. ',"time":' .. at
  if extra then
    fields[#fields + 1] = 'detail'; fields[#fields + 1] = extra
    msg = msg .. ',"detail":' .. cjson.encode(extra)
  end
  redis.call('XADD', EVENTS_KEY, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  redis.call('PUBLISH', EVENTS_KEY, msg .. '}')
end
"""

# Defines other_instance(nodes key, me, token): the record of node ``me`` if it names an
# instance token other than ``token`` (another live process claims this node id, see
# HEARTBEAT), else nil. An empty or missing token skips the check.
_OTHER_INSTANCE = """
local function other_instance(nodes_key, me, token)
  if not token or token == '' then return nil end
  local ok, rec = pcall(cjson.decode, redis.call('HGET', nodes_key, me) or 'null')
  if ok and type(rec) == 'table' and type(rec.instance) == 'string' and rec.instance ~= token then
    return rec
  end
end
"""

# ELECT: one election step for one node, atomically: renew the lease if held,
# otherwise acquire it if vacant and this node is eligible.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] hb:{me}, KEYS[4] nodes hash, KEYS[5] events stream,
# KEYS[6] bootstrap, KEYS[7] released:{me}, KEYS[8] term, KEYS[9] server (run_id of the last master)
# ARGV[1] me, ARGV[2] lease ms, ARGV[3] highest epoch this node remembers, ARGV[4] events maxlen,
# ARGV[5] bootstrap wait ms (one heartbeat interval), ARGV[6] this process's instance token
# (membership.node_fields), ARGV[7] a new term's ``confirmed``: '1', or '0' when replicas must
# confirm it first (election.min_replicas_acked)
# The master changed (a Sentinel failover, a restart from files) when KEYS[9], replicated with
# the data, names another server than this one's run_id (INFO server; nothing is detected if a
# script may not run INFO): whichever node steps first notices, whatever it remembers.
# A bootstrap round (KEYS[6], one heartbeat interval; nobody is elected and no new term starts
# while it runs, so every live node's heartbeat can raise the epoch to the highest it
# remembers) starts when Redis has no epoch, when its epoch is below what this node remembers
# (then raised to it), or when the master changed: a failover to a lagging replica must not
# hand out an epoch some node already saw, whichever node steps first.
# The term (KEYS[8]) is written with the lease, expires with it and is deleted with it; the
# lease holder renews only as the instance that took it. A term whose epoch is no longer
# Redis's (raised after a data loss), or that ran when the master changed, is stale: its holder keeps the
# lease through the round, fenced, then starts a new term at a new epoch.
# Returns {outcome, leader, epoch, lease pttl ms, confirmed (1/0), this server's run_id} where
# outcome is one of
#   collision   this node's record, or the term of a lease held under this node id, names
#               another instance token: another process claims this node id; nothing was
#               changed (it must not renew or take that one's lease)
#   renewed     this node held the lease and extended it
#   acquired    this node took the vacant lease at a new epoch, or started a new term (new
#               epoch) under the lease it holds
#   follower    another node holds the lease
#   stepped_down this node held the lease but its own heartbeat had expired (or the lease had
#               no term): released
#   ineligible  the lease is vacant but this node is not registered and alive, or it has
#               just released the lease (graceful handover: another node takes it)
#   waiting     a bootstrap round runs: nobody is elected; a holder keeps its lease but leads
#               at no epoch (leader = me, fenced) until it starts a new term after the round
ELECT = Script(_TYPE_GUARD + _OTHER_INSTANCE + _EPOCH_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[5]
""" + _EVENT + """
-- every check comes before the first write: a script error does not undo earlier writes
local err = expect(KEYS[1], 'string') or expect(KEYS[2], 'string') or expect(KEYS[4], 'hash')
  or expect(KEYS[5], 'stream') or expect(KEYS[8], 'hash') or expect(KEYS[9], 'string') or epoch_error(KEYS[2])
if err then return err end
local me, lease_ms, remembered, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if not remembered or remembered < 0 or remembered >= EPOCH_LIMIT then  -- the caller caps it (local_state)
  return redis.error_reply('BADEPOCH the remembered epoch ' .. ARGV[3] .. ' is not an epoch')
end
local token, new_confirmed = ARGV[6], ARGV[7]
local info = redis.pcall('INFO', 'server')
local run_id = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
local last_server = redis.call('GET', KEYS[9])
local moved = run_id ~= '' and last_server and last_server ~= run_id
local holder = redis.call('GET', KEYS[1])
local known = redis.call('GET', KEYS[2])
local epoch = tonumber(known or '0')
if other_instance(KEYS[4], me, token) then
  return {'collision', holder or '', epoch, 0, 0, run_id}
end
local term = redis.call('HMGET', KEYS[8], 'instance', 'epoch', 'confirmed')
if holder == me and term[1] and term[1] ~= token then
  return {'collision', holder, epoch, 0, 0, run_id}  -- the lease of my node id, taken by another process
end
if run_id ~= '' and last_server ~= run_id then redis.call('SET', KEYS[9], run_id) end
if not known or epoch < remembered or moved then
  if not known or epoch < remembered then
    -- Redis lost data (new, restarted empty, a replica that missed the last INCRs): the floor
    -- is what this node remembers; the round lets every other live node raise it further
    epoch = math.max(epoch, remembered)
    redis.call('SET', KEYS[2], string.format('%d', epoch))
  end
  redis.call('SET', KEYS[6], '1', 'PX', ARGV[5], 'NX')
  if holder and moved then
    redis.call('HDEL', KEYS[8], 'epoch')  -- a new master may miss this term's writes: a new term is due
    term[2] = false
  end
end
local waiting = redis.call('EXISTS', KEYS[6]) == 1
local function new_term(detail)
  epoch = redis.call('INCR', KEYS[2])
  if epoch <= remembered then
    epoch = remembered + 1
    redis.call('SET', KEYS[2], string.format('%d', epoch))
  end
  redis.call('DEL', KEYS[8])
  redis.call('HSET', KEYS[8], 'node', me, 'instance', token, 'epoch', string.format('%d', epoch),
             'confirmed', new_confirmed)
  redis.call('PEXPIRE', KEYS[8], lease_ms)
  event('leader_elected', me, epoch, maxlen, detail)
  return {'acquired', me, epoch, lease_ms, new_confirmed == '1' and 1 or 0, run_id}
end
local alive = redis.call('EXISTS', KEYS[3]) == 1
if holder == me then
  if not alive or not term[1] then
    redis.call('DEL', KEYS[1], KEYS[8])
    event('leader_stepped_down', me, epoch, maxlen, alive and 'the lease had no term' or 'own heartbeat expired')
    return {'stepped_down', '', epoch, 0, 0, run_id}
  end
  redis.call('PEXPIRE', KEYS[1], lease_ms)
  redis.call('PEXPIRE', KEYS[8], lease_ms)
  if tonumber(term[2]) ~= epoch then
    if waiting then return {'waiting', me, epoch, redis.call('PTTL', KEYS[6]), 0, run_id} end
    return new_term('new term under the lease')
  end
  if new_confirmed == '1' and term[3] ~= '1' then
    redis.call('HSET', KEYS[8], 'confirmed', '1')  -- replicas need no longer confirm a term
    term[3] = '1'
  end
  return {'renewed', me, epoch, lease_ms, term[3] == '1' and 1 or 0, run_id}
end
if holder then
  return {'follower', holder, epoch, redis.call('PTTL', KEYS[1]), 0, run_id}
end
local rec = redis.call('HGET', KEYS[4], me)
local registered = false
if rec then
  local ok, node = pcall(cjson.decode, rec)
  registered = ok and type(node) == 'table' and node.status ~= 'left'
end
if not (alive and registered) or redis.call('EXISTS', KEYS[7]) == 1 then
  return {'ineligible', '', epoch, 0, 0, run_id}
end
if waiting then
  return {'waiting', '', epoch, redis.call('PTTL', KEYS[6]), 0, run_id}
end
redis.call('SET', KEYS[1], me, 'PX', lease_ms)
return new_term(nil)
""")

# RELEASE: give the lease up at once (graceful leave, SIGTERM in loop mode), and stay out of
# the next election for one lease, so another node takes over rather than this one again.
# Only the process that took the lease can release it (the term's instance token): a second
# process with the same node id that stops releases nothing.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] events stream, KEYS[4] released:{me}, KEYS[5] term
# ARGV[1] me, ARGV[2] the term's epoch ('': whatever epoch this node holds the lease at),
# ARGV[3] maxlen, ARGV[4] lease ms, ARGV[5] this process's instance token
# Returns 1 if this node held the lease (in that term) and released it, else 0.
RELEASE = Script(_TYPE_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[3]
""" + _EVENT + """
local err = expect(KEYS[5], 'hash')
if err then return err end
local epoch = redis.call('GET', KEYS[2]) or '0'
local term = redis.call('HMGET', KEYS[5], 'instance', 'epoch')
if redis.call('GET', KEYS[1]) ~= ARGV[1] or term[1] ~= ARGV[5] or (ARGV[2] ~= '' and term[2] ~= ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
event('leader_released', ARGV[1], epoch, ARGV[3])
return 1
""")

# CONFIRM_TERM: a no-op write (the epoch set to itself), fenced but for the confirmation. Sent
# with a WAIT right after it on the same connection, WAIT then counts the replicas that hold
# everything up to it, the lease, epoch and term included, whichever connection wrote them
# (replication is one ordered stream).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] term; ARGV[1] me, ARGV[2] my epoch, ARGV[3] my instance token
# Returns the lease's PTTL in ms, or a FENCED error reply if the term is not mine at that epoch.
CONFIRM_TERM = Script(_FENCE_UNCONFIRMED + """
redis.call('SET', KEYS[2], ARGV[2])
return redis.call('PTTL', KEYS[1])
""")

# ACCEPT_TERM: once WAIT confirmed it, the term may act: its ``confirmed`` becomes '1', and
# fenced writes (FENCE) pass from then on. KEYS and ARGV as CONFIRM_TERM.
# Returns 1, or a FENCED error reply if the term is not mine at that epoch.
ACCEPT_TERM = Script(_FENCE_UNCONFIRMED + """
redis.call('HSET', KEYS[3], 'confirmed', '1')
return 1
""")

# REDLOCK_CLAIM: on one of several independent masters, take or extend the lease. A claim
# names the process (instance token) that holds it, so another process with the same node id
# is "other", never "mine"; the claim's epoch says which term it belongs to.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] redlock claim hash; ARGV[1] me, ARGV[2] lease ms,
# ARGV[3] this process's instance token
# Returns {'mine', epoch, claim epoch} (claim epoch 0: the claim is new, no term yet) or
# {'other', holder, epoch}; a BADEPOCH error reply (that instance's vote is not won) if its
# epoch key is not an epoch (see _EPOCH_GUARD).
REDLOCK_CLAIM = Script(_EPOCH_GUARD + """
local bad_epoch = epoch_error(KEYS[2])
if bad_epoch then return bad_epoch end
local holder = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
local inst = redis.call('HGET', KEYS[3], 'instance')
if holder and (holder ~= ARGV[1] or (inst and inst ~= ARGV[3])) then return {'other', holder, epoch} end
local claimed = holder and tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0') or 0
if not holder then redis.call('DEL', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[3], 'instance', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {'mine', epoch, claimed}
""")

# REDLOCK_RAISE: write a new epoch back to an instance, never lowering it, and tie this
# process's claim there to that term.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] redlock claim hash; ARGV[1] me, ARGV[2] epoch,
# ARGV[3] instance token. Returns 1 if the claim is still this process's, else 0.
REDLOCK_RAISE = Script("""
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HGET', KEYS[3], 'instance') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[3], 'epoch', ARGV[2])
return 1
""")

# REDLOCK_RELEASE: delete a claim only if it is this process's and of the given term; with
# ARGV[4] (ms > 0), shorten it to at most that instead (a claim must not end before the data
# Redis's lease of its term, when that lease cannot be deleted).
# KEYS[1] leader, KEYS[2] redlock claim hash; ARGV[1] me, ARGV[2] instance token,
# ARGV[3] the term's epoch ('0': a claim no term was tied to yet; '': any term of this process),
# ARGV[4] optional: keep at most this many ms
# Returns 1 if released (or shortened), else 0.
REDLOCK_RELEASE = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HGET', KEYS[2], 'instance') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and (redis.call('HGET', KEYS[2], 'epoch') or '0') ~= ARGV[3] then return 0 end
local keep = tonumber(ARGV[4] or '0') or 0
if keep > 0 then
  if redis.call('PTTL', KEYS[1]) > keep then
    redis.call('PEXPIRE', KEYS[1], keep)
    redis.call('PEXPIRE', KEYS[2], keep)
  end
  return 1
end
return redis.call('DEL', KEYS[1], KEYS[2]) > 0 and 1 or 0
""")

# REDLOCK_ANNOUNCE: after winning a quorum, mirror the lease into the data Redis, where
# fenced writes are checked, with what is left of the quorum's validity. Conditional:
# - another node's lease (or another process's with this node id) is never overwritten;
# - an epoch below the current one is refused, and so is the current one unless it is this
#   process's own running term (a renewal): after the instances lost their data a winner can
#   arrive at an epoch another node already led at, and must take a fresh one instead.
# A new term writes the term hash (node, instance, epoch, confirmed); a renewal keeps it.
# Both carry the same PTTL as the leader key.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] hb:{me}, KEYS[4] nodes, KEYS[5] events, KEYS[6] term
# ARGV[1] me, ARGV[2] validity ms, ARGV[3] epoch, ARGV[4] events maxlen, ARGV[5] instance token,
# ARGV[6] a new term's confirmed field ('1', or '0' while min_replicas_acked must confirm it)
# Returns {'ok', epoch, 1 if the term is confirmed else 0} | {'stale', current epoch} |
#         {'ineligible', epoch} | {'held', current epoch, holder}.
REDLOCK_ANNOUNCE = Script(_TYPE_GUARD + _EPOCH_GUARD + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[5]
""" + _EVENT + """
local err = expect(KEYS[1], 'string') or expect(KEYS[2], 'string') or expect(KEYS[6], 'hash') or epoch_error(KEYS[2])
if err then return err end
local me, epoch, token = ARGV[1], tonumber(ARGV[3]), ARGV[5]
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local holder = redis.call('GET', KEYS[1])
local term = redis.call('HMGET', KEYS[6], 'node', 'instance', 'epoch')
if holder and (holder ~= me or (term[2] and term[2] ~= token)) then return {'held', current, holder} end
local own_term = holder == me and term[1] == me and term[2] == token and tonumber(term[3]) == epoch
if epoch < current or (epoch == current and not own_term) then return {'stale', current} end
local rec = redis.call('HGET', KEYS[4], me)
local ok, node = pcall(cjson.decode, rec or 'null')
if redis.call('EXISTS', KEYS[3]) == 0 or not ok or type(node) ~= 'table' or node.status == 'left' then
  return {'ineligible', current}
end
redis.call('SET', KEYS[1], me, 'PX', ARGV[2])
if epoch > current then
  redis.call('SET', KEYS[2], string.format('%d', epoch))
  redis.call('DEL', KEYS[6])
  redis.call('HSET', KEYS[6], 'node', me, 'instance', token, 'epoch', string.format('%d', epoch), 'confirmed', ARGV[6])
  event('leader_elected', me, epoch, ARGV[4], 'redlock')
end
redis.call('PEXPIRE', KEYS[6], ARGV[2])
return {'ok', epoch, redis.call('HGET', KEYS[6], 'confirmed') == '1' and 1 or 0}
""")

# FAILOVER_SCAN: the leader's sweep of one page of members, fenced by the lease:
# marks members whose heartbeat key has expired as offline, once, with an event.
# Acts only as the process that holds the lease in a confirmed term at Redis's epoch (the
# same test as FENCE): a term WAIT has not confirmed yet, or one a bootstrap round made
# stale, sweeps nothing.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] nodes hash, KEYS[4] events stream, KEYS[5] hb:{me},
# KEYS[6] term
# ARGV[1] me, ARGV[2] my epoch ('' on the first page: whatever epoch I hold now),
# ARGV[3] HSCAN cursor, ARGV[4] page size, ARGV[5] events maxlen, ARGV[6] this process's instance
# token (see ELECT)
# Returns {'vacant'} | {'follower', holder} | {'stale'} (my heartbeat expired) |
#         {'collision', host, pid} (another live process claims my node id and holds its record) |
#         {'fenced', epoch} (my epoch is gone, or the term is another process's or stale) |
#         {'unconfirmed', epoch} (replicas have not confirmed my term yet) |
#         {'leader', epoch, next cursor, {newly offline ids}}
FAILOVER_SCAN = Script(_TYPE_GUARD + _OTHER_INSTANCE + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[4]
""" + _EVENT + """
local err = expect(KEYS[1], 'string') or expect(KEYS[2], 'string') or expect(KEYS[3], 'hash')
  or expect(KEYS[4], 'stream') or expect(KEYS[6], 'hash')
if err then return err end
local me = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if not holder then return {'vacant'} end
if holder ~= me then return {'follower', holder} end
local other = other_instance(KEYS[3], me, ARGV[6])
if other then return {'collision', tostring(other.host or '?'), tostring(other.pid or '?')} end
if redis.call('EXISTS', KEYS[5]) == 0 then return {'stale'} end
local epoch = redis.call('GET', KEYS[2]) or '0'
if ARGV[2] ~= '' and ARGV[2] ~= epoch then return {'fenced', epoch} end
local term = redis.call('HMGET', KEYS[6], 'instance', 'epoch', 'confirmed')
if term[1] ~= ARGV[6] or term[2] ~= epoch then return {'fenced', epoch} end
if term[3] ~= '1' then return {'unconfirmed', epoch} end
local page = redis.call('HSCAN', KEYS[3], ARGV[3], 'COUNT', ARGV[4])
local fields, marked = page[2], {}
local t = redis.call('TIME')
local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
for i = 1, #fields, 2 do
  local id, raw = fields[i], fields[i + 1]
  local ok, rec = pcall(cjson.decode, raw)
  -- only JSON objects are member records: a foreign array decodes to a table too, and must be left alone
  if ok and type(rec) == 'table' and string.sub(raw, 1, 1) == '{' and (rec.status == 'online' or rec.status == nil)
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
# its heartbeat key and marks its record ``left``. Only as the process that owns the record
# (its instance token): a second process with the same node id (a copied config) that stops
# or deregisters changes nothing; the lease goes only with its term's instance too.
# With no record for the node id (pruned, or deleted by an operator) nothing proves the id is this
# process's: its heartbeat key is left alone, and the lease goes only if its term names this
# process's instance token.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] hb:{me}, KEYS[4] nodes, KEYS[5] events, KEYS[6] term
# ARGV[1] me, ARGV[2] events maxlen, ARGV[3] this process's instance token
# Returns {'left', released lease (0/1), had record (0/1)} |
#         {'collision', host, pid} (the record is another instance's: nothing changed).
LEAVE = Script(_TYPE_GUARD + _OTHER_INSTANCE + """
redis.replicate_commands()
local EVENTS_KEY = KEYS[5]
""" + _EVENT + """
local err = expect(KEYS[4], 'hash') or expect(KEYS[6], 'hash')
if err then return err end
local me = ARGV[1]
local other = other_instance(KEYS[4], me, ARGV[3])
if other then return {'collision', tostring(other.host or '?'), tostring(other.pid or '?')} end
local epoch = redis.call('GET', KEYS[2]) or '0'
local released = 0
local raw = redis.call('HGET', KEYS[4], me)
local term_instance = redis.call('HGET', KEYS[6], 'instance')
if redis.call('GET', KEYS[1]) == me and (term_instance == ARGV[3] or (raw and not term_instance)) then
  redis.call('DEL', KEYS[1], KEYS[6])
  released = 1
  event('leader_released', me, epoch, ARGV[2], 'node left')
end
if not raw then return {'left', released, 0} end
redis.call('DEL', KEYS[3])
local t = redis.call('TIME')
local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local body = string.gsub(raw, '"status":"[a-z]*"', '"status":"left"', 1)
redis.call('HSET', KEYS[4], me, string.sub(body, 1, -2) .. ',"left_at":' .. at .. '}')
event('node_left', me, epoch, ARGV[2])
return {'left', released, 1}
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
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] term, KEYS[4] state hash
# ARGV[1] me, ARGV[2] my epoch, ARGV[3] my instance token,
# ARGV[4] content: compact JSON object whose keys all sort before "updated" (it must carry
#         "epoch" = ARGV[2]); ARGV[5], ARGV[6] the epoch and version of the caller's mirror
# The version goes up and "updated" (Redis clock) is stamped only when the content changed.
# Returns {'published'|'unchanged', epoch, version, doc or nil (nil: the caller's mirror is current)}.
# Refuses with FENCED (not the leader at that epoch) or STALE (a snapshot of a higher epoch is there).
PUBLISH_STATE = Script(FENCE + """
local err = expect(KEYS[4], 'hash')
if err then return err end
local cur = redis.call('HMGET', KEYS[4], 'epoch', 'version', 'content')
if tonumber(cur[1] or '0') > tonumber(ARGV[2]) then
  return redis.error_reply('STALE the published snapshot is at epoch ' .. cur[1] .. ', above ' .. ARGV[2])
end
local version, outcome = tonumber(cur[2] or '0'), 'unchanged'
if cur[3] ~= ARGV[4] then
  version, outcome = version + 1, 'published'
  local now = string.format('%.3f', now_s())
  local doc = string.sub(ARGV[4], 1, -2) .. ',"updated":' .. now .. ',"version":' .. version .. '}'
  redis.call('HSET', KEYS[4], 'content', ARGV[4], 'doc', doc, 'epoch', ARGV[2], 'version', version,
             'updated', now)
end
local doc = false
if ARGV[5] ~= ARGV[2] or tonumber(ARGV[6]) ~= version then doc = redis.call('HGET', KEYS[4], 'doc') end
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


# -- tasks ----------------------------------------------------------------------
# The task queue's scripts (scripts/taskq.py holds the state machine they implement).
# Every task script shares one header, so the library below can name its keys:
#   KEYS[K..K+6]  pending index, running index, done index, dead index, delayed zset,
#                 dead-letter stream, set of task streams
#   ARGV[H..H+7]  me (node id), consumer group, task hash key prefix, idempotency key prefix,
#                 backoff base ms, backoff max ms, done/dead retention ms, stream maxlen
# Plain scripts have K = H = 1 (their own keys from KEYS[8], arguments from ARGV[9]);
# the fenced RECLAIM has K = H = 4 (FENCE's own three come first), its own from KEYS[11]/ARGV[12].
# Task hashes and idempotency keys are named inside the scripts from those prefixes, and a
# stream entry's body is only {task = id}: the task hash is the truth, the stream delivers.

def _task_lib(first_key: int, first_arg: int) -> str:
    return """
local K, H = %d, %d
""" % (first_key, first_arg) + """
local IDX_PENDING, IDX_RUNNING, IDX_DONE, IDX_DEAD = KEYS[K], KEYS[K + 1], KEYS[K + 2], KEYS[K + 3]
local DELAYED, DEAD_STREAM, STREAMS = KEYS[K + 4], KEYS[K + 5], KEYS[K + 6]
local ME, GROUP, TASK_PFX, IDEM_PFX = ARGV[H], ARGV[H + 1], ARGV[H + 2], ARGV[H + 3]
local BACKOFF_BASE_MS, BACKOFF_MAX_MS = tonumber(ARGV[H + 4]), tonumber(ARGV[H + 5])
local DONE_TTL_MS, STREAM_MAXLEN = tonumber(ARGV[H + 6]), tonumber(ARGV[H + 7])
local CLOCK = redis.call('TIME')
local NOW = tonumber(CLOCK[1]) * 1000 + math.floor(tonumber(CLOCK[2]) / 1000)

local function header_type_error()
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

-- -> pending: a new stream entry now, or the delayed zset when a backoff applies.
local function to_pending(id, delay_ms)
  local t = task_key(id)
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
-- claim, renewed by its worker (TASK_RENEW); each also writes the task's `lease_until_ms` (Redis
-- TIME + the lease's ttl) and the claim `lease_of` (the attempt's token). A running attempt is
-- moved (reclaimed, or counted as interrupted) only once its lease lapsed: the key no longer names
-- the attempt AND Redis's clock is past lease_until_ms (a key deleted by hand, or lost in a
-- failover, moves nothing before then); its handler has been killed by then (child.py).
-- An attempt whose lease_of is not its token was claimed by a release before the attempt lease
-- (a rolling upgrade): 'pre', moved only by the old rule (its node's heartbeat gone, or past its
-- deadline + tasks.reclaim_grace_s). A lease key of another type is never an error: before
-- lease_until_ms it counts as held; after it, it is deleted (an event names it) and lapsed.
local EVENTS_KEY, EVENTS_MAXLEN = nil, 0
""" + _EVENT + """
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
"""


_TASK_PLAIN = _TYPE_GUARD + "\nredis.replicate_commands()\n" + _task_lib(1, 1) + """
local type_error = header_type_error()
if type_error then return type_error end
"""

# TASK_SUBMIT: create a task (pending, with a stream entry) unless its idempotency key is taken.
# KEYS[1..7] task header, KEYS[8] the stream it goes to, KEYS[9] nodes hash, KEYS[10] routes set
# ARGV[1..8] task header, ARGV[9] task id, ARGV[10] type, ARGV[11] payload, ARGV[12] target node
#   ('' = any), ARGV[13] idempotency key ('' = none), ARGV[14] max attempts, ARGV[15] timeout ms,
#   ARGV[16] requirement (labels the runner needs, sorted and joined by ','; '' = none)
# Returns {'created' | 'duplicate', task id, 1 if the target node is a known member (or none) else 0}.
# An untargeted task with a requirement goes to that requirement's route stream (KEYS[8]), and
# the requirement joins the routes set, where qualified workers find it (TASK_PREPARE).
TASK_SUBMIT = Script(_TASK_PLAIN + """
local routes_error = expect(KEYS[10], 'set')
if routes_error then return routes_error end
local id, key, target, requirement = ARGV[9], ARGV[13], ARGV[12], ARGV[16]
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
if requirement ~= '' and target == '' then redis.call('SADD', KEYS[10], requirement) end
to_pending(id, 0)
return {'created', id, known}
""")

# TASK_PREPARE: before a worker reads: make sure its streams have the group, give the
# retries that are due a stream entry, and name the routes this worker qualifies for.
# KEYS[1..7] task header, KEYS[8] routes set, KEYS[9..] the streams the worker reads
# ARGV[1..8] task header, ARGV[9] most retries to promote, ARGV[10..] the labels the worker
#   offers (its node.labels and capabilities)
# Returns {retries promoted, {requirement, ...}}: every requirement in the routes set whose
# labels the worker all offers, sorted (the worker reads their streams from then on).
TASK_PREPARE = Script(_TASK_PLAIN + """
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
""")

# The worker's scripts (CLAIM, FINISH, RELEASE) act as node ME only for the process whose
# instance token the node's record names (see HEARTBEAT): a second process with a taken
# node id gets a 'COLLISION host <h>, pid <p>' error reply and changes nothing.
_TASK_WORKER = _TASK_PLAIN + _OTHER_INSTANCE + """
local function refused(nodes_key, token)
  local other = other_instance(nodes_key, ME, token)
  if other then
    return redis.error_reply('COLLISION host ' .. tostring(other.host or '?') .. ', pid ' .. tostring(other.pid or '?'))
  end
end
"""

# TASK_CLAIM: start the first pending task delivered to this worker (its entries in the
# group's pending list, XPENDING, in stream order). Entries of tasks that moved on are
# acked; an entry whose task is still `running` here, taken by this instance (its token on the
# task) and whose attempt lease lapsed, is an attempt a crashed earlier run left behind: it counts
# as failed (retry or dead). One whose lease holds is left alone (its worker still renews it), and
# so is one another instance with this node id took (the leader's reclaim moves it once it lapsed).
# A 'pre' attempt (claimed here by a release before the attempt lease, so no instance of its own)
# counts as interrupted at once, as that release's claim did (the node's record names this instance).
# KEYS[1..7] task header, KEYS[8] nodes hash, KEYS[9] events stream, KEYS[10..] the streams the
#   worker reads, in priority order
# ARGV[1..8] task header, ARGV[9] pending entries examined per stream, ARGV[10] instance token,
#   ARGV[11] attempt lease key prefix (keys.task_lease('')), ARGV[12] attempt lease ms (node.heartbeat_ttl),
#   ARGV[13] events maxlen
# Returns {task, waiting, interrupted}: task = {id, type, payload, attempt, max attempts,
# timeout ms, token, stream, entry id} or {}; waiting = further delivered entries not started;
# interrupted = {id, 'retry' | 'dead', ...}; or a COLLISION error (see _TASK_WORKER).
TASK_CLAIM = Script(_TASK_WORKER + """
local collision = refused(KEYS[8], ARGV[10])
if collision then return collision end
EVENTS_KEY, EVENTS_MAXLEN = KEYS[9], ARGV[13]
local claimed, waiting, interrupted = {}, 0, {}
for i = 10, #KEYS do
  local stream = KEYS[i]
  local pel = redis.pcall('XPENDING', stream, GROUP, '-', '+', tonumber(ARGV[9]), ME)
  if not failed(pel) then
    for _, p in ipairs(pel) do
      local eid = p[1]
      local id = entry_task(stream, eid)
      local f = id and redis.call('HMGET', task_key(id), 'state', 'entry', 'worker', 'attempts', 'instance') or {}
      if f[2] == eid and f[1] == 'pending' then
        if #claimed == 0 then
          claimed = start_attempt(id, stream, eid, ARGV[11] .. id, tonumber(ARGV[12]), ARGV[10])
        else
          waiting = waiting + 1
        end
      elseif f[2] == eid and f[1] == 'running' and f[3] == ME
          and ((f[5] and f[5] ~= ARGV[10]) or lease_state(ARGV[11] .. id, task_key(id)) == 'held') then
        -- running elsewhere (another instance) or still renewed: not ours to move
      else
        redis.call('XACK', stream, GROUP, eid)
        if f[2] == eid and f[1] == 'running' and f[3] == ME then
          interrupted[#interrupted + 1] = id
          interrupted[#interrupted + 1] = fail_attempt(id, 'attempt ' .. f[4] .. ' on ' .. ME
            .. ' was interrupted before it reported a result (worker crashed or was killed)')
        end
      end
    end
  end
end
return {claimed, waiting, interrupted}
""")

# TASK_FINISH: store an attempt's outcome, only if the attempt is still the task's current one.
# KEYS[1..7] task header, KEYS[8] the entry's stream, KEYS[9] nodes hash
# ARGV[1..8] task header, ARGV[9] task id, ARGV[10] attempt token, ARGV[11] entry id,
#   ARGV[12] 'ok' | 'fail', ARGV[13] result (ok) or error (fail), ARGV[14] 1 if the result was truncated,
#   ARGV[15] bytes of output the handler wrote (kept or not), ARGV[16] instance token
# Returns {'done'} | {'retry'} | {'dead'} | {'stale', current state, current token}
# (stale: the attempt was reclaimed or handed back meanwhile; nothing is overwritten),
# or a COLLISION error (see _TASK_WORKER).
TASK_FINISH = Script(_TASK_WORKER + """
local collision = refused(KEYS[9], ARGV[16])
if collision then return collision end
local id, token, eid = ARGV[9], ARGV[10], ARGV[11]
local f = redis.call('HMGET', task_key(id), 'state', 'token', 'entry')
if f[1] ~= 'running' or f[2] ~= token then
  if f[3] ~= eid then redis.call('XACK', KEYS[8], GROUP, eid) end
  return {'stale', f[1] or 'missing', f[2] or ''}
end
redis.call('XACK', KEYS[8], GROUP, eid)
redis.call('HSET', task_key(id), 'output_bytes', ARGV[15])
if ARGV[12] == 'ok' then
  to_done(id, ARGV[13], ARGV[14])
  return {'done'}
end
return {fail_attempt(id, ARGV[13])}
""")

# TASK_RELEASE: give back the entries delivered to this worker: the ones not started yet
# (mode 'unstarted', end of a tick), or all of them (mode 'all', the node leaves: running
# attempts are handed back too, without counting as failed). Each goes back to the queue
# with a new entry at once.
# KEYS[1..7] task header, KEYS[8] nodes hash, KEYS[9..] the worker's streams
# ARGV[1..8] task header, ARGV[9] 'unstarted' | 'all', ARGV[10] instance token
# Returns the ids handed back, or a COLLISION error (see _TASK_WORKER).
TASK_RELEASE = Script(_TASK_WORKER + """
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
""")

# TASK_RECLAIM: the leader's sweep, fenced by the lease. In order:
#   1. entries pending on consumers whose hb:<id> key is gone: XCLAIM to the leader, XACK,
#      the task to the retry path (a started attempt counts as failed; one never started
#      is re-queued); entries idle past their task's timeout + grace on live consumers too;
#      but an entry whose task runs under an attempt lease that holds is left alone (its
#      worker renews it while the handler runs, whether or not its heartbeat goes on);
#   2. running tasks in the running index whose attempt lease lapsed, whatever their entry
#      (acked or lost): the same retry path (the BATCH with the earliest deadlines per call);
#      a 'pre' attempt (claimed by a release before the attempt lease) only by the old rule:
#      its worker's hb key gone, or past its deadline + grace;
#   3. pending tasks whose entry can no longer be delivered (deleted or lost): re-queued;
#      SWEEP_MAX of them per call, from a cursor kept in KEYS[11] (a rank in the pending
#      index, back to 0 at its end), so tasks that wait long (for an absent node) never
#      hide a lost entry behind them: every pending task is looked at within
#      ceil(pending / SWEEP_MAX) calls;
#   4. done/dead index members past the retention (their records expire by themselves).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] term, KEYS[4..10] task header, KEYS[11] sweep cursor
# ARGV[1] me, ARGV[2] my epoch, ARGV[3] my instance token, ARGV[4..11] task header, ARGV[12] grace ms,
#   ARGV[13] batch (entries or tasks per step), ARGV[14] heartbeat key prefix,
#   ARGV[15] attempt lease key prefix (keys.task_lease('')), ARGV[16] events maxlen; KEYS[12] events stream
# Returns {more (1 if a batch was full), {id, outcome, reason, ...}}; FENCED error if not leader.
TASK_RECLAIM = Script(FENCE + _task_lib(4, 4) + """
local type_error = header_type_error()
if type_error then return type_error end
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
""")

# TASK_RENEW: extend a running attempt's lease (the key's TTL and the task's lease_until_ms), only
# while the task still runs that attempt (the value names the attempt's token and the instance that
# claimed it; a lapsed lease is not renewed). A key gone (DEL, a failover that lost it) or of
# another type (deleted; an event names it) while Redis's clock is not past lease_until_ms is
# written back: nothing can have moved the attempt before then.
# KEYS[1] the attempt lease (keys.task_lease), KEYS[2] the task hash, KEYS[3] events stream
# ARGV[1] '<token> <instance token>', ARGV[2] lease ms, ARGV[3] events maxlen, ARGV[4] node id
# Returns 1 (renewed) or 0 (lost: lapsed, or the attempt was finished, reclaimed or handed back).
TASK_RENEW = Script("""
redis.replicate_commands()
local EVENTS_KEY = KEYS[3]
""" + _EVENT + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[2], 'state', 'token', 'instance', 'lease_of', 'lease_until_ms')
if f[1] ~= 'running' or not f[2] or f[4] ~= f[2] or tostring(f[2]) .. ' ' .. tostring(f[3] or '') ~= ARGV[1] then
  return 0
end
local kind = redis.call('TYPE', KEYS[1]).ok
if not (kind == 'string' and redis.call('GET', KEYS[1]) == ARGV[1]) then
  local lease_until = tonumber(f[5])
  if not lease_until or now > lease_until then return 0 end
  if kind ~= 'string' and kind ~= 'none' then
    redis.call('DEL', KEYS[1])
    event('task_lease_wrong_type', ARGV[4], 0, ARGV[3], KEYS[1] .. ' was a ' .. kind
      .. ', not the attempt lease of ' .. f[2] .. ': replaced by it')
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('HSET', KEYS[2], 'lease_until_ms', now + tonumber(ARGV[2]))
return 1
""")

# TASK_RETRY: put a dead-lettered task back in the queue with a fresh attempt budget.
# KEYS[1..7] task header; ARGV[1..8] task header, ARGV[9] task id
# Returns {'ok'} | {'missing'} | {'not_dead', state}.
TASK_RETRY = Script(_TASK_PLAIN + """
local id = ARGV[9]
local t = task_key(id)
local f = redis.call('HMGET', t, 'state', 'dead_entry', 'key')
if not f[1] then return {'missing'} end
if f[1] ~= 'dead' then return {'not_dead', f[1]} end
redis.call('PERSIST', t)
if f[3] and f[3] ~= '' and redis.call('GET', IDEM_PFX .. f[3]) == id then redis.call('PERSIST', IDEM_PFX .. f[3]) end
if f[2] then redis.call('XDEL', DEAD_STREAM, f[2]) end
redis.call('HDEL', t, 'dead_entry', 'finished_ms')
redis.call('HSET', t, 'attempts', 0)
redis.call('ZREM', IDX_DEAD, id)
to_pending(id, 0)
return {'ok'}
""")

# TASK_PURGE: delete done (or dead) tasks that ended at least a given age ago: record,
# idempotency key, dead-letter entry, index member.
# KEYS[1..7] task header; ARGV[1..8] task header, ARGV[9] 'done' | 'dead', ARGV[10] minimum
#   age ms, ARGV[11] most tasks examined in this call
# Returns {records deleted, index members examined}.
TASK_PURGE = Script(_TASK_PLAIN + """
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
    if f[1] then
      redis.call('DEL', t)
      removed = removed + 1
    end
  end
  redis.call('ZREM', index, id)
end
return {removed, #ids}
""")

# TASK_RECORD: a task's record for status, without a payload that may be large (a reply
# has a size bound): the payload's size always, the payload only when it is small enough.
# KEYS[1] the task's hash; ARGV[1] the most payload bytes returned
# Returns a flat {field, value, ...} list with 'payload_bytes' (and 'payload' when at most
#   ARGV[1] bytes); empty when there is no record.
TASK_RECORD = Script(_TYPE_GUARD + """
local bad = expect(KEYS[1], 'hash')
if bad then return bad end
local names = redis.call('HKEYS', KEYS[1])
local fields = {}
for _, name in ipairs(names) do
  if name ~= 'payload' then fields[#fields + 1] = name end
end
local out = {}
if #fields > 0 then
  local values = redis.call('HMGET', KEYS[1], unpack(fields))
  for i, name in ipairs(fields) do
    out[#out + 1] = name
    out[#out + 1] = values[i]
  end
end
if #fields < #names then
  local size = redis.call('HSTRLEN', KEYS[1], 'payload')
  out[#out + 1] = 'payload_bytes'
  out[#out + 1] = tostring(size)
  if size <= tonumber(ARGV[1]) then
    out[#out + 1] = 'payload'
    out[#out + 1] = redis.call('HGET', KEYS[1], 'payload')
  end
end
return out
""")
# -- end tasks ------------------------------------------------------------------
