-- redlock_announce: after winning a quorum, mirror the lease into the data Redis, where
-- fenced writes are checked, with what is left of the quorum's validity. Conditional:
-- - another node's lease (or another process's with this node id) is never overwritten;
-- - an epoch below the current one is refused, and so is the current one unless it is this
--   process's own running term (a renewal): after the instances lost their data a winner can
--   arrive at an epoch another node already led at, and must take a fresh one instead.
-- A new term writes the term hash (node, instance, epoch, confirmed); a renewal keeps it.
-- Both carry the same PTTL as the leader key.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] hb:{me}
-- KEYS[4] nodes hash
-- KEYS[5] events stream
-- KEYS[6] term
-- ARGV[1] me (node id)
-- ARGV[2] validity ms
-- ARGV[3] epoch
-- ARGV[4] events maxlen
-- ARGV[5] instance token
-- ARGV[6] a new term's confirmed field ('1', or '0' while min_replicas_acked must confirm it)
-- Reply: {'ok', epoch, 1 if the term is confirmed else 0} | {'stale', current epoch} |
--   {'ineligible', epoch} | {'held', current epoch, holder}.
--- @include "type_guard"
--- @include "epoch_guard"
--- @include "event"
redis.replicate_commands()
EVENTS_KEY = KEYS[5]

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
