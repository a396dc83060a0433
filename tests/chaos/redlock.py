"""The Redlock mode of the chaos run (``run.py --redlock``): its fault kinds and its lease check.

In this mode the nodes elect over three independent lease instances (the
config's ``redis.instances``), each its own private ``redis-server`` behind
its own stall-proxy listener that every node shares, and announce the lease
in the data Redis, where fenced writes are checked (as ``scripts/elector.py``
describes). Two fault kinds:

- ``redlock_slow``: one lease instance answers late (its proxy holds every
  chunk, both ways, 0.2 to 0.7 intervals: a round trip below or above the
  socket timeout) for a while, so a Redlock attempt spends much of its
  validity before it announces;
- ``redlock_empty``: lease instances killed (``-9``) and restarted with no
  data: in turn one instance, a majority (two of three at once), and all
  three one after another (never a majority down at once).

Check 12 (``RedlockWatch``, every 100 ms for the whole run): the data
Redis's lease never outlives the quorum's, that is its PTTL is never above
what is left on a majority of instances (the second-longest PTTL of three
among the instances whose claim names the same node and process) plus the
time the reads took plus ``TOLERANCE_MS``. The data Redis is read first,
so a renewal between the reads only makes the instances look longer-lived.
It is not judged while lease instances have just lost their data (from a
``redlock_empty`` kill until a lease after the restart: the quorum then
forgets a lease by design, see the Redlock limits in docs/en/production.md) nor around a
``lagging_failover`` (the data Redis is replaced by an older copy).
For ``redlock_empty`` the run's own checks judge: 1 (no epoch held by two
leaders), 2 (epochs in the data Redis only grow) and 7 (hooks).
"""

import threading
import time

from distnode.core import keys  # noqa: E402  (scripts/ is on the path through cluster)

TOLERANCE_MS = 150     # the poll's own slack: the announce's one-way delay, a descheduled process
POLL_S = 0.1
EMPTY_VARIANTS = ("one", "majority", "rolling")
CHECK = (12, "redlock: the data Redis's lease never outlives the quorum's (majority of the instances' PTTL "
             "+ %d ms)" % TOLERANCE_MS)


def quorum_left_ms(holder: str, token, reads, quorum: int) -> int:
    """What is left of ``holder``'s lease on a majority: the ``quorum``-th longest PTTL among the
    instances whose claim names ``holder`` (and, where both are known, the same process ``token``).
    ``reads``: one (holder, pttl ms, claim token) per instance, None for an instance that did not answer."""
    lefts = []
    for read in reads:
        left = 0
        if read is not None:
            who, pttl, claim_token = read
            same_process = not token or not claim_token or claim_token == token
            if who == holder and same_process and isinstance(pttl, int) and pttl > 0:
                left = pttl
        lefts.append(left)
    lefts.sort(reverse=True)
    return lefts[quorum - 1] if len(lefts) >= quorum else 0


def judge(data_holder, data_pttl, data_token, reads, read_ms: float, quorum: int, tolerance_ms: int = TOLERANCE_MS):
    """(margin ms, violation text or None): margin = data PTTL - quorum's remainder - read time."""
    if not data_holder or not isinstance(data_pttl, int) or data_pttl <= 0:
        return None, None
    left = quorum_left_ms(data_holder, data_token, reads, quorum)
    margin = data_pttl - left - read_ms
    if margin <= tolerance_ms:
        return margin, None
    shown = ", ".join("-" if r is None else ("%s %dms" % (r[0], r[1]) if r[0] else "vacant") for r in reads)
    return margin, ("the data Redis's lease of %s has %d ms left, the quorum's only %d ms (instances: %s; "
                    "reads took %d ms)" % (data_holder, data_pttl, left, shown, read_ms))


