"""The faults an adversarial review found (issue 13), each with what it must not break.

A mixin of the runner (run.py): ``_fault_<kind>`` injects one fault, watches
Redis while it lasts and files what it saw as violations under a check key;
``adversary_checks()`` turns them into the checks of the summary.

- ``handshake``: a process set with a node id of its own ("hs<n>") and a
  refused handshake (``redis.db`` 99, a password sent to a Redis without one,
  an ACL user with a wrong password), run for a while: nothing it sends may
  run, so no heartbeat key, member record or lease of it in any db, no event
  by it, no task run by it;
- ``lagging_failover``: a follower is SIGSTOPped and Redis copied (DUMP of
  every key); the leader steps down so a new term starts that the copy
  misses; then Redis is replaced by the copy (FLUSHALL + RESTORE in one
  MULTI, every client connection killed, ``openclaw:cluster:server`` naming
  the old master as a replica's copy would: a failover to a replica frozen at
  the older epoch) and the follower resumes at once, ticking first. Checks 1
  and 2 judge it like an empty restart: no epoch used by two leaders, the
  first new term above every epoch seen before;
- ``duplicate``: a second process set with the node id of a cluster node but
  its own run dir (so its own instance token), ``node_manager.py run`` as
  ``./start-node.sh --foreground`` runs it, started, run, SIGTERMed: the real
  node never turns ``left``, never loses its heartbeat key or its lease, the
  duplicate never leads, marks, holds the term or runs a task;
- ``worker_kill``: a long task pinned to a node, its worker SIGKILLed (the
  pid, not the group) while the handler runs, then restarted: no two copies
  of a task's handler run at once, and no handler outlives the run;
- ``disk_full``: the node's log dir is a small tmpfs, filled to ENOSPC and
  freed later: the node keeps its jobs running or stops claiming work, never
  a dead heartbeat with a live worker.

Hooks are checked in every run: one ``on_become_leader`` per term across the
cluster, and no "lost leadership of epoch E" while Redis still shows that
node holding epoch E.
"""

import calendar
import json
import os
import subprocess
import sys
import threading
import time

from cluster import LONG_TASK_TYPE, SCRIPTS, clean_env
from support.redis_server import _RespConnection

from distnode.core import keys  # noqa: E402  (scripts/ is on the path through cluster)

TERM_KEY = "openclaw:cluster:term"   # the leader's term (node, instance, epoch, confirmed) once the product has it
HANDSHAKE_VARIANTS = ("db", "password", "acl")
DESCRIBE_VARIANT = {"db": "redis.db 99 (out of range)", "password": "a password sent to a Redis without one",
                    "acl": "ACL user chaos-acl with a wrong password"}
DBS = 16

CHECKS = {  # key -> (number, name)
    "hooks": (7, "hooks: one on_become_leader per term; no on_lose_leadership while the lease holds"),
    "handshake": (8, "a refused handshake runs nothing: no heartbeat, record, lease, event or task of it in any db"),
    "duplicate": (9, "a duplicate node id never leads, works or makes the real node left / lose its lease"),
    "handlers": (10, "no two copies of a task's handler at once; no handler outlives the run"),
    "disk": (11, "a full disk under the log dir: jobs keep running or the node stops claiming work"),
}


def wall_to_t(wall: float, offset: float) -> float:
    return wall - offset


def log_time(line: str):
    """The wall time of a log line "2026-01-01T00:00:00.000Z ..." (None if it has none)."""
    stamp = line.split(" ", 1)[0]
    try:
        main, _, frac = stamp.rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


def read_lines(path: str) -> list:
    try:
        with open(path, errors="replace") as fh:
            return [line.split() for line in fh]
    except OSError:
        return []


def read_hooks(path: str, offset: float) -> list:
    """[(hook, node, epoch, who, t)] from the hooks file."""
    out = []
    for parts in read_lines(path):
        if len(parts) == 5:
            try:
                out.append((parts[0], parts[1], int(parts[2]), parts[3], wall_to_t(float(parts[4]), offset)))
            except ValueError:
                pass
    return out


