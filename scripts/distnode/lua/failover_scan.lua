-- failover_scan: the leader's sweep of one page of members, fenced by the lease:
-- marks members whose heartbeat key has expired as offline, once, with an event.
-- Acts only as the process that holds the lease in a confirmed term at Redis's epoch (the
-- same test as include fence): a term WAIT has not confirmed yet, or one a bootstrap round
-- made stale, sweeps nothing.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] nodes hash
-- KEYS[4] events stream
-- KEYS[5] hb:{me}
-- KEYS[6] term
-- ARGV[1] me (node id)
-- ARGV[2] my epoch ('' on the first page: whatever epoch I hold now)
-- ARGV[3] HSCAN cursor
-- ARGV[4] page size
-- ARGV[5] events maxlen
-- ARGV[6] this process's instance token (see elect.lua)
-- Reply: {'vacant'} | {'follower', holder} | {'stale'} (my heartbeat expired) |
--   {'collision', host, pid} (another live process claims my node id and holds its record) |
--   {'fenced', epoch} (my epoch is gone, or the term is another process's or stale) |
--   {'unconfirmed', epoch} (replicas have not confirmed my term yet) |
--   {'leader', epoch, next cursor, {newly offline ids}}
--- @include "type_guard"
--- @include "other_instance"
--- @include "event"
redis.replicate_commands()
EVENTS_KEY = KEYS[4]

local err = expect(KEYS[1], 'string') or expect(KEYS[2], 'string') or expect(KEYS[3], 'hash')
  or expect(KEYS[4], 'stream') or expect(KEYS[6], 'hash')
if err then return err end
local me = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if not holder then return {'vacant'} end
if holder ~= me then return {'follower', holder} end
if redis.call('EXISTS', KEYS[5]) == 0 then return {'stale'} end  -- before: a lapsed record is no duplicate
local other = other_instance(KEYS[3], me, ARGV[6])
if other then return {'collision', tostring(other.host or '?'), tostring(other.pid or '?')} end
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
