-- include epoch_guard: EPOCH_LIMIT (local_state.EPOCH_LIMIT, 10^13: every epoch is below it; a test
-- checks the two agree) and epoch_error(key): a BADEPOCH error reply naming ``key`` when it holds
-- something that is not an epoch (a plain integer below EPOCH_LIMIT, no sign, no leading zero, no
-- exponent), else nil. Checked before a script's first write: a script error does not undo the
-- writes made before it.
local EPOCH_LIMIT = 10000000000000
local function epoch_error(key)
  local raw = redis.call('GET', key)
  if raw and not (raw == '0' or (#raw <= 13 and string.match(raw, '^[1-9]%d*$'))) then
    local shown = string.gsub(string.sub(raw, 1, 32), '[^%w%.%+%-]', '?')
    return redis.error_reply('BADEPOCH ' .. key .. ' holds "' .. shown .. '", not an epoch (a plain integer below '
      .. '10^13): set it to the last epoch the cluster used, or delete it and let the nodes restore it')
  end
end