class RedlockWatch:
    """Polls the data Redis and every lease instance (directly, not through the proxy) for check 12."""

    def __init__(self, data_probe, instance_probes: list, clock, poll_s: float = POLL_S):
        self.data, self.instances, self.clock, self.poll_s = data_probe, instance_probes, clock, poll_s
        self.quorum = len(instance_probes) // 2 + 1
        self.label = "before the first fault"
        self.violations, self.polls, self.judged, self.skipped = [], 0, 0, 0
        self.margins = {}          # label -> highest margin seen (ms)
        self._suspended = 0
        self._resume_at = 0.0
        self._seen = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redlock-watch", daemon=True)

    def start(self) -> "RedlockWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def suspend(self) -> None:
        with self._lock:
            self._suspended += 1

    def resume(self, after_s: float) -> None:
        """Judge again ``after_s`` from now."""
        with self._lock:
            self._suspended = max(0, self._suspended - 1)
            self._resume_at = max(self._resume_at, self.clock() + after_s)

    def _judging(self) -> bool:
        with self._lock:
            return not self._suspended and self.clock() >= self._resume_at

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.polls += 1
            if not self._judging():
                self.skipped += 1
                continue
            try:
                self.poll_once()
            except ConnectionError:
                self.skipped += 1

    def poll_once(self) -> None:
        label = self.label
        started = time.monotonic()
        replies = self.data.request([("MULTI",), ("GET", keys.leader()), ("PTTL", keys.leader()),
                                     ("HMGET", keys.term(), "instance", "epoch"), ("EXEC",)])
        if not isinstance(replies[-1], list):
            self.skipped += 1
            return
        holder, pttl, (token, epoch) = replies[-1]
        reads = []
        for probe in self.instances:
            try:
                got = probe.request([("MULTI",), ("GET", keys.leader()), ("PTTL", keys.leader()),
                                     ("HGET", keys.redlock_claim(), "instance"), ("EXEC",)])[-1]
                reads.append(tuple(got) if isinstance(got, list) else None)
            except ConnectionError:
                reads.append(None)
        read_ms = (time.monotonic() - started) * 1000
        if not self._judging():  # a fault began while we read
            self.skipped += 1
            return
        margin, violation = judge(holder, pttl, token, reads, read_ms, self.quorum)
        if margin is None:
            return
        self.judged += 1
        self.margins[label] = max(self.margins.get(label, margin), margin)
        if violation and (holder, epoch, label) not in self._seen:
            self._seen.add((holder, epoch, label))
            self.violations.append("t=%.2fs, %s, epoch %s: %s" % (self.clock(), label, epoch, violation))


class RedlockFaults:
    """Mixed into run.Runner (``--redlock``): the Redlock fault kinds and check 12."""

    def redlock_init(self) -> None:
        c = self.cluster
        self.redlock_watch = RedlockWatch(c.probe_factory(), [c.lease_probe(i) for i in range(len(c.leases))],
                                          self.clock).start()
        self._redlock_empties = 0

    def _fault_redlock_slow(self, record) -> None:
        c = self.cluster
        which = record.spec.index % len(c.leases)
        record.detail = "lease instance L%d replies %.2fs late each way" % (which + 1, record.spec.delay_s)
        record.t_inject = self.clock()
        c.lease_proxies[which].set_mode("lease", "delay", record.spec.delay_s)
        self._hold(record)
        c.lease_proxies[which].set_mode("lease", "pass")
        record.t_ready = self.clock()

    def _fault_redlock_empty(self, record) -> None:
        c, t = self.cluster, self.timing
        n = len(c.leases)
        variant = EMPTY_VARIANTS[self._redlock_empties % len(EMPTY_VARIANTS)]
        self._redlock_empties += 1
        first = record.spec.index % n
        if variant == "one":
            rounds = [[first]]
        elif variant == "majority":
            rounds = [[(first + k) % n for k in range(n // 2 + 1)]]
        else:
            rounds = [[(first + k) % n] for k in range(n)]
        record.detail = "%s: %s killed and restarted empty" % (variant, " then ".join(
            "+".join("L%d" % (i + 1) for i in group) for group in rounds))
        self.redlock_watch.suspend()
        record.t_inject = self.clock()
        try:
            for k, group in enumerate(rounds):
                if k:
                    time.sleep(t.interval_s)  # the survivors' claims are renewed before the next one goes
                down_at = self.clock()
                for i in group:
                    c.leases[i].kill()
                time.sleep(max(0.0, down_at + record.spec.duration_s - self.clock()))
                for i in group:
                    c.leases[i].restart(keep_data=False)
        finally:
            record.t_heal = record.t_ready = self.clock()
            self.redlock_watch.resume(t.lease_s + t.interval_s)

    def redlock_checks(self) -> list:
        import checker
        w = self.redlock_watch
        w.stop()
        check = checker.Check(*CHECK)
        check.violations = list(w.violations)
        check.facts = ["%d polls, %d judged (a lease held), %d skipped (instances just emptied, a lagging "
                       "failover, Redis away)" % (w.polls, w.judged, w.skipped)]
        slow = sorted((int(label.split("#")[1].split()[0]), m) for label, m in w.margins.items()
                      if "redlock_slow" in label)
        if slow:
            check.facts.append("highest data-minus-quorum margin during redlock_slow (ms): %s" % ", ".join(
                "#%d %+d" % (index, m) for index, m in slow))
        if w.margins:
            check.facts.append("highest margin over the run: %+d ms" % max(w.margins.values()))
        return [check]
