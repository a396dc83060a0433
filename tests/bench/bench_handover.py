"""Sections 6c and 6d (issue 15): graceful handover and crash failover of living nodes, blocking against polling.

Three nodes per case, at the shipped intervals (heartbeat 10 s, lease 30 s;
the smoke run uses 1 s / 3 s), each case on its own Redis: ``--loop``
(heartbeat, leader_election and failover_manager, one process each, as in
section 4) or ``--foreground`` (``node_manager.py run``: every job in one
process), with ``redis.blocking_reads`` true (the default) or false (today's
polling). The cases run side by side; a trial's measured window and every
node restart hold ``benchlib.QUIET``, so one case's restart never lands in
another's window (a polling trial holds it only to restart: its figure is
seconds).

Graceful (6c): SIGTERM the leader's processes; the figure is the time from
its ``leader_released`` event to the next ``leader_elected`` event of another
node, both stamped by Redis (``TIME`` inside the scripts, in the events
stream). Goal: p50 under 100 ms, max under 500 ms.

Crash (6d): SIGKILL the leader's processes; once they are gone (a renewal it
sent before dying has been run by then) read Redis's ``TIME`` and the lease's
``PTTL`` in one request: the lease lapses at their sum. The figure is the
time from that lapse to the next ``leader_elected`` event of another node.
Goal: at most 100 ms (the lapse itself is the floor: a lease is never taken
before it runs out). Each trial waits out most of a lease (about 20-30 s at
the defaults). The old node is restarted after each trial, so every trial
starts from three live nodes, after a random pause within one interval; the
old node restarts after another one, so the nodes' ticks never line up. A
graceful trial also waits until some follower is not barred by a release of
its own (a node that released the lease does not retake it for one lease:
back-to-back handovers in a three-node cluster would measure that bar).
"""

import os
import random
import signal
import time

import benchlib
import bench_failover
from distnode.core import keys

GOAL_HANDOVER_P50_S, GOAL_HANDOVER_MAX_S = 0.100, 0.500
GOAL_CRASH_S = 0.100
EARLY_S = 1.0  # a crash trial takes benchlib.QUIET this long before the lease lapses


