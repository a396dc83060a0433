-- redlock_claim: on one of several independent masters, take or extend the lease. A claim
-- names the process (instance token) that holds it, so another process with the same node id
-- is "other", never "mine"; the claim's epoch says which term it belongs to.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] redlock claim hash
-- ARGV[1] me (node id)
-- ARGV[2] lease ms
-- ARGV[3] this process's instance token
-- Reply: {'mine', epoch, claim epoch} (claim epoch 0: the claim is new, no term yet) |
--   {'other', holder, epoch}; a BADEPOCH error reply (that instance's vote is not won) if its
--   epoch key is not an epoch (include epoch_guard).
--- @include "epoch_guard"
local bad_epoch = epoch_error(KEYS[2])
if bad_epoch then return bad_epoch end
local holder = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
local inst = redis.call('HGET', KEYS[3], 'instance')
if holder and (holder ~= ARGV[1] or (inst and inst ~= ARGV[3])) then return {'other', holder, epoch} end
local claimed = holder and tonumber(redis.call('HGET', KEYS[3], 'epoch') or '0') or 0
if not holder then redis.call('DEL', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[3], 'instance', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {'mine', epoch, claimed}
