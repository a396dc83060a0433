-- leave: this node leaves the cluster gracefully, in one atomic step: releases the
-- lease if it holds it (so another node takes over in one tick, not one TTL), deletes
-- its heartbeat key and marks its record ``left``. Only as the process that owns the record
-- (its instance token): a second process with the same node id (a copied config) that stops
-- or deregisters changes nothing; the lease goes only with its term's instance too.
-- With no record for the node id (pruned, or deleted by an operator) nothing proves the id is
-- this process's: its heartbeat key is left alone, and the lease goes only if its term names
-- this process's instance token.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] hb:{me}
-- KEYS[4] nodes hash
-- KEYS[5] events stream
-- KEYS[6] term
-- ARGV[1] me (node id)
-- ARGV[2] events maxlen
-- ARGV[3] this process's instance token
-- Reply: {'left', released lease (0/1), had record (0/1)} |
--   {'collision', host, pid} (the record is another instance's: nothing changed).
--- @include "type_guard"
--- @include "other_instance"
--- @include "event"
redis.replicate_commands()
EVENTS_KEY = KEYS[5]

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