class LivingCluster(bench_failover.Cluster):
    """Section 4's cluster, in ``loop`` or ``foreground`` mode, with blocking reads on or off."""

    def __init__(self, server, workdir: str, interval_s: float, ttl_s: float, python: str, mode: str,
                 blocking: bool):
        super().__init__(server, workdir, interval_s, ttl_s, python)
        self.mode, self.blocking = mode, blocking
        for node in self.nodes.values():
            node.update_config({"redis": {"blocking_reads": blocking}})

    def spawn(self, node) -> int:
        if self.mode == "loop":
            return super().spawn(node)
        return node.spawn("node_manager.py", "run", "--quiet").pid  # ./start-node.sh --foreground

    def clock_and_mark(self):
        """(Redis's time in seconds, the id of the events stream's last entry or "0-0"), in one request."""
        now, last = self.client.request([("TIME",), ("XREVRANGE", keys.events(), "+", "-", "COUNT", 1)])
        return int(now[0]) + int(now[1]) / 1e6, (last[0][0].decode() if last else "0-0")

    def events_since(self, mark: str) -> list:
        """Events after ``mark``: dicts of their fields (str), oldest first."""
        out = []
        for entry_id, flat in self.client.execute("XRANGE", keys.events(), mark, "+") or []:
            if entry_id.decode() == mark:
                continue
            out.append({flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)})
        return out

    def wait_new_leader(self, old: str, limit_s: float):
        """The new holder of the lease, or None if nobody took it within ``limit_s`` (a failed trial)."""
        def new_holder():
            holder = self.leader()
            return holder if holder not in (None, old) else None
        try:
            return self.wait(new_holder, limit_s, "a new leader after %s" % old, 0.02)
        except RuntimeError:
            return None

    def restart(self, node_id: str, sig: int, limit_s: float) -> None:
        """Stop what is left of the node's processes and, after a random pause within one interval, start
        it again (holding benchlib.QUIET). Started right away, its loops would tick in step with the new
        leader's (which took the lease a moment ago): a polling follower would then step just after the
        lease it renews lapses, and the next crash trial would measure that coincidence, not polling."""
        self.nodes[node_id].stop_all(sig)
        time.sleep(random.uniform(0, self.interval_s))
        with benchlib.QUIET:
            self.start(node_id, limit_s)

    def wait_eligible(self, limit_s: float) -> float:
        """Seconds waited until a follower may take the lease: a node that released it is barred from
        retaking it for one lease (``keys.released``); with three nodes, graceful trials closer together
        than that would otherwise leave every follower barred and measure the bar, not the handover."""
        started = time.monotonic()

        def eligible():
            leader = self.leader()
            others = [n for n in self.nodes if n != leader]
            return leader and not all(self.client.request([("EXISTS", keys.released(n)) for n in others]))
        self.wait(eligible, limit_s, "a follower not barred by its own release", 0.2)
        return time.monotonic() - started

    def limit_s(self) -> float:
        return 2 * (self.ttl_s + self.interval_s) + 10

    def graceful(self) -> dict:
        time.sleep(random.uniform(0, self.interval_s))
        barred_s = self.wait_eligible(self.limit_s())
        held = self.blocking and benchlib.QUIET.acquire()  # polling: seconds, no need to keep the others out
        try:
            old = self.leader()
            term_s, mark = self.clock_and_mark()
            self.nodes[old].signal_all(signal.SIGTERM)
            new = self.wait_new_leader(old, self.limit_s())
        finally:
            if held:
                benchlib.QUIET.release()
        events = self.events_since(mark)
        released = next((float(e["time"]) for e in events if e.get("type") == "leader_released"
                          and e.get("node") == old), None)
        elected = next((float(e["time"]) for e in events if e.get("type") == "leader_elected"
                        and e.get("node") != old), None) if new else None
        self.restart(old, signal.SIGTERM, self.limit_s())
        return {"kind": "graceful", "old": old, "new": new, "term_to_release_s": _diff(released, term_s),
                "seconds": _diff(elected, released), "waited_for_bar_s": barred_s}

    def crash(self) -> dict:
        time.sleep(random.uniform(0, self.interval_s))
        with benchlib.QUIET:
            old = self.leader()
            node = self.nodes[old]
            kill_s, mark = self.clock_and_mark()
            node.signal_all(signal.SIGKILL)
            for proc in node.procs:
                proc.wait()
            time.sleep(0.05)  # a request the leader wrote before it died is run by now
            now, pttl_ms = self.client.request([("TIME",), ("PTTL", keys.leader())])
            read_s = int(now[0]) + int(now[1]) / 1e6
        lapse_s = read_s + pttl_ms / 1000.0 if isinstance(pttl_ms, int) and pttl_ms >= 0 else None
        time.sleep(max(0.0, (lapse_s or read_s) - read_s - EARLY_S))
        held = self.blocking and benchlib.QUIET.acquire()
        try:
            new = self.wait_new_leader(old, self.limit_s())
        finally:
            if held:
                benchlib.QUIET.release()
        elected = next((float(e["time"]) for e in self.events_since(mark) if e.get("type") == "leader_elected"
                        and e.get("node") != old), None) if new else None
        self.restart(old, signal.SIGKILL, self.limit_s())
        return {"kind": "crash", "old": old, "new": new, "pttl_at_kill_s": None if lapse_s is None else
                lapse_s - read_s, "seconds": _diff(elected, lapse_s), "kill_to_acquired_s": _diff(elected, kill_s)}


def _diff(later, earlier):
    return None if later is None or earlier is None else later - earlier


def run_case(workdir: str, python: str, case: dict, log) -> dict:
    """One case: ``graceful`` and ``crash`` trials (alternating while both remain) on a cluster of its own."""
    from support.redis_server import RedisServer
    label = "%s, %s" % (case["mode"], "blocking" if case["blocking"] else "polling")
    out = dict(case, label=label, runs=[])
    with RedisServer(name="bench-handover") as server:
        cluster = LivingCluster(server, os.path.join(workdir, "%s-%s" % (case["mode"], int(case["blocking"]))),
                                case["interval_s"], case["ttl_s"], python, case["mode"], case["blocking"])
        try:
            with benchlib.QUIET:
                first = cluster.start_all()
            log("handover %s: cluster up, %s leads" % (label, first))
            left = {"graceful": case["graceful"], "crash": case["crash"]}
            while any(left.values()):
                for kind in ("graceful", "crash"):
                    if left[kind]:
                        left[kind] -= 1
                        run = cluster.graceful() if kind == "graceful" else cluster.crash()
                        out["runs"].append(run)
                        log("handover %s: %s %s -> %s: %s" % (label, kind, run["old"], run["new"], "-" if
                                                             run["seconds"] is None else "%.3fs" % run["seconds"]))
        finally:
            cluster.stop_all()
    for kind in ("graceful", "crash"):
        runs = [r for r in out["runs"] if r["kind"] == kind]
        out[kind] = dict(benchlib.percentiles([r["seconds"] for r in runs]), trials=len(runs),
                         failed=sum(1 for r in runs if r["seconds"] is None))
    crashes = [r for r in out["runs"] if r["kind"] == "crash"]
    out["crash_total"] = benchlib.percentiles([r["kill_to_acquired_s"] for r in crashes])
    out["term_to_release"] = benchlib.percentiles([r["term_to_release_s"] for r in out["runs"]
                                                   if r["kind"] == "graceful"])
    waits = [r["waited_for_bar_s"] for r in out["runs"] if r["kind"] == "graceful" and r["waited_for_bar_s"] > 0.5]
    out["barred"] = {"trials": len(waits), "max_s": max(waits) if waits else 0}
    g, c = out["graceful"], out["crash"]
    out["met"] = {"graceful": None if not g["n"] or not case["blocking"] else
                  (not g["failed"] and g["p50"] < GOAL_HANDOVER_P50_S and g["max"] < GOAL_HANDOVER_MAX_S),
                  "crash": None if not c["n"] or not case["blocking"] else
                  (not c["failed"] and c["max"] <= GOAL_CRASH_S)}
    return out


