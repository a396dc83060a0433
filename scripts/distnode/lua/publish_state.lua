-- publish_state: the leader publishes the cluster snapshot, fenced by its lease.
-- The version goes up and "updated" (Redis clock) is stamped only when the content changed.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] term
-- KEYS[4] state hash
-- ARGV[1] me (node id)
-- ARGV[2] my epoch
-- ARGV[3] my instance token
-- ARGV[4] content: compact JSON object whose keys all sort before "updated" (it must carry
--         "epoch" = ARGV[2])
-- ARGV[5] the epoch of the caller's mirror
-- ARGV[6] the version of the caller's mirror
-- Reply: {'published'|'unchanged', epoch, version, doc or nil (nil: the caller's mirror is
--   current)}. Refuses with FENCED (not the leader at that epoch) or STALE (a snapshot of a
--   higher epoch is there).
--- @include "fence"
redis.replicate_commands()
local fenced = fence(true)
if fenced then return fenced end
local err = expect(KEYS[4], 'hash')
if err then return err end
local cur = redis.call('HMGET', KEYS[4], 'epoch', 'version', 'content')
if tonumber(cur[1] or '0') > tonumber(ARGV[2]) then
  return redis.error_reply('STALE the published snapshot is at epoch ' .. cur[1] .. ', above ' .. ARGV[2])
end
local version, outcome = tonumber(cur[2] or '0'), 'unchanged'
if cur[3] ~= ARGV[4] then
  version, outcome = version + 1, 'published'
  local now = string.format('%.3f', now_s())
  local doc = string.sub(ARGV[4], 1, -2) .. ',"updated":' .. now .. ',"version":' .. version .. '}'
  redis.call('HSET', KEYS[4], 'content', ARGV[4], 'doc', doc, 'epoch', ARGV[2], 'version', version,
             'updated', now)
end
local doc = false
if ARGV[5] ~= ARGV[2] or tonumber(ARGV[6]) ~= version then doc = redis.call('HGET', KEYS[4], 'doc') end
return {outcome, tonumber(ARGV[2]), version, doc}
