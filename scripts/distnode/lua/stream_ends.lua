-- stream_ends: where each stream ends, as a blocking reader's starting position: the id of the
-- last entry it ever got (XINFO's last-generated-id), not of its last live one. Redis 5 answers
-- XREAD BLOCK at once, with no entry, from a position below the last generated id (the last
-- entries deleted), and the reader would spin; and an id alone costs nothing on the wire where
-- the last entry may be megabytes.
--
-- KEYS[1..] the streams
-- ARGV: none
-- Reply: one id per stream, in order; '0-0' for a missing stream. A WRONGTYPE error naming the key
--   for one that is not a stream.
--- @include "type_guard"
redis.replicate_commands()
local ends = {}
for i = 1, #KEYS do
  local err = expect(KEYS[i], 'stream')
  if err then return err end
  ends[i] = '0-0'
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[i])
    for j = 1, #info - 1, 2 do
      if info[j] == 'last-generated-id' then ends[i] = info[j + 1] end
    end
  end
end
return ends
