-- include other_instance: other_instance(nodes key, me, token) -> the record of node ``me`` if it
-- names an instance token other than ``token`` (another live process claims this node id, see
-- heartbeat.lua), else nil. An empty or missing token skips the check.
local function other_instance(nodes_key, me, token)
  if not token or token == '' then return nil end
  local ok, rec = pcall(cjson.decode, redis.call('HGET', nodes_key, me) or 'null')
  if ok and type(rec) == 'table' and type(rec.instance) == 'string' and rec.instance ~= token then
    return rec
  end
end
