-- kv_set: write one entry of the key-value store; with an expected version, only if the
-- entry is at that version (compare-and-set). Versions come from one counter, so they only
-- grow, also across a delete and re-create (no ABA for compare-and-set).
-- A write records what it did under its operation token (KEYS[4], for ARGV[4] ms): the same
-- write sent again after its reply was lost finds the record and returns it, and writes nothing.
--
-- KEYS[1] kv:<name>
-- KEYS[2] kv index
-- KEYS[3] kv version counter
-- KEYS[4] kv-op:<the caller's operation token>
-- ARGV[1] name
-- ARGV[2] value (JSON text)
-- ARGV[3] expected version ('': any; '0': must not exist)
-- ARGV[4] how long the operation's record lives (ms; longer than the caller goes on retrying)
-- ARGV[5] channel that announces the change (message: the name)
-- Reply: {'ok', version, updated} (written now, or by this operation before) |
--        {'conflict', current version (0: missing), updated or ''}.
--- @include "type_guard"
redis.replicate_commands()
local err = expect(KEYS[1], 'hash') or expect(KEYS[2], 'zset') or expect(KEYS[3], 'string')
  or expect(KEYS[4], 'string')
if err then return err end
local done = redis.call('GET', KEYS[4])
if done then
  local version, updated = string.match(done, '^(%d+) (.*)$')
  return {'ok', tonumber(version), updated}
end
local cur = redis.call('HMGET', KEYS[1], 'version', 'updated')
local current = tonumber(cur[1] or '0')
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= current then return {'conflict', current, cur[2] or ''} end
local version = redis.call('INCR', KEYS[3])
local t = redis.call('TIME')
local now = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'version', version, 'updated', now)
redis.call('HDEL', KEYS[1], 'op')  -- written by releases that kept the token in the entry
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
redis.call('SET', KEYS[4], string.format('%d %s', version, now), 'PX', ARGV[4])
return {'ok', version, now}
