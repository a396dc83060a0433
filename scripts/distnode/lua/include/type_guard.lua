-- include type_guard: expect(key, want) -> a WRONGTYPE error reply naming ``key`` when it holds
-- something other than a ``want`` (a missing key passes), else nil.
local function expect(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. t .. ', expected a ' .. want)
  end
end
