"""Section 4: how long the cluster is without a leader when the leader crashes or leaves.

Three nodes, each running heartbeat, leader_election and failover_manager in
``--loop`` mode (tests/support/nodes.py), on a private Redis. A trial takes
the current leader and either SIGKILLs its processes (crash) or SIGTERMs them
(graceful: the election loop releases the lease on its way out), then polls
the lease until another node holds it. The stopped node is restarted before
the next trial, so every trial starts from three live nodes; each trial
starts at a random point of the tick cycle. Crash and graceful trials
alternate.

The bound is lease_ttl + interval: the lease outlives the last renewal by at
most lease_ttl, and a follower's next election (or failover) tick comes
within one interval.
"""

import json
import os
import random
import signal
import time

import benchlib
from distnode.core import keys
from support.nodes import NodeEnv

NODE_IDS = ("fo-a", "fo-b", "fo-c")
_LIVE = set()  # clusters with processes running, so an aborted suite can stop them all
_STOPPING = []  # non-empty once stop_everything ran: no cluster starts a node after that


def stop_everything() -> None:
    """Kill every node process of every cluster still running (the suite is stopping early)."""
    _STOPPING.append(True)
    for cluster in list(_LIVE):
        for node in cluster.nodes.values():
            node.kill_all()
        _LIVE.discard(cluster)


def case_config(interval_s: float, ttl_s: float) -> dict:
    """The config of every node for one case: the lease and renewals follow the heartbeat, as by default."""
    cfg = {"node": {"heartbeat_interval": interval_s, "heartbeat_ttl": ttl_s},
           "election": {"lease_ttl": 0, "renew_interval": 0}}
    if ttl_s >= 12:  # the shipped defaults: timeouts 5 s, 3 retries 1 s apart
        cfg["node"].update(retry_count=3, retry_delay=1)
        cfg["redis"] = {"connect_timeout": 5, "socket_timeout": 5}
    return cfg


class Cluster:
    def __init__(self, server, workdir: str, interval_s: float, ttl_s: float, python: str):
        self.server, self.interval_s, self.ttl_s = server, interval_s, ttl_s
        self.client = benchlib.redis_client.Redis("127.0.0.1", server.port)
        self.nodes = {}
        _LIVE.add(self)
        for node_id in NODE_IDS:
            node = NodeEnv(workdir, node_id, server, config=case_config(interval_s, ttl_s), python=python)
            node.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.nodes[node_id] = node

    def leader(self):
        value = self.client.execute("GET", keys.leader())
        return value.decode() if value else None

    def record_pid(self, node_id: str):
        raw = self.client.execute("HGET", keys.nodes(), node_id)
        try:
            return json.loads(raw).get("pid") if raw else None
        except ValueError:
            return None

    def start(self, node_id: str, timeout_s: float) -> None:
        """Start a node's loops and wait until its heartbeat has written the new process's pid."""
        node = self.nodes[node_id]
        node.procs = []
        if _STOPPING:
            raise RuntimeError("the suite is stopping")
        pid = self.spawn(node)
        self.wait(lambda: self.record_pid(node_id) == pid, timeout_s, "%s to register" % node_id)

    def spawn(self, node) -> int:
        """Start a node's processes; the pid its heartbeat record will carry."""
        return node.spawn_all()[0].pid  # heartbeat.py --loop, leader_election.py --loop, failover_manager.py --loop

    def wait(self, predicate, timeout_s: float, what: str, poll_s: float = 0.02):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll_s)
        raise RuntimeError("failover bench: timed out after %gs waiting for %s" % (timeout_s, what))

    def start_all(self) -> str:
        limit_s = 3 * (self.ttl_s + self.interval_s) + 10
        for node_id in NODE_IDS:
            self.start(node_id, limit_s)
        return self.wait(self.leader, limit_s, "a first leader", 0.05)

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.kill_all()
        _LIVE.discard(self)
        self.client.close()

    def trial(self, kind: str, poll_s: float) -> dict:
        """Stop the leader (kill or term); time until another node holds the lease; restart it.

        The trial starts after a random 0.5-1.5 intervals, so the stop falls at a random
        point of the nodes' tick cycles, as a real crash does (right after a restart
        the restarted node's first ticks would otherwise line up with it).
        """
        time.sleep(random.uniform(0.5, 1.5) * self.interval_s)
        # Short cases hold benchlib.QUIET for the whole trial (their figures are tenths of a second);
        # the slow one (seconds, mostly waiting out a lease) only while it restarts the node.
        whole = self.ttl_s < 12
        held = whole and benchlib.QUIET.acquire()
        try:
            old = self.leader()
            node = self.nodes[old]
            limit_s = 2 * (self.ttl_s + self.interval_s) + 5
            started = time.monotonic()
            if kind == "crash":
                node.signal_all(signal.SIGKILL)
            else:
                node.signal_all(signal.SIGTERM)
            vacant_s, new = None, None
            while time.monotonic() - started < limit_s:
                holder = self.leader()
                now = time.monotonic() - started
                if holder is None and vacant_s is None:
                    vacant_s = now
                if holder not in (None, old):
                    new = holder
                    break
                time.sleep(poll_s)
            took_s = time.monotonic() - started if new else None
            held = held or benchlib.QUIET.acquire()
            node.stop_all(signal.SIGKILL if kind == "crash" else signal.SIGTERM)
            self.start(old, limit_s)
        finally:
            if held:
                benchlib.QUIET.release()
        return {"kind": kind, "old": old, "new": new, "seconds": took_s, "vacant_after_s": vacant_s}


