-- task_retry: put a dead-lettered task back in the queue with a fresh attempt budget.
-- A retry records the task it put back under its operation token (KEYS[8], for ARGV[10] ms):
-- the same retry sent again after its reply was lost finds the record and answers {'ok'},
-- not {'not_dead', 'pending'}, and puts nothing back twice.
--
-- KEYS[1..7] task header (include task_lib)
-- KEYS[8] op:<the caller's operation token> (under the task prefix)
-- ARGV[1..8] task header (include task_lib)
-- ARGV[9] task id
-- ARGV[10] how long the operation's record lives (ms; longer than the caller goes on retrying)
-- ARGV[11] the end latch's key prefix (keys.task_ended(''); include task_lib)
-- ARGV[12] the end latch's ttl ms
-- Reply: {'ok'} (put back now, or by this operation before) | {'missing'} | {'not_dead', state}.
--- @include "task_lib"
redis.replicate_commands()
local type_error = task_header(1, 1) or expect(KEYS[8], 'string')
if type_error then return type_error end
end_latch(11)
local id = ARGV[9]
if redis.call('GET', KEYS[8]) == id then return {'ok'} end
local t = task_key(id)
local f = redis.call('HMGET', t, 'state', 'dead_entry', 'key')
if not f[1] then return {'missing'} end
if f[1] ~= 'dead' then return {'not_dead', f[1]} end
redis.call('PERSIST', t)
if f[3] and f[3] ~= '' and redis.call('GET', IDEM_PFX .. f[3]) == id then redis.call('PERSIST', IDEM_PFX .. f[3]) end
if f[2] then redis.call('XDEL', DEAD_STREAM, f[2]) end
redis.call('HDEL', t, 'dead_entry', 'finished_ms')
redis.call('HSET', t, 'attempts', 0)
redis.call('ZREM', IDX_DEAD, id)
to_pending(id, 0)
redis.call('SET', KEYS[8], id, 'PX', ARGV[10])
return {'ok'}
