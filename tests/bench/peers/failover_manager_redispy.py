"""Peer of scripts/failover_manager.py written with redis-py: read the lease and the members in one
pipeline, check their heartbeat keys in a second, mark the dead ones offline in a third (only if any)."""

import json
import sys

import redis

import peer_common


def main() -> int:
    s = peer_common.settings()
    r = redis.Redis(host=s["host"], port=s["port"], socket_timeout=5, socket_connect_timeout=5)
    p = peer_common.PREFIX
    pipe = r.pipeline(transaction=False)
    pipe.get(p + "leader")
    pipe.hgetall(p + "nodes")
    leader, members = pipe.execute()
    marked = []
    if leader is not None and leader.decode() == s["node_id"]:
        ids = list(members)
        pipe = r.pipeline(transaction=False)
        for node_id in ids:
            pipe.exists(p + "hb:" + node_id.decode())
        for node_id, alive in zip(ids, pipe.execute()):
            record = json.loads(members[node_id])
            if not alive and record.get("status") == "online":
                record["status"] = "offline"
                marked.append((node_id, json.dumps(record)))
        if marked:
            pipe = r.pipeline(transaction=True)
            for node_id, body in marked:
                pipe.hset(p + "nodes", node_id, body)
            pipe.execute()
    r.close()
    peer_common.log(s, "failover_manager_redispy", "failover: %d marked offline" % len(marked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
