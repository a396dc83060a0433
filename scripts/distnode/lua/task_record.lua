-- task_record: a task's record for status, without a payload that may be large (a reply
-- has a size bound): the payload's size always, the payload only when it is small enough.
--
-- KEYS[1] the task's hash
-- ARGV[1] the most payload bytes returned
-- Reply: a flat {field, value, ...} list with 'payload_bytes' (and 'payload' when at most
--   ARGV[1] bytes); empty when there is no record.
--- @include "type_guard"
local bad = expect(KEYS[1], 'hash')
if bad then return bad end
local names = redis.call('HKEYS', KEYS[1])
local fields = {}
for _, name in ipairs(names) do
  if name ~= 'payload' then fields[#fields + 1] = name end
end
local out = {}
if #fields > 0 then
  local values = redis.call('HMGET', KEYS[1], unpack(fields))
  for i, name in ipairs(fields) do
    out[#out + 1] = name
    out[#out + 1] = values[i]
  end
end
if #fields < #names then
  local size = redis.call('HSTRLEN', KEYS[1], 'payload')
  out[#out + 1] = 'payload_bytes'
  out[#out + 1] = tostring(size)
  if size <= tonumber(ARGV[1]) then
    out[#out + 1] = 'payload'
    out[#out + 1] = redis.call('HGET', KEYS[1], 'payload')
  end
end
return out
