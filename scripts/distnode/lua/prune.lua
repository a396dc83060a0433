-- prune: forget members that are gone (offline or left) since longer than a given age, and on
-- request records that are not JSON objects (foreign values: they have no age).
-- A member whose heartbeat key exists is never pruned.
--
-- KEYS[1] nodes hash
-- ARGV[1] minimum age in seconds (by Redis's clock); '' prunes no member by age
-- ARGV[2] '1': also forget every record that is not a JSON object
-- Reply: the pruned ids.
--- @include "type_guard"
redis.replicate_commands()
local err = expect(KEYS[1], 'hash')
if err then return err end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local flat, pruned = redis.call('HGETALL', KEYS[1]), {}
local min_age = tonumber(ARGV[1])
for i = 1, #flat, 2 do
  local id, raw = flat[i], flat[i + 1]
  local ok, rec = pcall(cjson.decode, raw)
  local object = ok and type(rec) == 'table' and string.match(raw, '^%s*{') ~= nil
  if (object or ARGV[2] == '1') and redis.call('EXISTS', 'hb:' .. id) == 0 then
    local last = object and tonumber(rec.left_at or rec.offline_at or rec.last_heartbeat)
    if (not object) or (last and min_age and now - last >= min_age) then
      redis.call('HDEL', KEYS[1], id)
      pruned[#pruned + 1] = id
    end
  end
end
return pruned
