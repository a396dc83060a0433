-- task_renew: extend a running attempt's lease (the key's TTL and the task's lease_until_ms), only
-- while the task still runs that attempt (the value names the attempt's token and the instance that
-- claimed it; a lapsed lease is not renewed). A key gone (DEL, a failover that lost it) or of
-- another type (deleted; an event names it) while Redis's clock is not past lease_until_ms is
-- written back: nothing can have moved the attempt before then.
--
-- KEYS[1] the attempt lease (keys.task_lease)
-- KEYS[2] the task hash
-- KEYS[3] events stream
-- ARGV[1] '<token> <instance token>'
-- ARGV[2] lease ms
-- ARGV[3] events maxlen
-- ARGV[4] node id
-- Reply: 1 (renewed) or 0 (lost: lapsed, or the attempt was finished, reclaimed or handed back).
--- @include "event"
redis.replicate_commands()
EVENTS_KEY = KEYS[3]

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
