-- include fence: the lease fence every fenced script runs before its first write.
-- KEYS[1] leader, KEYS[2] epoch, KEYS[3] term hash; ARGV[1] the writer's node id, ARGV[2] the
-- writer's epoch, ARGV[3] the writer's instance token; a fenced script's own keys and arguments
-- start at KEYS[4] and ARGV[4].
-- fence(confirmed_only) -> a FENCED error reply unless the writer still holds the lease at that
-- epoch, as the process that took it (the term's instance: a second process with the same node id
-- is refused), in a term that is confirmed (with election.min_replicas_acked, only once WAIT
-- confirmed it; confirmed_only false admits an unconfirmed term: only the scripts that confirm a
-- term pass false), else nil. So a paused or partitioned old leader, a duplicate node id or an
-- unconfirmed term changes nothing.
-- now_s() -> Redis's clock in seconds (the caller has called redis.replicate_commands()).
--- @include "type_guard"
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fence(confirmed_only)
  local fence_type_error = expect(KEYS[3], 'hash')
  if fence_type_error then return fence_type_error end
  local fence_holder = redis.call('GET', KEYS[1])
  local fence_epoch = redis.call('GET', KEYS[2])
  local fence_term = redis.call('HMGET', KEYS[3], 'instance', 'epoch', 'confirmed')
  local fence_why = nil
  if fence_holder ~= ARGV[1] or fence_epoch ~= ARGV[2] then
    fence_why = 'leader: ' .. tostring(fence_holder or 'none') .. ', epoch ' .. tostring(fence_epoch or 'none')
  elseif fence_term[1] ~= ARGV[3] then
    fence_why = 'the term belongs to another process with this node id'
  elseif fence_term[2] ~= ARGV[2] then
    fence_why = 'the term is at epoch ' .. tostring(fence_term[2] or 'none') .. ': a new term is due'
  elseif confirmed_only and fence_term[3] ~= '1' then
    fence_why = 'the term is not confirmed by replicas yet'
  end
  if fence_why then
    return redis.error_reply('FENCED ' .. ARGV[1] .. ' at epoch ' .. ARGV[2] .. ' is not the leader (' .. fence_why
      .. ')')
  end
end
