-- elect: one election step for one node, atomically: renew the lease if held, otherwise
-- acquire it if vacant and this node is eligible. The numbered steps are those of the
-- elector's docstring (cluster/elector.py); step 7 is the caller's (confirm_term, accept_term).
-- The master changed (a Sentinel failover, a restart from files) when KEYS[9], replicated with
-- the data, names another server than this one's run_id (INFO server; nothing is detected if a
-- script may not run INFO): whichever node steps first notices, whatever it remembers.
-- A bootstrap round (KEYS[6], one heartbeat interval; nobody is elected and no new term starts
-- while it runs, so every live node's heartbeat can raise the epoch to the highest it
-- remembers) starts when Redis has no epoch, when its epoch is below what this node remembers
-- (then raised to it), or when the master changed: a failover to a lagging replica must not
-- hand out an epoch some node already saw, whichever node steps first.
-- The term (KEYS[8]) is written with the lease, expires with it and is deleted with it; the
-- lease holder renews only as the instance that took it. A term whose epoch is no longer
-- Redis's (raised after a data loss), or that ran when the master changed, is stale: its holder
-- keeps the lease through the round, fenced, then starts a new term at a new epoch.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] hb:{me}
-- KEYS[4] nodes hash
-- KEYS[5] events stream
-- KEYS[6] bootstrap
-- KEYS[7] released:{me}
-- KEYS[8] term
-- KEYS[9] server (run_id of the last master)
-- ARGV[1] me (node id)
-- ARGV[2] lease ms
-- ARGV[3] highest epoch this node remembers
-- ARGV[4] events maxlen
-- ARGV[5] bootstrap wait ms (one heartbeat interval)
-- ARGV[6] this process's instance token (membership.node_fields)
-- ARGV[7] a new term's ``confirmed``: '1', or '0' when replicas must confirm it first
--         (election.min_replicas_acked)
-- Reply: {outcome, leader, epoch, lease pttl ms, confirmed (1/0), this server's run_id} where
--   outcome is one of
--   collision    while hb:{me} is live, this node's record names another instance token, or the
--                term of the lease held under this node id does and the record is not this
--                process's: another live process claims this node id; nothing was changed (it
--                must not renew or take that one's lease)
--   predecessor  the lease held under this node id is the term of an earlier process of this id
--                whose heartbeat lapsed (dead, or paused past heartbeat_ttl): hb:{me} lapsed, or
--                this process's heartbeat took the record over since (heartbeat.lua allows that
--                only after the other's hb: lapsed); nothing was changed: the lease lapses by
--                itself, then this process takes it at a new epoch
--   renewed      this node held the lease and extended it
--   acquired     this node took the vacant lease at a new epoch, or started a new term (new
--                epoch) under the lease it holds
--   follower     another node holds the lease
--   stepped_down this node held the lease but its own heartbeat had expired (or the lease had
--                no term): released
--   ineligible   the lease is vacant but this node is not registered and alive, or it has
--                just released the lease (graceful handover: another node takes it)
--   waiting      a bootstrap round runs: nobody is elected; a holder keeps its lease but leads
--                at no epoch (leader = me, fenced) until it starts a new term after the round
--- @include "type_guard"
--- @include "other_instance"
--- @include "epoch_guard"
--- @include "event"
redis.replicate_commands()
EVENTS_KEY = KEYS[5]
-- 1. check: keys of the expected types, an epoch key and a remembered epoch that are epochs; every
-- check comes before the first write: a script error does not undo earlier writes
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
local alive = redis.call('EXISTS', KEYS[3]) == 1
-- whether this node's record names this process (its heartbeat took the record over)
local function own_record()
  local ok, rec = pcall(cjson.decode, redis.call('HGET', KEYS[4], me) or 'null')
  return token ~= '' and ok and type(rec) == 'table' and rec.instance == token
end
-- 2. collision: the record names another instance while the id's heartbeat is live: a live
-- duplicate. A record whose heartbeat lapsed is a dead (or paused past its TTL) predecessor's,
-- which this process's next heartbeat takes over: no collision (a loop stepping before its
-- first beat must not exit).
if other_instance(KEYS[4], me, token) and alive then
  return {'collision', holder or '', epoch, 0, 0, run_id}
end
-- The lease held under this node id is another process's term. With the id's heartbeat lapsed,
-- or the record this process's (taken over once the other's heartbeat lapsed), that process is a
-- predecessor, dead or paused past its heartbeat: wait, writing nothing, until its lease lapses,
-- then take it at a new epoch (step 6); exiting would leave the id with no election at all.
-- A live heartbeat with a record that is not this process's: a live duplicate.
local term = redis.call('HMGET', KEYS[8], 'instance', 'epoch', 'confirmed')
if holder == me and term[1] and term[1] ~= token then
  if alive and not own_record() then
    return {'collision', holder, epoch, 0, 0, run_id}  -- the lease of my node id, taken by another process
  end
  return {'predecessor', holder, epoch, redis.call('PTTL', KEYS[1]), 0, run_id}
end
-- 3. the bootstrap round: no epoch, an epoch below the remembered one, or a new master
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
-- a new term at a new epoch (steps 4 and 6), written unconfirmed ('0') when replicas must
-- confirm it first (step 7, the caller's: confirm_term + WAIT, then accept_term)
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
-- 4. this node holds the lease: step down without a heartbeat, else extend it (a stale term:
-- waiting through the round, then a new term)
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
-- 5. another node holds it: follow
if holder then
  return {'follower', holder, epoch, redis.call('PTTL', KEYS[1]), 0, run_id}
end
-- 6. vacant: take it if registered, alive, not just released, and no round runs
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
