-- release: give the lease up at once (graceful leave, SIGTERM in loop mode), and stay out of
-- the next election for one lease, so another node takes over rather than this one again.
-- Only the process that took the lease can release it (the term's instance token): a second
-- process with the same node id that stops releases nothing.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] events stream
-- KEYS[4] released:{me}
-- KEYS[5] term
-- ARGV[1] me (node id)
-- ARGV[2] the term's epoch ('': whatever epoch this node holds the lease at)
-- ARGV[3] events maxlen
-- ARGV[4] lease ms
-- ARGV[5] this process's instance token
-- Reply: 1 if this node held the lease (in that term) and released it, else 0.
--- @include "type_guard"
--- @include "event"
redis.replicate_commands()
EVENTS_KEY = KEYS[3]

local err = expect(KEYS[5], 'hash')
if err then return err end
local epoch = redis.call('GET', KEYS[2]) or '0'
local term = redis.call('HMGET', KEYS[5], 'instance', 'epoch')
if redis.call('GET', KEYS[1]) ~= ARGV[1] or term[1] ~= ARGV[5] or (ARGV[2] ~= '' and term[2] ~= ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
event('leader_released', ARGV[1], epoch, ARGV[3])
return 1
