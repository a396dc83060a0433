-- prune: forget members that are gone (offline or left) since longer than a given age.
-- A member whose heartbeat key exists is never pruned.
--
-- KEYS[1] nodes hash
-- ARGV[1] minimum age in seconds (by Redis's clock)
-- Reply: the pruned ids.
--- @include "type_guard"
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
