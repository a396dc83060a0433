"""Section 6e (issue 15): what an idle ``--foreground`` node costs, blocking reads against polling.

Per variant (``redis.blocking_reads`` true, the default, and false: today's
polling) a Redis of its own and two nodes, each ``node_manager.py run`` (what
``./start-node.sh --foreground`` runs) at the shipped settings, each through
its own counting proxy (tests/bench/trip_proxy.py): one becomes the leader,
the other follows. Once the leader is elected and both have beaten, the bench
reads each process's CPU time (``/proc/<pid>/stat``: utime + stime of the
process and of its waited-for children) and its proxy's count of round trips
(request-and-reply exchanges: a pipelined batch is one, a blocking read is
one), waits, and reads them again. No task is submitted: the node is idle.
Redis's own count of replies written (``INFO stats``) over the whole server
is the cross-check. The variants run side by side.

Goal: both figures reported; with blocking reads no more round trips per
minute than today's polling.
"""

import os
import signal
import subprocess
import threading
import time

import benchlib
from distnode.core import keys
from trip_proxy import TripProxy

NODE_IDS = ("idle-a", "idle-b")


def cpu_s(pid: int) -> float:
    """CPU seconds of a process and its waited-for children (utime + stime + cutime + cstime)."""
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / float(os.sysconf("SC_CLK_TCK"))


def run_variant(workdir: str, python: str, blocking: bool, seconds: float, settings: dict, log) -> dict:
    """One variant; ``settings``: config sections on top of the shipped ones (the smoke run's short intervals)."""
    from support.redis_server import RedisServer
    label = "blocking" if blocking else "polling"
    nodes, procs, proxies = {}, {}, {}
    with RedisServer(name="bench-idle") as server:
        probe = benchlib.Probe(server.port)
        try:
            with benchlib.QUIET:  # process starts: a burst the ms-figures of other sections must not meet
                for node_id in NODE_IDS:
                    proxies[node_id] = TripProxy(server.port).start()
                    config = {k: dict(v) for k, v in settings.items()}
                    config.setdefault("redis", {})["blocking_reads"] = blocking
                    node = benchlib.Node(os.path.join(workdir, label), node_id, proxies[node_id].port, config,
                                         python)
                    nodes[node_id] = node
                    procs[node_id] = subprocess.Popen(node.argv("node_manager.py", "run", "--quiet"), env=node.env,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                      start_new_session=True)
            interval_s = settings.get("node", {}).get("heartbeat_interval", 10)
            leader = _settle(probe.client, procs, 4 * interval_s + 30)
            time.sleep(min(interval_s, 2.0))  # the first election's follow-ups (the new leader's sweep) are done
            probe.calibrate()
            before = {n: (cpu_s(procs[n].pid), proxies[n].snapshot()) for n in NODE_IDS}
            server_before = probe.counters()
            started = time.monotonic()
            time.sleep(seconds)
            took_s = time.monotonic() - started
            after = {n: (cpu_s(procs[n].pid), proxies[n].snapshot()) for n in NODE_IDS}
            server_delta = benchlib.Probe.delta(server_before, probe.counters())
        finally:
            for proc in procs.values():
                _stop(proc)
            for proxy in proxies.values():
                proxy.close()
            probe.close()
    per_min = 60.0 / took_s
    out = {"blocking": blocking, "seconds": round(took_s, 2), "leader": leader, "nodes": {}}
    for n in NODE_IDS:
        (cpu0, c0), (cpu1, c1) = before[n], after[n]
        out["nodes"][n] = {"role": "leader" if n == leader else "follower",
                           "cpu_s_per_min": (cpu1 - cpu0) * per_min,
                           "trips_per_min": (c1["trips"] - c0["trips"]) * per_min,
                           "connections": c1["connections"]}
    writes = server_delta["writes"] - probe._baseline["writes"]
    out["server_replies_per_min"] = writes * per_min if "total_writes_processed" in server_before else None
    log("idle %s: %s" % (label, ", ".join("%s %.0f trips/min, %.2f CPU s/min" % (
        v["role"], v["trips_per_min"], v["cpu_s_per_min"]) for v in out["nodes"].values())))
    return out


def _settle(client, procs: dict, limit_s: float) -> str:
    """The leader's id once one of the nodes leads and both have a live heartbeat."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for node_id, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError("idle bench: node %s exited %s" % (node_id, proc.returncode))
        leader = client.execute("GET", keys.leader())
        beats = client.request([("EXISTS", keys.heartbeat(n)) for n in procs])
        if leader and all(beats):
            return leader.decode()
        time.sleep(0.2)
    raise RuntimeError("idle bench: no leader within %gs" % limit_s)


def _stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def idle_cost(workdir: str, python: str, seconds: float, settings: dict, log) -> dict:
    """Both variants side by side; {"seconds", "variants": [blocking, polling]}."""
    results, errors = {}, {}

    def go(blocking: bool):
        try:
            results[blocking] = run_variant(workdir, python, blocking, seconds, settings, log)
        except Exception as exc:  # reported in the table; the other variant goes on
            errors[blocking] = "%s: %s" % (type(exc).__name__, exc)

    threads = [threading.Thread(target=go, args=(b,), name="idle-%s" % b) for b in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"seconds": seconds, "settings": settings, "variants": [], "skipped": {}}
    for b in (True, False):
        if b in results:
            out["variants"].append(results[b])
        else:
            out["skipped"]["blocking" if b else "polling"] = errors.get(b, "?")
    by = {v["blocking"]: v for v in out["variants"]}
    if True in by and False in by:
        trips = lambda v: sum(n["trips_per_min"] for n in v["nodes"].values())  # noqa: E731
        out["met"] = trips(by[True]) <= trips(by[False])
    return out


def format_idle(res: dict) -> str:
    headers = ["reads", "node", "CPU s per idle minute", "round trips per minute", "connections",
               "goal: trips <= polling's"]
    rows = []
    verdict = benchlib.verdict(res.get("met"))
    for v in res["variants"]:
        for node_id in sorted(v["nodes"], key=lambda n: v["nodes"][n]["role"]):
            n = v["nodes"][node_id]
            rows.append(["blocking (default)" if v["blocking"] else "blocking_reads false (polling)", n["role"],
                         "%.3f" % n["cpu_s_per_min"], "%.0f" % n["trips_per_min"], n["connections"],
                         verdict if v["blocking"] else "-"])
    scaled = "" if res["seconds"] >= 60 else " (measured over %gs and scaled to a minute)" % res["seconds"]
    totals = "; ".join("%s: %s replies/min written by Redis for both nodes" % (
        "blocking" if v["blocking"] else "polling",
        "-" if v["server_replies_per_min"] is None else "%.0f" % v["server_replies_per_min"]) for v in res["variants"])
    notes = ["", "", "Two idle `node_manager.py run` nodes per variant (heartbeat %gs), each through a counting "
             "proxy%s. CPU: utime + stime (children included) from /proc, in steps of 1/%d s; a round trip: a "
             "request and its reply, a pipelined batch or a blocking read counting one. Cross-check, %s." % (
                 res["settings"].get("node", {}).get("heartbeat_interval", 10), scaled, os.sysconf("SC_CLK_TCK"),
                 totals)]
    for name, why in res["skipped"].items():
        notes.append("- %s skipped: %s" % (name, why))
    return benchlib.table(headers, rows) + "\n".join(notes)