def read_executions(path: str, offset: float) -> list:
    """[(task, node, who, t)] of every start of the short handler."""
    out = []
    for parts in read_lines(path):
        if len(parts) == 5:
            try:
                out.append((parts[0], parts[1], parts[3], wall_to_t(float(parts[4]), offset)))
            except ValueError:
                pass
    return out


def lease_at(samples, t: float):
    """The (leader, epoch) the recorder saw in effect at ``t`` (None before the first sample)."""
    found = None
    for s in samples:
        if s.t > t:
            break
        found = s
    return (found.leader, found.epoch) if found is not None else None


# -- the hooks check, a pure function ------------------------------------------------------------

def check_hooks(hook_runs, lost_claims, samples, offset: float, lag_s: float = 0.25, until_t: float = None):
    """Violations: a term with two on_become_leader runs; a node saying it lost epoch E while Redis still
    showed it holding E ``lag_s`` after it said so (the recorder polls every 50 ms; ``until_t``: when it
    stopped, later claims are not judged)."""
    violations, facts = [], []
    became = {}
    for hook, node, epoch, who, t in hook_runs:
        if hook == "on_become_leader":
            became.setdefault(epoch, []).append("%s at t=%.2fs" % (who, t))
    for epoch in sorted(became):
        if len(became[epoch]) > 1:
            violations.append("on_become_leader ran %d times for epoch %d (%s)" % (
                len(became[epoch]), epoch, ", ".join(became[epoch])))
    for node, epoch, script, line in lost_claims:
        wall = log_time(line)
        if wall is None:
            continue
        t = wall_to_t(wall, offset)
        if until_t is not None and t + lag_s >= until_t:
            continue
        seen = lease_at(samples, t + lag_s)
        if seen == (node, epoch):
            violations.append("%s said 'lost leadership of epoch %d' at t=%.2fs (%s.log) while Redis still showed "
                              "%s holding epoch %d at t=%.2fs" % (node, epoch, t, script, node, epoch, t + lag_s))
    loses = sum(1 for h in hook_runs if h[0] == "on_lose_leadership")
    facts.append("%d on_become_leader runs over %d terms, %d on_lose_leadership runs" % (
        sum(len(v) for v in became.values()), len(became), loses))
    return violations, facts


def handler_overlaps(runs: dict, alive_until: dict) -> list:
    """runs: task -> [(pid, node, who, t_start, t_end or None)]; alive_until: pid -> last t seen alive."""
    out = []
    for task, items in sorted(runs.items()):
        spans = []
        for pid, node, who, start, end in items:
            stop = end if end is not None else alive_until.get(pid, start)
            spans.append((start, stop, pid, who))
        spans.sort()
        for (s1, e1, p1, w1), (s2, e2, p2, w2) in zip(spans, spans[1:]):
            if s2 < e1:
                out.append("task %s: handler pid %d (%s, started t=%.2fs) still ran at t=%.2fs when pid %d (%s) "
                           "started a second copy" % (task, p1, w1, s1, s2, p2, w2))
    return out


class HandlerWatch:
    """Follows the long handlers' start/end lines and whether each started pid is still alive."""

    def __init__(self, path: str, clock, offset: float, period_s: float = 0.1):
        self.path, self.clock, self.offset, self.period_s = path, clock, offset, period_s
        self.alive_until = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handler-watch", daemon=True)

    def start(self) -> "HandlerWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def runs(self) -> dict:
        starts, ends = {}, {}
        for parts in read_lines(self.path):
            if len(parts) != 6:
                continue
            try:
                pid, t = int(parts[2]), wall_to_t(float(parts[5]), self.offset)
            except ValueError:
                continue
            (starts if parts[0] == "start" else ends)[pid] = (parts[1], parts[3], parts[4], t)
        out = {}
        for pid, (task, node, who, t) in starts.items():
            out.setdefault(task, []).append((pid, node, who, t, ends[pid][3] if pid in ends else None))
        return out

    def running(self) -> list:
        """Pids of started handlers with no end line that are still alive."""
        out = []
        for items in self.runs().values():
            for pid, _node, _who, _start, end in items:
                if end is None and _alive(pid):
                    out.append(pid)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = self.clock()
            for pid in self.running():
                self.alive_until[pid] = now


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


