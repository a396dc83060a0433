-- include event: event(kind, node, epoch, maxlen, extra) appends a cluster event to the stream
-- EVENTS_KEY (capped near ``maxlen``) and publishes it as JSON on the channel of the same name.
-- The including script sets EVENTS_KEY before its first event; it reads Redis's clock, so the
-- script has called redis.replicate_commands() first.
local EVENTS_KEY = nil
local function event(kind, node, epoch, maxlen, extra)
  local t = redis.call('TIME')
  local at = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  local e = string.format('%d', tonumber(epoch) or 0)  -- never tostring(): 14 digits, then 1e+14
  local fields = {'type', kind, 'node', node, 'epoch', e, 'time', at}
  local msg = '{"type":"' .. kind .. '","node":"' .. node .. '","epoch":' .. e .. ',"time":' .. at
  if extra then
    fields[#fields + 1] = 'detail'; fields[#fields + 1] = extra
    msg = msg .. ',"detail":' .. cjson.encode(extra)
  end
  redis.call('XADD', EVENTS_KEY, 'MAXLEN', '~', maxlen, '*', unpack(fields))
  redis.call('PUBLISH', EVENTS_KEY, msg .. '}')
end