def cases_for(plan: dict) -> list:
    """The cases of a mode's plan: {"interval_s", "ttl_s", "cases": [(mode, blocking, graceful, crash)]}."""
    return [{"mode": m, "blocking": b, "graceful": g, "crash": c, "interval_s": plan["interval_s"],
             "ttl_s": plan["ttl_s"]} for m, b, g, c in plan["cases"]]


def _reads(case: dict) -> str:
    return "blocking (default)" if case["blocking"] else "blocking_reads false (polling)"


def _sec(value) -> str:
    return "-" if value is None else "%.3f" % value


def format_graceful(cases: list) -> str:
    headers = ["mode", "reads", "intervals", "trials", "release to acquisition p50 s", "max s",
               "SIGTERM to release p50 s", "goal p50 < 0.1 s, max < 0.5 s"]
    rows = []
    for c in cases:
        if c.get("skipped"):
            rows.append([c["mode"], _reads(c), "", 0, "skipped: " + c["skipped"], "", "", "-"])
            continue
        g = c["graceful"]
        if not g["trials"]:
            continue
        rows.append([c["mode"], _reads(c), "%gs / %gs" % (c["interval_s"], c["ttl_s"]),
                     g["trials"] if not g["failed"] else "%d (%d no takeover)" % (g["trials"], g["failed"]),
                     _sec(g["p50"]), _sec(g["max"]), _sec(c["term_to_release"]["p50"]),
                     benchlib.verdict(c["met"]["graceful"])])
    barred = [c for c in cases if not c.get("skipped") and c.get("barred", {}).get("trials")]
    note = ("Times from the events stream (`leader_released`, then `leader_elected` of another node), both "
            "stamped with Redis's `TIME`; nearest-rank p50. Polling rows show today's way for comparison: no goal. "
            "Before a trial the bench waits until a follower is not barred by its own recent release (one lease)%s."
            % ("" if not barred else ": " + "; ".join("%s: %d trial(s), up to %.1fs" % (
                c["label"], c["barred"]["trials"], c["barred"]["max_s"]) for c in barred)))
    return benchlib.table(headers, rows) + "\n\n" + note


def format_crash(cases: list) -> str:
    headers = ["mode", "reads", "intervals", "trials", "lease lapse to acquisition p50 s", "max s",
               "kill to acquisition p50 s", "goal lapse + at most 0.1 s"]
    rows = []
    for c in cases:
        if c.get("skipped") or not c["crash"]["trials"]:
            continue
        k = c["crash"]
        rows.append([c["mode"], _reads(c), "%gs / %gs" % (c["interval_s"], c["ttl_s"]),
                     k["trials"] if not k["failed"] else "%d (%d no takeover)" % (k["trials"], k["failed"]),
                     _sec(k["p50"]), _sec(k["max"]), _sec(c["crash_total"]["p50"]),
                     benchlib.verdict(c["met"]["crash"])])
    note = ("The lapse is Redis's `TIME` plus the lease's `PTTL`, read once the killed processes are gone; the "
            "acquisition is the `leader_elected` event of another node (Redis's `TIME`). Kill to acquisition: the "
            "time without a leader (the lease's remaining TTL at the kill, 20-30 s at the defaults, plus the gap).")
    return benchlib.table(headers, rows) + "\n\n" + note


def plot_points(cases: list) -> list:
    """The failover plot's issue-15 series: time without a leader per case, at the case's lease TTL."""
    points = []
    for c in cases:
        if c.get("skipped"):
            continue
        for kind, stat in (("crash", c.get("crash_total")), ("graceful", c.get("graceful"))):
            if stat and stat.get("n"):
                points.append({"kind": kind, "mode": c["mode"], "blocking": c["blocking"], "ttl_s": c["ttl_s"],
                               "min": stat["min"], "median": stat["p50"], "max": stat["max"]})
    return points