class AdversaryFaults:
    """Mixed into run.Runner: the fault kinds of issue 13 and their checks."""

    def adversary_init(self) -> None:
        self.findings = {key: [] for key in CHECKS}
        self.findings_facts = {key: [] for key in CHECKS}
        self.wall_offset = time.time() - self.clock()
        self.hb_gaps = []        # (node, t_from, t_to or None, fault label) while disk_full ran
        self.duplicates = []     # (node id, who, log dir) of every duplicate started
        self.impostors = []      # impostor node ids
        self._handshakes = 0
        self.handler_watch = HandlerWatch(self.cluster.runs_path, self.clock, self.wall_offset).start()

    def _find(self, key: str, text: str, once=None) -> None:
        """File a violation; ``once``: report only the first finding with this identity (not every poll)."""
        seen = self.__dict__.setdefault("_found_once", set())
        ident = (key, once if once is not None else text)
        if ident in seen:
            return
        seen.add(ident)
        self.findings[key].append(text)
        self.say("  VIOLATION: " + text)

    def _poll_until(self, t_end: float, poll) -> None:
        while self.clock() < t_end:
            try:
                poll()
            except ConnectionError:
                pass
            time.sleep(0.1)

    # -- handshake refused ---------------------------------------------------------------------------------
    def _fault_handshake(self, record) -> None:
        c, t = self.cluster, self.timing
        variants = [v for v in HANDSHAKE_VARIANTS if v != "acl" or c.acl_user]
        variant = variants[self._handshakes % len(variants)]
        self._handshakes += 1
        imp_id = "hs%d" % record.spec.index
        env = {"db": {"REDIS_DB": "99"}, "password": {"REDIS_PASSWORD": "chaos-wrong-password"},
               "acl": {"REDIS_USERNAME": c.acl_user, "REDIS_PASSWORD": "chaos-wrong-password"}}[variant]
        record.node, record.detail = imp_id, DESCRIBE_VARIANT[variant]
        self.impostors.append(imp_id)
        node = c.extra_node(imp_id, "impostor-%d" % record.spec.index, who=imp_id, env=env)
        probe = c.probe_factory()
        label = "fault #%d handshake (%s)" % (record.spec.index, record.detail)

        def poll():
            commands = []
            for db in range(DBS):
                commands += [("SELECT", db), ("EXISTS", keys.heartbeat(imp_id)), ("HGET", keys.nodes(), imp_id),
                             ("GET", keys.leader())]
            replies = probe.request(commands + [("SELECT", 0)])
            for db in range(DBS):
                _ok, hb, rec, leader = replies[4 * db:4 * db + 4]
                now = self.clock()
                if hb == 1:
                    self._find("handshake", "%s: %s's heartbeat key exists in db %d (first seen t=%.1fs)" % (
                        label, imp_id, db, now), once=(label, "hb", db))
                if isinstance(rec, str):
                    self._find("handshake", "%s: %s has a member record in db %d (first seen t=%.1fs)" % (
                        label, imp_id, db, now), once=(label, "record", db))
                if leader == imp_id:
                    self._find("handshake", "%s: %s holds the lease in db %d (first seen t=%.1fs)" % (
                        label, imp_id, db, now), once=(label, "lease", db))
        record.t_inject = self.clock()
        node.start()
        try:
            self._poll_until(record.t_inject + record.spec.duration_s, poll)
        finally:
            node.terminate(t.lease_s)
            record.t_heal = self.clock()
            try:
                poll()
            except ConnectionError:
                pass
            probe.close()
        exits = sorted({code for _s, code, _e in node.finished})
        self.findings_facts["handshake"].append("%s: its processes ended with %s" % (
            label, "/".join(str(x) for x in exits) or "-"))
        record.t_ready = self.clock()

    # -- failover to a lagging copy --------------------------------------------------------------------------
    def _snapshot(self):
        conn = _RespConnection(self.cluster.redis.host, self.cluster.redis.port, 5.0, decode=False)
        try:
            names, cursor = [], b"0"
            while True:
                cursor, batch = conn.call("SCAN", cursor, "COUNT", 1000)
                names += batch
                if cursor in (b"0", "0"):
                    break
            out = []
            for name in names:
                pttl, payload = conn.call("PTTL", name), conn.call("DUMP", name)
                if payload is not None and pttl != -2:
                    out.append((name, pttl, payload))
            epoch = conn.call("GET", keys.epoch())
            return time.monotonic(), out, int(epoch) if epoch else 0
        finally:
            conn.close()

    def _restore(self, snap) -> int:
        taken, items, _epoch = snap
        elapsed_ms = int((time.monotonic() - taken) * 1000)
        commands = [("MULTI",), ("FLUSHALL",)]
        for name, pttl, payload in items:
            ttl = 0 if pttl == -1 else pttl - elapsed_ms
            if pttl == -1 or ttl > 0:
                commands.append(("RESTORE", name, ttl, payload))
        # The copy's data was written on the old master, so on the promoted replica the key that names the
        # server of the last election step names another server (Redis's run_id differs per process). This
        # process stays the same server, so write what a replica's copy would hold.
        commands.append(("SET", keys.server(), "old-master-of-the-lagging-copy"))
        commands.append(("EXEC",))
        conn = _RespConnection(self.cluster.redis.host, self.cluster.redis.port, 5.0, decode=False)
        try:
            from support.redis_server import _encode_command
            conn.sock.sendall(b"".join(_encode_command(cmd) for cmd in commands))
            replies = [conn.read() for _ in commands]
            conn.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # every node reconnects: a new master
        finally:
            conn.close()
        if not isinstance(replies[-1], list):
            raise RuntimeError("restoring the lagging copy failed: %r" % (replies[-1],))
        return len(commands) - 4

    def _fault_lagging_failover(self, record) -> None:
        c, t = self.cluster, self.timing
        if self.tasks is not None:
            self.tasks.pause()
            self.tasks.drain(8 * t.interval_s)
        leader = self.leader()
        followers = sorted(i for i in c.nodes if i != leader and c.nodes[i].state == "up")
        lagger = c.nodes[followers[record.spec.index % len(followers)]]
        record.node, record.detail = "redis", "%s paused across the newer term" % lagger.node_id
        record.t_inject = self.clock()
        lagger.pause()  # it will not see the epochs the copy misses
        snap = self._snapshot()
        old_epoch = snap[2]
        # a newer term the copy misses: the leader steps down (graceful), another node takes the lease
        if leader in c.nodes:
            node = c.nodes[leader]
            node.terminate(t.lease_s)
            deadline = self.clock() + 6 * t.interval_s
            while self.clock() < deadline:
                sample = self.recorder.poll_lease()
                if sample is not None and sample.epoch is not None and sample.epoch > old_epoch and sample.leader:
                    break
                time.sleep(0.05)
            node.start()
            self.wait_registered(node)
        time.sleep(max(0.0, record.t_inject + record.spec.duration_s - self.clock()))
        remembered = {n.node_id: n.memory().get("max_epoch", 0) for n in c.nodes.values() if n.state != "down"}
        restart = self.recorder.redis_stopping(True, remembered)
        restart.kind = "rollback to epoch %d" % old_epoch
        restored = self.recorder.rollback(restart, lambda: self._restore(snap))
        lagger.resume()  # it ticks first: its loops are overdue
        record.t_heal = record.t_ready = self.clock()
        self.recorder.redis_started(restart)
        self.say("  Redis replaced by the copy at epoch %d (%d keys); highest epoch before %d; %s resumed" % (
            old_epoch, restored, restart.max_epoch_before, lagger.node_id))
        if self.tasks is not None:
            self.tasks.resume()

    # -- a duplicate node id ------------------------------------------------------------------------------------
    def _fault_duplicate(self, record) -> None:
        c, t = self.cluster, self.timing
        real = c.nodes[record.node]
        who = real.node_id + "-dup%d" % record.spec.index
        dup = c.extra_node(real.node_id, "dup-%d" % record.spec.index, who=who, foreground=True)
        self.duplicates.append((real.node_id, who, dup))
        was_leader = self.leader() == real.node_id
        record.detail = "a second %s (%s) started while it %s" % (real.node_id, "node_manager.py run",
                                                                 "led" if was_leader else "followed")
        real_token = _read(os.path.join(real.log_dir, "run", real.node_id + ".instance"))
        label = "fault #%d duplicate of %s" % (record.spec.index, real.node_id)
        probe = c.probe_factory()
        phase = ["running"]

        def poll():
            raw, pttl, leader, term = probe.request([("HGET", keys.nodes(), real.node_id),
                                                     ("PTTL", keys.heartbeat(real.node_id)), ("GET", keys.leader()),
                                                     ("HGETALL", TERM_KEY)])
            now = self.clock()
            dup_token = _read(os.path.join(dup.log_dir, "run", real.node_id + ".instance"))
            try:
                rec = json.loads(raw) if isinstance(raw, str) else {}
            except ValueError:
                rec = {}
            if real.state != "up":
                return
            if isinstance(rec, dict) and rec.get("status") == "left":
                self._find("duplicate", "%s: the real %s is 'left' at t=%.1fs (duplicate %s)" % (
                    label, real.node_id, now, phase[0]), once=(label, "left"))
            if isinstance(rec, dict) and dup_token and rec.get("instance") == dup_token:
                self._find("duplicate", "%s: %s's member record carries the duplicate's instance token (t=%.1fs)"
                           % (label, real.node_id, now), once=(label, "instance"))
            if pttl == -2:
                self._find("duplicate", "%s: the real %s's heartbeat key is gone at t=%.1fs (duplicate %s)" % (
                    label, real.node_id, now, phase[0]), once=(label, "hb"))
            if was_leader and leader != real.node_id:
                self._find("duplicate", "%s: the real %s lost its lease at t=%.1fs (leader now %s; duplicate %s)"
                           % (label, real.node_id, now, leader or "none", phase[0]), once=(label, "lease"))
            if isinstance(term, list) and dup_token:
                fields = dict(zip(term[::2], term[1::2]))
                if fields.get("instance") == dup_token:
                    self._find("duplicate", "%s: the duplicate holds the term (epoch %s) at t=%.1fs" % (
                        label, fields.get("epoch"), now), once=(label, "term"))
        record.t_inject = self.clock()
        dup.start()
        try:
            self._poll_until(record.t_inject + record.spec.duration_s, poll)
        finally:
            phase[0] = "stopped (SIGTERM)"
            exited_alone = [code for _s, code in dup.unexpected_exits()]
            dup.terminate(t.lease_s + 10)
            record.t_heal = self.clock()
        self._poll_until(record.t_heal + 2 * t.interval_s, poll)
        probe.close()
        self.findings_facts["duplicate"].append("%s: the duplicate %s" % (
            label, "exited by itself with %s" % exited_alone[0] if exited_alone else "ran until SIGTERM"))
        for script in ("leader_election", "failover_manager"):
            for line in dup.log_lines(script):
                if ": became leader at epoch" in line or "marked at epoch" in line:
                    self._find("duplicate", "%s: the duplicate %s: %s (%s.log)" % (
                        label, "led" if "became" in line else "made a fenced write", line.split(": ", 1)[-1],
                        script))
        record.t_ready = self.clock()

    # -- worker SIGKILL during a long handler ---------------------------------------------------------------
    def _fault_worker_kill(self, record) -> None:
        c, t = self.cluster, self.timing
        node = c.nodes[record.node]
        task_id = self._submit_long(record.spec.index, node.node_id)
        record.detail = "task %s" % task_id
        record.t_inject = self.clock()
        started = None
        deadline = self.clock() + 12 * t.interval_s
        while task_id and self.clock() < deadline and started is None:
            started = next((items for task, items in self.handler_watch.runs().items() if task == task_id), None)
            time.sleep(0.05)
        if not started:
            self.notes.append("worker_kill #%d: the long task %s never started on %s; nothing killed" % (
                record.spec.index, task_id or "(not submitted)", node.node_id))
            record.t_heal = record.t_ready = self.clock()
            return
        time.sleep(0.5 * t.interval_s)
        record.t_inject = self.clock()
        pid = node.kill_process("task_queue.py")
        self.say("  SIGKILL of %s's worker (pid %s) while task %s runs" % (node.node_id, pid, task_id))
        if node.foreground:
            node.start()
            record.t_heal = self.clock()
            self.wait_registered(node)
        else:
            node.start(only="task_queue.py")
            record.t_heal = self.clock()
        end = self.clock() + record.spec.duration_s + 8 * t.interval_s
        while self.clock() < end:
            try:
                state = self.cluster.probe.request([("HGET", keys.task(task_id), "state")])[0]
            except ConnectionError:
                state = None
            if state in ("done", "dead"):
                break
            time.sleep(0.2)
        record.t_ready = self.clock()

    def _submit_long(self, index: int, node_id: str):
        argv = [sys.executable, os.path.join(SCRIPTS, "task_queue.py"), "submit", "--type", LONG_TASK_TYPE,
                "--node", node_id, "--key", "chaos-long-%d" % index, "--timeout", "%g" % (20 * self.timing.interval_s),
                "--json", "--quiet", "--config-dir", os.path.join(self.cluster.client_dir, "config"),
                "--log-dir", os.path.join(self.cluster.client_dir, "logs")]
        for _attempt in range(3):
            try:
                proc = subprocess.run(argv, env=clean_env(OPENCLAW_NODE_ID="chaos-client"), capture_output=True,
                                      text=True, timeout=10 * self.timing.interval_s)
                return json.loads(proc.stdout.strip().splitlines()[-1])["id"]
            except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError, TypeError):
                time.sleep(0.2)
        return None

    # -- a full disk under the log dir ---------------------------------------------------------------------
    def _fault_disk_full(self, record) -> None:
        c, t = self.cluster, self.timing
        node = c.nodes[record.node]
        filler = os.path.join(node.log_dir, "chaos-filler")
        label = "fault #%d disk_full on %s" % (record.spec.index, node.node_id)
        gap = [None]
        probe = c.probe_factory()

        def poll():
            pttl = probe.request([("PTTL", keys.heartbeat(node.node_id))])[0]
            now = self.clock()
            if pttl == -2 and gap[0] is None:
                gap[0] = now
            elif pttl != -2 and gap[0] is not None:
                self.hb_gaps.append((node.node_id, gap[0], now, label))
                gap[0] = None
        record.t_inject = self.clock()
        filled = _fill(filler)
        record.detail = "%d KiB filler" % (filled // 1024)
        try:
            leader = self.leader()
            if leader in c.nodes and leader != node.node_id:
                # a leadership change while the disk is full: every node must rewrite its election memory
                self._poll_until(self.clock() + t.interval_s, poll)
                other = c.nodes[leader]
                other.terminate(t.lease_s)
                self._poll_until(self.clock() + 2 * t.interval_s, poll)
                other.start()
                record.detail += "; leader %s restarted meanwhile" % leader
            self._poll_until(record.t_inject + record.spec.duration_s, poll)
        finally:
            try:
                os.unlink(filler)
            except OSError:
                pass
            record.t_heal = self.clock()
        self._poll_until(record.t_heal + 2 * t.interval_s, poll)
        probe.close()
        if gap[0] is not None:
            self.hb_gaps.append((node.node_id, gap[0], self.clock(), label))  # until the restart below
            if node.pid_of("task_queue.py") is not None:
                self._find("disk", "%s: its heartbeat key has been gone since t=%.1fs, 2 intervals after the disk "
                           "was freed, while its worker process still runs" % (label, gap[0]))
            # found and filed: restart the node so that the faults after this one meet a whole cluster
            node.terminate(t.lease_s + 10)
            node.start()
            self.wait_registered(node)
            record.detail += "; %s restarted after the check (its heartbeat never came back)" % node.node_id
        record.t_ready = self.clock()

    # -- the checks ---------------------------------------------------------------------------------------
    def adversary_checks(self, kinds, claims, ledger_path: str) -> list:
        import checker
        self.handler_watch.stop()
        executions = read_executions(ledger_path, self.wall_offset)
        wanted = ["hooks", "handlers"]
        if "handshake" in kinds:
            wanted.append("handshake")
            for e in self.recorder.events:
                if e.node in self.impostors:
                    self._find("handshake", "event %s (%s) was written for the refused %s" % (e.id, e.kind, e.node))
            for task, node, who, t in executions:
                if who in self.impostors:
                    self._find("handshake", "the refused %s ran task %s at t=%.1fs" % (who, task, t))
        if "duplicate" in kinds:
            wanted.append("duplicate")
            dups = {who: node_id for node_id, who, _dup in self.duplicates}
            for task, node, who, t in executions:
                if who in dups:
                    self._find("duplicate", "the duplicate %s (%s) claimed and ran task %s at t=%.1fs" % (
                        dups[who], who, task, t))
        if "disk_full" in kinds:
            wanted.append("disk")
            for node_id, t_from, t_to, label in self.hb_gaps:
                late = [(task, t) for task, node, who, t in executions
                        if who == node_id and t_from + self.timing.interval_s < t and (t_to is None or t <= t_to)]
                for task, t in late[:3]:
                    self._find("disk", "%s: %s's worker ran task %s at t=%.1fs while its heartbeat key had been "
                               "gone since t=%.1fs" % (label, node_id, task, t, t_from))
                self.findings_facts["disk"].append("%s: heartbeat key gone %.1fs-%s" % (
                    label, t_from, "%.1fs" % t_to if t_to is not None else "end"))
        hook_runs = read_hooks(self.cluster.hooks_path, self.wall_offset)
        violations, facts = check_hooks(hook_runs, claims.lost, self.recorder.samples, self.wall_offset,
                                        until_t=getattr(self, "t_observed", None))
        for v in violations:
            self._find("hooks", v)
        self.findings_facts["hooks"] += facts
        runs = self.handler_watch.runs()
        for v in handler_overlaps(runs, self.handler_watch.alive_until):
            self._find("handlers", v)
        orphans = self.handler_watch.running()
        for pid in orphans:
            self._find("handlers", "handler pid %d still runs after every node stopped (an orphan)" % pid)
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        self.findings_facts["handlers"].append("%d long handler runs over %d tasks" % (
            sum(len(v) for v in runs.values()), len(runs)))
        out = []
        for key in sorted(wanted, key=lambda k: CHECKS[k][0]):
            number, name = CHECKS[key]
            check = checker.Check(number, name)
            check.violations = list(self.findings[key])
            check.facts = list(self.findings_facts[key])
            out.append(check)
        return out


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _fill(path: str) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError:
                    break
    finally:
        os.close(fd)
    return written
