-- accept_term: once WAIT confirmed it, the term may act: its ``confirmed`` becomes '1', and
-- fenced writes (include fence) pass from then on.
--
-- KEYS[1] leader
-- KEYS[2] epoch
-- KEYS[3] term
-- ARGV[1] me (node id)
-- ARGV[2] my epoch
-- ARGV[3] my instance token
-- Reply: 1, or a FENCED error reply if the term is not mine at that epoch.
--- @include "fence"
redis.replicate_commands()
local fenced = fence(false)
if fenced then return fenced end
redis.call('HSET', KEYS[3], 'confirmed', '1')
return 1
