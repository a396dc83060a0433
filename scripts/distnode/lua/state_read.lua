-- state_read: a follower's one read per tick: the snapshot, only if its mirror is out of date.
--
-- KEYS[1] leader
-- KEYS[2] state hash
-- ARGV[1] the epoch of the caller's mirror
-- ARGV[2] the version of the caller's mirror
-- Reply: {leader or '', epoch, version (0: nothing published), doc or nil (nil: mirror current)}.
--- @include "type_guard"
local err = expect(KEYS[2], 'hash')
if err then return err end
local cur = redis.call('HMGET', KEYS[2], 'epoch', 'version')
local doc = false
if cur[2] and (cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2]) then doc = redis.call('HGET', KEYS[2], 'doc') end
return {redis.call('GET', KEYS[1]) or '', tonumber(cur[1] or '0'), tonumber(cur[2] or '0'), doc}
