"""Peer of scripts/heartbeat.py written with redis-py: one MULTI pipeline (HSET the record, SET hb PX)."""

import json
import os
import socket
import sys
import time

import redis

import peer_common


def main() -> int:
    s = peer_common.settings()
    r = redis.Redis(host=s["host"], port=s["port"], socket_timeout=5, socket_connect_timeout=5)
    record = json.dumps({"id": s["node_id"], "host": socket.gethostname(), "pid": os.getpid(), "status": "online",
                         "last_heartbeat": time.time(), "interval": s["interval_s"], "ttl": s["ttl_s"]},
                        separators=(",", ":"))
    pipe = r.pipeline(transaction=True)
    pipe.hset(peer_common.PREFIX + "nodes", s["node_id"], record)
    pipe.set(peer_common.PREFIX + "hb:" + s["node_id"], "1", px=int(s["ttl_s"] * 1000))
    pipe.execute()
    r.close()
    peer_common.log(s, "heartbeat_redispy", "heartbeat ok (ttl %gs)" % s["ttl_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
