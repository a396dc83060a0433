"""Peer of scripts/leader_election.py written with redis-py: renew-or-acquire in one Lua script (EVALSHA)."""

import sys

import redis

import peer_common

ELECT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'renewed', holder, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if holder then return {'follower', holder, tonumber(redis.call('GET', KEYS[2]) or '0')} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {'ineligible', '', 0} end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'acquired', ARGV[1], epoch}
"""


def main() -> int:
    s = peer_common.settings()
    r = redis.Redis(host=s["host"], port=s["port"], socket_timeout=5, socket_connect_timeout=5)
    elect = r.register_script(ELECT)
    p = peer_common.PREFIX
    outcome, leader, epoch = elect(keys=[p + "leader", p + "epoch", p + "hb:" + s["node_id"]],
                                   args=[s["node_id"], int(s["ttl_s"] * 1000)])
    r.close()
    peer_common.log(s, "leader_election_redispy", "election: %s (leader %s, epoch %d)"
                    % (outcome.decode(), leader.decode() or "none", epoch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
