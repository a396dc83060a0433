-- include task_worker: the task library plus refused(nodes key, token). The worker's scripts
-- (task_claim, task_finish, task_release) act as node ME only for the process whose instance
-- token the node's record names (see heartbeat.lua): for a second process with a taken node id,
-- refused() returns a 'COLLISION host <h>, pid <p>' error reply, and the script changes nothing.
--- @include "task_lib"
--- @include "other_instance"
local function refused(nodes_key, token)
  local other = other_instance(nodes_key, ME, token)
  if other then
    return redis.error_reply('COLLISION host ' .. tostring(other.host or '?') .. ', pid ' .. tostring(other.pid or '?'))
  end
end
