#!/usr/bin/env python3
"""Chaos run: a private Redis, N nodes from this checkout, tasks, and faults on a seeded schedule.

    python3 tests/chaos/run.py --seed 7 --duration 60      # the short run of the test command
    python3 tests/chaos/run.py --long                      # 10 minutes of faults
    python3 tests/chaos/run.py --seed 3 --kinds kill,stop --report /tmp/chaos.json

Each node runs heartbeat, leader_election, failover_manager and a task worker
(``--loop``, heartbeat interval ``--interval``, lease three intervals). While
a stream of tasks is submitted, faults are injected one at a time, each
healed and followed by convergence before the next: kill -9 and restart,
SIGSTOP past the lease then SIGCONT (the stale leader), SIGTERM (graceful)
and restart, Redis stopped and restarted empty or killed and restarted from
its AOF, one node's connection delayed or cut at the proxy, and a network
partition of one node in a network namespace (root and ``ip netns`` only;
otherwise skipped with the reason printed).

It records every leader and epoch it sees, from Redis and from the nodes'
logs, and checks at the end: (1) never two leaders with one epoch, fenced
writes never go back; (2) epochs only grow, across Redis restarts; (3) every
submitted task is done or dead, none lost, duplicates counted; (4) after the
last fault the cluster converges within the bound; (5) a fault on the leader
moves the lease, with failover times as min / median / max; (6) no node
process crashed. Prints a summary table; exit 0 when every invariant held,
1 on any violation, 2 when the run could not be set up.

``--redlock`` runs the same cluster in Redlock mode: three lease instances
(``redis.instances``) beside the data Redis, the fault kinds ``redlock_slow``
and ``redlock_empty`` added, and check 12 (see redlock.py).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

CHAOS = os.path.dirname(os.path.abspath(__file__))
if CHAOS not in sys.path:
    sys.path.insert(0, CHAOS)

import checker  # noqa: E402
import schedule as sched  # noqa: E402
from adversary import AdversaryFaults  # noqa: E402
from cluster import Cluster, Timing, netns_unavailable_reason, tmpfs_unavailable_reason  # noqa: E402
from recorder import Recorder, parse_logs  # noqa: E402
from redlock import RedlockFaults  # noqa: E402
from tasks import TaskStream, read_ledger  # noqa: E402

from distnode.core import keys  # noqa: E402  (scripts/ is on the path through cluster)
from distnode.cluster import membership  # noqa: E402

LONG_DURATION_S = 600
LEASE_INSTANCES = 3   # --redlock
# Faults during which check 12 is not judged (until a lease after they end): the data Redis replaced by an
# older copy. (redlock_empty suspends it itself, from its first kill.)
UNJUDGED_BY_REDLOCK_WATCH = ("lagging_failover",)


class FaultRecord:
    """One fault as it happened."""

    def __init__(self, spec, node: str, old_leader):
        self.spec, self.node, self.old_leader = spec, node, old_leader
        self.on_leader = node == old_leader and node not in ("redis", "impostor", "redlock")
        # only these faults must move the lease; a duplicate, a killed worker or a full disk must not
        self.hit_leader = self.on_leader and spec.kind in sched.NODE_KINDS
        self.detail = ""
        self.t_inject = self.t_heal = self.t_ready = None
        self.failover_s = self.new_leader = self.converged_s = None
        self.bound_s, self.reason = 0.0, ""
        self.woke_stale = None
        self.old_epoch = None

    @property
    def held_s(self) -> float:
        return (self.t_heal or self.t_inject) - self.t_inject

    def label(self) -> str:
        return "#%d %s on %s" % (self.spec.index, self.spec.kind, self.target_text())

    def target_text(self) -> str:
        if self.node in ("redis", "redlock") or self.spec.target == "impostor":
            return self.node
        return "%s (%s)" % (self.node, "leader" if self.on_leader else "follower")

    def as_dict(self) -> dict:
        return {"index": self.spec.index, "kind": self.spec.kind, "node": self.node, "leader": self.on_leader,
                "detail": self.detail,
                "held_s": round(self.held_s, 3), "failover_s": _round(self.failover_s),
                "new_leader": self.new_leader, "converged_s": _round(self.converged_s), "bound_s": self.bound_s,
                "woke_stale_and_stepped_down": self.woke_stale}


def _round(value):
    return round(value, 3) if value is not None else None


class Runner(AdversaryFaults, RedlockFaults):
    def __init__(self, args, base_dir: str):
        self.args, self.base_dir = args, base_dir
        self.timing = Timing(args.interval)
        self.t0 = time.monotonic()
        self.clock = lambda: time.monotonic() - self.t0  # seconds since the start, shared with the recorder
        self.faults = []
        self.notes = []
        self.cluster = None

    # -- output --
    def say(self, text: str) -> None:
        if not self.args.quiet:
            print("[%6.1fs] %s" % (self.clock(), text), flush=True)

    # -- the run --
    def run(self) -> int:
        kinds = self._kinds()
        t = self.timing
        self.cluster = Cluster(self.base_dir, self.args.nodes, t, use_netns="partition" in kinds,
                               foreground_nodes=self.args.foreground_nodes, tmpfs_logs="disk_full" in kinds,
                               lease_instances=LEASE_INSTANCES if self.args.redlock else 0)
        try:
            return self._run(kinds)
        finally:
            self.cluster.close()

    def _kinds(self) -> list:
        default = sched.ALL_KINDS if self.args.redlock else sched.KINDS
        kinds = [k.strip() for k in self.args.kinds.split(",") if k.strip()] if self.args.kinds else list(default)
        unknown = [k for k in kinds if k not in sched.ALL_KINDS]
        if unknown:
            print("run.py: unknown fault kind(s) %s (known: %s)" % (", ".join(unknown), ", ".join(sched.ALL_KINDS)),
                  file=sys.stderr)
            raise SystemExit(2)
        needs = [k for k in kinds if k in sched.REDLOCK_KINDS]
        if needs and not self.args.redlock:
            print("run.py: fault kind(s) %s need --redlock (lease instances)" % ", ".join(needs), file=sys.stderr)
            raise SystemExit(2)
        if "partition" in kinds and self.args.redlock:
            # the node in the namespace reaches only the data Redis's proxy, not the lease instances
            reason = "--redlock: the node in the namespace could not reach the lease instances"
            print("network partition: skipped (%s)" % reason, flush=True)
            self.notes.append("network partition skipped: " + reason)
            kinds.remove("partition")
        if "disk_full" in kinds:
            reason = tmpfs_unavailable_reason()
            if reason:
                print("disk_full: skipped (%s)" % reason, flush=True)
                self.notes.append("disk_full skipped: " + reason)
                kinds.remove("disk_full")
        if "partition" in kinds:
            reason = "disabled by --no-netns" if self.args.no_netns else netns_unavailable_reason()
            if reason:
                print("network partition: skipped (%s)" % reason, flush=True)
                self.notes.append("network partition skipped: " + reason)
                kinds.remove("partition")
        return kinds

    def _run(self, kinds) -> int:
        c, t = self.cluster, self.timing
        self.recorder = Recorder(c.probe_factory(), self.clock).start()
        self.adversary_init()
        if self.args.redlock:
            self.redlock_init()
        c.start_nodes()
        formed = self.wait_converged(self.clock(), 15 * t.interval_s)
        if formed is None:
            print("run.py: the cluster did not form within %gs: %s" % (15 * t.interval_s, self.last_reason),
                  file=sys.stderr)
            return 2
        self.say("cluster formed in %.2fs: leader %s" % (formed, self.leader()))
        self.tasks = None
        if not self.args.no_tasks:
            self.tasks = TaskStream(c.client_dir, c.probe_factory(), self.args.task_period,
                                    timeout_s=10 * t.interval_s).start()
        plan = sched.make_schedule(self.args.seed, t, kinds)
        t_end = self.clock() + self.args.duration
        for spec in plan:
            if self.clock() + spec.duration_s + 3 * t.interval_s > t_end:
                break
            self.inject(spec)
            time.sleep(spec.gap_s)
        final = self.final_convergence()
        return self.finish(kinds, final)

    # -- observing --
    def leader(self):
        try:
            value = self.cluster.probe.request([("GET", keys.leader())])[0]
        except ConnectionError:
            return None
        return value if isinstance(value, str) else None  # None also for an error reply (LOADING)

    def converged(self) -> bool:
        """One leader, every node online (by the project's own rule), every memory naming that leader."""
        c = self.cluster
        ids = sorted(c.nodes)
        try:
            replies = c.probe.request([("TIME",), ("GET", keys.leader()), ("HGETALL", keys.nodes())]
                                      + [("PTTL", keys.heartbeat(i)) for i in ids])
        except ConnectionError:
            self.last_reason = "Redis unreachable"
            return False
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            self.last_reason = "Redis answered %s" % errors[0]
            return False
        now, leader, flat = replies[0], replies[1], replies[2]
        now_s = int(now[0]) + int(now[1]) / 1e6
        if leader not in ids:
            self.last_reason = "no leader" if leader is None else "leader %s is not a node" % leader
            return False
        records = {k: v for k, v in zip(flat[::2], flat[1::2])}
        for node_id, pttl in zip(ids, replies[3:]):
            try:
                record = json.loads(records.get(node_id) or "null")
            except ValueError:
                record = None
            state = membership.node_state(record, pttl if isinstance(pttl, int) else -2, now_s)
            if state != "online":
                self.last_reason = "%s is %s" % (node_id, state)
                return False
        for node_id in ids:
            memory = c.nodes[node_id].memory()
            if memory.get("leader") != leader or bool(memory.get("is_leader")) != (node_id == leader):
                self.last_reason = "%s's memory says leader %s (is_leader %s), Redis says %s" % (
                    node_id, memory.get("leader"), memory.get("is_leader"), leader)
                return False
        return True

    def wait_converged(self, since: float, max_s: float):
        """Seconds from ``since`` until converged, or None if not within ``max_s``."""
        self.last_reason = ""
        deadline = since + max_s
        while True:
            if self.converged():
                return self.clock() - since
            if self.clock() >= deadline:
                return None
            time.sleep(0.05)

    def wait_registered(self, node) -> None:
        """Until the restarted node's new heartbeat process has written its record (start-up excluded)."""
        pid = node.pid_of("heartbeat.py")
        deadline = self.clock() + 20 * self.timing.interval_s
        while self.clock() < deadline:
            try:
                raw = self.cluster.probe.request([("HGET", keys.nodes(), node.node_id)])[0]
                if isinstance(raw, str) and json.loads(raw).get("pid") == pid:
                    return
            except (ConnectionError, ValueError, AttributeError):
                pass  # Redis away, or a record that is not ours yet
            time.sleep(0.05)

    # -- faults --
    def resolve(self, spec, leader) -> str:
        if spec.target in ("redis", "impostor", "redlock"):
            return spec.target
        if spec.target == "partition-node":
            return self.cluster.partition_node
        ids = sorted(self.cluster.nodes)
        foreground = [i for i in ids if self.cluster.nodes[i].foreground]
        if spec.kind == "disk_full" and foreground and spec.index % 2:
            return foreground[spec.index // 2 % len(foreground)]  # the case found: a --foreground node's threads
        if spec.target == "leader" and leader in ids:
            return leader
        followers = [i for i in ids if i != leader]
        rank = int(spec.target.partition(":")[2] or 0)
        return followers[rank % len(followers)]

    def inject(self, spec) -> None:
        leader = self.leader()
        record = FaultRecord(spec, self.resolve(spec, leader), leader)
        sample = self.recorder.poll_lease()
        record.old_epoch = sample.epoch if sample is not None else None
        self.faults.append(record)
        self.say("fault %s for %.1fs" % (record.label(), spec.duration_s))
        watch = getattr(self, "redlock_watch", None)
        if watch is not None:
            watch.label = "fault #%d %s" % (spec.index, spec.kind)
            if spec.kind in UNJUDGED_BY_REDLOCK_WATCH:
                watch.suspend()
        try:
            getattr(self, "_fault_" + spec.kind)(record)
        finally:
            if watch is not None and spec.kind in UNJUDGED_BY_REDLOCK_WATCH:
                watch.resume(self.timing.lease_s + self.timing.interval_s)
        if record.detail:
            self.say("  (%s)" % record.detail)
        t = self.timing
        if record.hit_leader:
            found = self.recorder.first_other_leader(record.t_inject, record.old_leader, record.t_heal)
            if found:
                record.failover_s, record.new_leader = found[0] - record.t_inject, found[1]
        record.bound_s = self.convergence_bound(spec.kind)
        record.converged_s = self.wait_converged(record.t_ready, record.bound_s + 10 * t.interval_s)
        record.reason = self.last_reason
        self.say("  healed; failover %s; converged %s" % (
            "%.2fs to %s" % (record.failover_s, record.new_leader) if record.failover_s is not None else "-",
            "%.2fs" % record.converged_s if record.converged_s is not None else "NO (%s)" % record.reason))

    def convergence_bound(self, kind: str) -> float:
        """How soon the cluster must agree again once a fault is healed (a restarted node: once it has
        sent its first heartbeat): two intervals. After a Redis restart, plus one connect timeout and
        retry delay (a node whose connection attempt was in flight), and after an empty one, plus the
        bootstrap wait (one interval) during which an epoch-less Redis elects nobody, by design."""
        t = self.timing
        bound = 2 * t.interval_s
        if kind.startswith("redis"):
            bound += t.connect_timeout_s + t.retry_delay_s
        if kind in ("redis_empty", "lagging_failover"):
            bound += t.connect_timeout_s + t.retry_delay_s + t.interval_s
        if kind in sched.REDLOCK_KINDS:  # a claim on a slow or restarting instance may take a socket timeout
            bound += t.socket_timeout_s
        return bound

    def _hold(self, record) -> None:
        time.sleep(max(0.0, record.t_inject + record.spec.duration_s - self.clock()))
        record.t_heal = self.clock()

    def _restart(self, record) -> None:
        node = self.cluster.nodes[record.node]
        node.start()
        record.t_heal = self.clock()
        self.wait_registered(node)
        record.t_ready = self.clock()

    def _fault_kill(self, record) -> None:
        node = self.cluster.nodes[record.node]
        record.t_inject = self.clock()
        node.kill()
        time.sleep(max(0.0, record.t_inject + record.spec.duration_s - self.clock()))
        self._restart(record)

    def _fault_graceful(self, record) -> None:
        node = self.cluster.nodes[record.node]
        record.t_inject = self.clock()
        node.terminate(self.timing.lease_s)
        time.sleep(max(0.0, record.t_inject + record.spec.duration_s - self.clock()))
        self._restart(record)

    def _fault_stop(self, record) -> None:
        node = self.cluster.nodes[record.node]
        record.t_inject = self.clock()
        node.pause()
        self._hold(record)
        node.resume()
        record.t_ready = self.clock()

    def _fault_stall_delay(self, record) -> None:
        record.t_inject = self.clock()
        self.cluster.proxy.set_mode(record.node, "delay", record.spec.delay_s)
        self._hold(record)
        self.cluster.proxy.set_mode(record.node, "pass")
        record.t_ready = self.clock()

    def _fault_stall_cut(self, record) -> None:
        record.t_inject = self.clock()
        self.cluster.proxy.set_mode(record.node, "cut")
        self._hold(record)
        self.cluster.proxy.set_mode(record.node, "pass")
        record.t_ready = self.clock()

    def _fault_partition(self, record) -> None:
        record.t_inject = self.clock()
        self.cluster.set_partition(True)
        self._hold(record)
        self.cluster.set_partition(False)
        record.t_ready = self.clock()

    def _fault_redis_empty(self, record) -> None:
        self._redis_restart(record, empty=True)

    def _fault_redis_aof(self, record) -> None:
        self._redis_restart(record, empty=False)

    def _redis_restart(self, record, empty: bool) -> None:
        c = self.cluster
        if empty and self.tasks is not None:
            self.tasks.pause()  # so that what the wipe takes is only what was in flight
            self.tasks.drain(8 * self.timing.interval_s)
            self.tasks.mark_wiped()
        remembered = {n.node_id: n.memory().get("max_epoch", 0) for n in c.nodes.values() if n.state == "up"}
        restart = self.recorder.redis_stopping(empty, remembered)
        record.t_inject = self.clock()
        if empty:
            c.redis.stop()
        else:
            c.redis.kill()
        self.recorder.redis_stopped(restart)
        time.sleep(max(0.0, record.t_inject + record.spec.duration_s - self.clock()))
        c.redis.restart(keep_data=not empty)
        record.t_heal = record.t_ready = self.clock()
        self.recorder.redis_started(restart)
        if self.tasks is not None:
            self.tasks.resume()

    # -- the end --
    def final_convergence(self) -> dict:
        last = self.faults[-1] if self.faults else None
        if last is None:
            return {"seconds": 0.0, "after": "no fault"}
        return {"seconds": last.converged_s, "after": last.label(), "reason": last.reason}

    def finish(self, kinds, final) -> int:
        c, t = self.cluster, self.timing
        drained = True
        if self.tasks is not None:
            self.tasks.stop()
            drained = self.tasks.drain(20 * t.interval_s)
            self.say("tasks drained: %s" % ("yes" if drained else "NO"))
        self.t_observed = self.clock()  # the recorder stops here: the stops below are not judged against it
        self.recorder.stop()
        if self.args.redlock:
            self.redlock_watch.stop()
        for node in c.nodes.values():
            node.terminate(t.lease_s)
        if self.recorder.crash:
            print("run.py: the recorder stopped polling (%s): the record is incomplete, no verdict"
                  % self.recorder.crash, file=sys.stderr)
            return 2
        claims = parse_logs(c.nodes.values())
        r = self.recorder
        bounds = {"crash": t.lease_s + t.interval_s, "graceful": t.interval_s, "stall": t.lease_s + t.interval_s}
        last_bound = self.faults[-1].bound_s if self.faults else 2 * t.interval_s
        checks = [checker.check_single_leader(r.samples, r.events, claims, r.restarts),
                  checker.check_epochs_grow(r.samples, r.events, claims, r.restarts)]
        if self.tasks is not None:
            checks.append(checker.check_tasks(self.tasks, read_ledger(c.ledger_path), drained))
        checks.append(checker.check_convergence(self.faults, final, last_bound))
        failovers = checker.check_failovers(self.faults, bounds)
        checks.append(failovers)
        checks.append(checker.check_processes(c.nodes.values(), claims))
        checks += self.adversary_checks(kinds, claims, c.ledger_path)
        if self.args.redlock:
            checks += self.redlock_checks()
        self._stale_leaders(claims)
        elapsed = self.clock()
        exercised = sorted({f.spec.kind for f in self.faults})
        header = ["chaos run: seed %d, duration %gs (ran %.1fs), %d nodes, interval %gs, lease %gs%s"
                  % (self.args.seed, self.args.duration, elapsed, len(c.nodes), t.interval_s, t.lease_s,
                     ", Redlock over %d lease instances" % len(c.leases) if c.leases else ""),
                  "fault kinds exercised: %s" % ", ".join(exercised)]
        missing = [k for k in kinds if k not in exercised]
        if missing:
            header.append("fault kinds not reached in this duration: %s" % ", ".join(missing))
        header += ["note: " + n for n in self.notes]
        stale = [f for f in self.faults if f.woke_stale is not None]
        if stale:
            header.append("stale leaders (SIGSTOP past the lease) that woke and stepped down: %d of %d"
                          % (sum(f.woke_stale for f in stale), len(stale)))
        header.append("observed: %d lease samples over %d polls (%d failed while Redis was away), %d events"
                      % (len(r.samples), r.polls, r.failed_polls, len(r.events)))
        print(checker.summary(header, self.faults, checks, failovers.table, bounds), flush=True)
        if self.args.report:
            self._write_report(checks, failovers.table, bounds, elapsed, exercised, kinds)
        if self.args.keep:
            print("logs kept in %s" % self.base_dir)
        return 0 if all(ch.ok for ch in checks) else 1

    def _stale_leaders(self, claims) -> None:
        """Did each leader that was stopped past its lease say, once woken, that it lost the lease?"""
        for f in self.faults:
            if f.spec.kind == "stop" and f.hit_leader and f.new_leader:
                f.woke_stale = any(node == f.node and epoch == f.old_epoch for node, epoch, _s, _l in claims.lost)

    def _write_report(self, checks, table, bounds, elapsed, exercised, kinds) -> None:
        t = self.timing
        tasks = next((ch.counts for ch in checks if ch.number == 3), None)
        report = {"seed": self.args.seed, "duration_s": self.args.duration, "elapsed_s": round(elapsed, 1),
                  "nodes": len(self.cluster.nodes), "interval_s": t.interval_s, "lease_s": t.lease_s,
                  "kinds": kinds, "exercised": exercised, "notes": self.notes, "redlock": bool(self.args.redlock),
                  "faults": [f.as_dict() for f in self.faults], "failover": table, "failover_bounds": bounds,
                  "checks": [ch.as_dict() for ch in checks], "tasks": tasks,
                  "ok": all(ch.ok for ch in checks)}
        with open(self.args.report, "w") as fh:
            json.dump(report, fh, indent=2, sort_keys=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=7, help="seed of the fault schedule (default 7)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of faults (default 60; %d with --long)" % LONG_DURATION_S)
    p.add_argument("--long", action="store_true", help="the long run: %d s of faults" % LONG_DURATION_S)
    p.add_argument("--nodes", type=int, default=5, help="nodes in the cluster (default 5, at least 3)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="heartbeat interval in seconds (default 1; the lease is three intervals)")
    p.add_argument("--kinds", "--faults", dest="kinds", default="",
                   help="comma-separated fault kinds (default all: %s; with --redlock also %s)" % (
                       ",".join(sched.KINDS), ",".join(sched.REDLOCK_KINDS)))
    p.add_argument("--redlock", action="store_true",
                   help="Redlock mode: %d lease instances (redis.instances) beside the data Redis, and the fault "
                        "kinds %s" % (LEASE_INSTANCES, ", ".join(sched.REDLOCK_KINDS)))
    p.add_argument("--foreground-nodes", type=int, default=1,
                   help="how many nodes run as one `node_manager.py run` process (./start-node.sh --foreground) "
                        "instead of four --loop processes (default 1)")
    p.add_argument("--task-period", type=float, default=0.5, help="seconds between task submissions (default 0.5)")
    p.add_argument("--no-tasks", action="store_true", help="no task stream (and no check 3)")
    p.add_argument("--no-netns", action="store_true", help="skip the network partition even where ip netns works")
    p.add_argument("--report", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the nodes' config and log dirs")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = LONG_DURATION_S if args.long else 60.0
    if args.nodes < 3:
        p.error("--nodes must be at least 3")
    if not 0.2 <= args.interval <= 10:
        p.error("--interval must be from 0.2 to 10 seconds")
    if args.duration <= 0 or args.task_period <= 0:
        p.error("--duration and --task-period must be above 0")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    base_dir = tempfile.mkdtemp(prefix="dn-chaos-")
    try:
        return Runner(args, base_dir).run()
    finally:
        if not args.keep:
            shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
