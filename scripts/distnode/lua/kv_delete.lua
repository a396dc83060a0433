-- kv_delete: delete one entry; with an expected version, only if the entry is at it.
-- A delete records the version it deleted under its operation token (KEYS[3], for ARGV[4] ms):
-- the same delete sent again after its reply was lost finds the record and returns
-- {'deleted', that version}, not 'missing' or a conflict.
--
-- KEYS[1] kv:<name>
-- KEYS[2] kv index
-- KEYS[3] kv-op:<the caller's operation token>
-- ARGV[1] name
-- ARGV[2] expected version ('': any)
-- ARGV[3] channel that announces the change
-- ARGV[4] how long the operation's record lives (ms; longer than the caller goes on retrying)
-- Reply: {'deleted', old version} (now, or by this operation before) | {'missing', 0} |
--        {'conflict', current version}.
--- @include "type_guard"
local err = expect(KEYS[1], 'hash') or expect(KEYS[2], 'zset') or expect(KEYS[3], 'string')
if err then return err end
local done = redis.call('GET', KEYS[3])
if done then return {'deleted', tonumber(done)} end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then return {'conflict', current} end
if current == 0 then return {'missing', 0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
redis.call('SET', KEYS[3], current, 'PX', ARGV[4])
return {'deleted', current}