def run_case(server, workdir: str, interval_s: float, ttl_s: float, trials: int, python: str, log) -> dict:
    """``trials`` crash and ``trials`` graceful failovers, alternating; times in seconds."""
    label = "interval %gs / ttl %gs" % (interval_s, ttl_s)
    poll_s = 0.01 if ttl_s < 12 else 0.05
    cluster = Cluster(server, os.path.join(workdir, "i%g-t%g" % (interval_s, ttl_s)), interval_s, ttl_s, python)
    runs = []
    try:
        first = cluster.start_all()
        log("failover %s: cluster up, %s leads; %d trials of each kind" % (label, first, trials))
        for i in range(trials):
            for kind in ("crash", "graceful"):
                result = cluster.trial(kind, poll_s)
                runs.append(result)
                log("failover %s: %s %d/%d: %s -> %s in %s" % (
                    label, kind, i + 1, trials, result["old"], result["new"],
                    "%.2fs" % result["seconds"] if result["seconds"] is not None else "NO TAKEOVER"))
    finally:
        cluster.stop_all()
    bound_s = ttl_s + interval_s
    out = {"interval_s": interval_s, "ttl_s": ttl_s, "lease_ttl_s": ttl_s, "bound_s": bound_s, "trials": trials,
           "runs": runs}
    for kind in ("crash", "graceful"):
        times = [r["seconds"] for r in runs if r["kind"] == kind]
        failed = sum(1 for t in times if t is None)
        stat = benchlib.summary(times)
        out[kind] = dict(stat, failed=failed, met=failed == 0 and stat["max"] is not None and stat["max"] <= bound_s)
    return out


def format_failover(cases: list) -> str:
    headers = ["interval / lease ttl", "trials", "crash: median", "crash: max", "graceful: median", "graceful: max",
               "bound ttl+interval", "within bound"]
    rows = []
    for c in cases:
        if c.get("skipped"):
            rows.append(["%gs / %gs" % (c["interval_s"], c["ttl_s"]), 0, "skipped: " + c["skipped"], "", "", "",
                         "%gs" % (c["ttl_s"] + c["interval_s"]), "-"])
            continue
        cr, gr = c["crash"], c["graceful"]
        sec = lambda v: "-" if v is None else "%.2fs" % v  # noqa: E731
        fails = lambda s: " (%d no takeover)" % s["failed"] if s["failed"] else ""  # noqa: E731
        rows.append(["%gs / %gs" % (c["interval_s"], c["ttl_s"]), c["trials"], sec(cr["median"]) + fails(cr),
                     sec(cr["max"]), sec(gr["median"]) + fails(gr), sec(gr["max"]), "%gs" % c["bound_s"],
                     "yes" if cr["met"] and gr["met"] else "NO"])
    return benchlib.table(headers, rows)
