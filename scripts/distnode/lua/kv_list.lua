-- kv_list: names in a lexical range of the index, with their versions and update times.
--
-- KEYS[1] kv index
-- ARGV[1] ZRANGEBYLEX lower bound
-- ARGV[2] ZRANGEBYLEX upper bound
-- ARGV[3] most names to return
-- ARGV[4] the prefix of entry keys (keys.kv(""))
-- Reply: a flat list {name, version, updated, ...}; a name whose entry is gone is skipped.
--- @include "type_guard"
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
