-- leave: this node leaves the cluster gracefully, in one atomic step: releases the
-- lease if it holds it (so another node takes over in one tick, not one TTL), deletes
-- its heartbeat key and marks its record ``left`` (one ``left_at``, however often it leaves; a
-- record that is not a JSON object is replaced by one that is). Only as the process that owns the record
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
local ok, rec = pcall(cjson.decode, raw)
local body
if ok and type(rec) == 'table' and string.match(raw, '^%s*{.*}%s*$') then
  -- a leave repeated (deregister run twice) replaces the time it left: the record keeps one left_at
  local number = '[-+.%deE]*'
  body = string.gsub(raw, ',"left_at":' .. number, '')
  body = string.gsub(string.gsub(body, '^(%s*{)"left_at":' .. number .. ',', '%1'), '^(%s*{)"left_at":' .. number, '%1')
  body = string.gsub(body, '"status":"[a-z]*"', '"status":"left"', 1)
  local fields = ',"left_at":' .. at .. '}'
  if not string.find(body, '"status":"left"', 1, true) then fields = ',"status":"left"' .. fields end
  if string.match(body, '^%s*{%s*}%s*$') then fields = string.sub(fields, 2) end
  body = string.gsub(body, '}%s*$', '') .. fields
else  -- not a JSON object (a foreign value under our id): a record that is JSON again
  body = '{"id":' .. cjson.encode(me) .. ',"status":"left","left_at":' .. at .. '}'
end
redis.call('HSET', KEYS[4], me, body)
event('node_left', me, epoch, ARGV[2])
return {'left', released, 1}
