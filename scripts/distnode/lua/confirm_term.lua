-- confirm_term: a no-op write (the epoch set to itself), fenced but for the confirmation. Sent
-- with a WAIT right after it on the same connection, WAIT then counts the replicas that hold
-- everything up to it, the lease, epoch and term included, whichever connection wrote them
-- (replication is one ordered stream).
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] term
-- ARGV[1] me (node id)
-- ARGV[2] my epoch
-- ARGV[3] my instance token
-- Reply: the lease's PTTL in ms, or a FENCED error reply if the term is not mine at that epoch.
--- @include "fence"
redis.replicate_commands()
local fenced = fence(false)
if fenced then return fenced end
redis.call('SET', KEYS[2], ARGV[2])
return redis.call('PTTL', KEYS[1])
