"""Section 5a: the leader's failover tick and ``node_manager status`` with 100, 1,000 and 10,000 members.

The members are written straight into Redis (a record and a live heartbeat
key each, as the heartbeat script writes them); one real node holds the lease
and runs the ticks. Both commands run as whole processes, alternating; round
trips are counted by the client and by Redis. They must grow by batches
(the sweep reads 2,000 members per script call; status reads every member in
one request and every heartbeat TTL in one pipeline), not by member.
"""

import json
import math

import benchlib
from distnode.core import defaults, keys

SIZES = (100, 1000, 10000)
LEADER = "scale-leader"
POPULATE_BATCH = 1000
PAGE_SIZE = defaults.FAILOVER_PAGE_MEMBERS  # members per sweep call


def member_record(i: int, now_s: float) -> str:
    node_id = "m%05d" % i
    return json.dumps({"id": node_id, "host": "host-%05d" % i, "pid": 1000 + i, "version": "1.0.0",
                       "labels": ["bench"], "capabilities": [], "interval": 10, "ttl": 30,
                       "instance": "%016x" % i, "status": "online", "last_heartbeat": now_s,
                       "started_at": now_s}, separators=(",", ":"))


def populate(client, start: int, stop: int) -> None:
    """Members start..stop-1: records plus heartbeat keys alive for 10 minutes."""
    now = client.execute("TIME")
    now_s = int(now[0]) + int(now[1]) / 1e6
    for first in range(start, stop, POPULATE_BATCH):
        batch = range(first, min(stop, first + POPULATE_BATCH))
        cmds = [("HSET", keys.nodes(), "m%05d" % i, member_record(i, now_s)) for i in batch]
        cmds += [("SET", keys.heartbeat("m%05d" % i), "1", "PX", 600000) for i in batch]
        client.request(cmds)


def scale(server, workdir: str, python: str, sizes, rounds: int, log) -> dict:
    server.flushall()
    node = benchlib.Node(workdir, LEADER, server.port, {}, python)
    probe = benchlib.Probe(server.port)
    out = {"rounds": rounds, "page_size": PAGE_SIZE, "sizes": {}}
    try:
        counted_by_redis = probe.supported()  # Redis 6.0+
        probe.client.execute("SET", keys.epoch(), "1")
        node.run("heartbeat.py", "--quiet")
        node.run("leader_election.py", "--quiet")
        have = 1
        cmds = {"failover_manager": [python] + node.argv("failover_manager.py", "--quiet", python=False),
                "status": [python] + node.argv("node_manager.py", "status", python=False)}
        for size in sizes:
            populate(probe.client, have, size)
            have = size
            node.run("heartbeat.py", "--quiet")  # keep the leader's own heartbeat and lease fresh
            node.run("leader_election.py", "--quiet")
            members = probe.client.execute("HLEN", keys.nodes())
            run = benchlib.run_alternating(python, cmds, rounds, 1, node.env)
            bad = [(n, r["rc"]) for n, rs in run["runs"].items() for r in rs if r["rc"] != 0]
            if bad:
                raise RuntimeError("scale %d: commands failed: %s" % (size, bad))
            row = {"members": members}
            for name, argv in (("failover_manager", ("failover_manager.py",)), ("status", ("node_manager.py", "status"))):
                m = probe.measure(lambda: node.counted(*argv, "--quiet"))
                row[name] = {"wall_ms": benchlib.summary([r["wall_ms"] for r in run["runs"][name]]),
                             "maxrss_kb": benchlib.summary([r["maxrss_kb"] for r in run["runs"][name]]),
                             "client_round_trips": m["result"]["client_trips"],
                             "redis_reply_writes": m["round_trips"] if counted_by_redis else None,
                             "commands_sent": m["result"]["client_commands"],
                             "commands_run": sum(m["commands"].values())}
            out["sizes"][str(size)] = row
            log("scale: %d members: failover tick %s ms (%s trips), status %s ms (%s trips)" % (
                members, benchlib.fmt(row["failover_manager"]["wall_ms"]),
                row["failover_manager"]["client_round_trips"], benchlib.fmt(row["status"]["wall_ms"]),
                row["status"]["client_round_trips"]))
    finally:
        probe.close()
    out["grows_by_batches"] = _grows_by_batches(out["sizes"])
    return out


def _grows_by_batches(sizes: dict) -> dict:
    """Round trips may grow by one per page of members, never by one per member."""
    verdict = {}
    for name in ("failover_manager", "status"):
        small = min(sizes, key=int)
        base = sizes[small][name]["client_round_trips"]
        ok = all(row[name]["client_round_trips"] <= base + math.ceil(int(n) / PAGE_SIZE) for n, row in sizes.items())
        verdict[name] = ok
    return verdict


def format_scale(res: dict) -> str:
    headers = ["members", "failover tick ms", "round trips (client / Redis reply writes)", "status ms",
               "round trips (client / Redis reply writes)", "peak RSS MB tick / status"]
    rows = []
    for size, row in sorted(res["sizes"].items(), key=lambda kv: int(kv[0])):
        fo, st = row["failover_manager"], row["status"]
        na = lambda v: "n/a" if v is None else v  # noqa: E731  (Redis < 6.0 does not count its writes)
        rows.append([row["members"], benchlib.fmt(fo["wall_ms"]),
                     "%s / %s" % (fo["client_round_trips"], na(fo["redis_reply_writes"])),
                     benchlib.fmt(st["wall_ms"]), "%s / %s" % (st["client_round_trips"], na(st["redis_reply_writes"])),
                     "%.1f / %.1f" % (fo["maxrss_kb"]["median"] / 1024.0, st["maxrss_kb"]["median"] / 1024.0)])
    g = res["grows_by_batches"]
    note = ("\n\nRound trips grow by batches, not by member: failover tick %s, status %s. Redis writes a reply "
            "of more than 64 KiB in several writes, so its count exceeds the client's for large replies."
            % ("yes" if g["failover_manager"] else "NO", "yes" if g["status"] else "NO"))
    return benchlib.table(headers, rows) + note
