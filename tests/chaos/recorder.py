"""What the harness saw: leaders and epochs from Redis (polled) and from the nodes' logs.

The recorder thread polls Redis every ``poll_s`` (50 ms): the lease holder
and the epoch, read atomically (MULTI/EXEC), kept as a sample whenever
either changes; and, every few polls, the new entries of the event stream
``openclaw:cluster:events`` that the elector's Lua scripts write with the
writer's epoch. Redis restarts are marked by the runner (``redis_stopping/stopped/started``)
so that samples are told apart by Redis lifetime and the stream is read again
from its start after an empty restart.

After the run, ``parse_logs`` reads each node's leader_election.log and
failover_manager.log for "became leader at epoch N", "lost leadership of
epoch N" and "node X is offline ...; marked at epoch N".
"""

import re
import threading
import time

LEADER_KEY = "openclaw:cluster:leader"
EPOCH_KEY = "openclaw:cluster:epoch"
EVENTS_KEY = "openclaw:cluster:events"
EVENT_BATCH = 500


class Sample:
    __slots__ = ("t", "leader", "epoch", "generation")

    def __init__(self, t: float, leader, epoch, generation: int):
        self.t, self.leader, self.epoch, self.generation = t, leader, epoch, generation

    def __repr__(self):
        return "Sample(t=%.3f, leader=%r, epoch=%r, gen=%d)" % (self.t, self.leader, self.epoch, self.generation)


class Event:
    __slots__ = ("t", "id", "kind", "node", "epoch", "generation")

    def __init__(self, t: float, entry_id: str, kind: str, node: str, epoch: int, generation: int):
        self.t, self.id, self.kind, self.node, self.epoch, self.generation = t, entry_id, kind, node, epoch, generation

    def __repr__(self):
        return "Event(%s %s node=%s epoch=%d gen=%d)" % (self.id, self.kind, self.node, self.epoch, self.generation)


class Restart:
    """A Redis restart as the runner did it: when it went down, whether it came back empty."""

    def __init__(self, t_down: float, empty: bool, generation: int, max_epoch_before: int, remembered: dict):
        self.t_down, self.empty, self.generation = t_down, empty, generation
        self.t_up = None
        self.kind = "empty" if empty else "aof"   # or "rollback to epoch N": replaced by an older copy
        self.max_epoch_before = max_epoch_before
        self.remembered = remembered  # node id -> highest epoch its memory file held when Redis went down


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _next_id(entry_id: str) -> str:
    """The smallest stream id above ``entry_id`` (XRANGE's exclusive '(' needs Redis 6.2)."""
    ms, _, seq = entry_id.partition("-")
    return "%s-%d" % (ms, int(seq or 0) + 1)


class Recorder:
    """Polls Redis in a thread; ``samples``, ``events`` and ``restarts`` are the record."""

    def __init__(self, probe, clock=time.monotonic, poll_s: float = 0.05, events_every: int = 4):
        self.probe, self.clock, self.poll_s, self.events_every = probe, clock, poll_s, events_every
        self.samples, self.events, self.restarts = [], [], []
        self.polls = self.failed_polls = 0
        self.generation = 0
        self._cursor = "0-0"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._crash = ""

    # -- the thread --
    def start(self) -> "Recorder":
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.poll_events()

    @property
    def crash(self) -> str:
        """Why the polling thread died ('' while it runs): the record after that is incomplete."""
        return self._crash

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.wait(self.poll_s):
                self.poll_lease()
                n += 1
                if n % self.events_every == 0:
                    self.poll_events()
        except Exception as exc:  # a harness bug: the runner reports the run as not done, not as violations
            self._crash = "%s: %s" % (type(exc).__name__, exc)
            raise

    # -- one observation --
    def poll_lease(self):
        """Read (leader, epoch) atomically; keep a sample when it changed. Returns the sample or None."""
        with self._lock:
            self.polls += 1
            try:
                replies = self.probe.request([("MULTI",), ("GET", LEADER_KEY), ("GET", EPOCH_KEY), ("EXEC",)])
            except ConnectionError:
                self.failed_polls += 1
                return None
            if not isinstance(replies[-1], list):  # EXECABORT: e.g. LOADING while Redis restarts
                self.failed_polls += 1
                return None
            leader, epoch = replies[-1]
            sample = Sample(self.clock(), _text(leader), int(epoch) if epoch is not None else None,
                            self.generation)
            last = self.samples[-1] if self.samples else None
            if last is None or (last.leader, last.epoch, last.generation) != (sample.leader, sample.epoch,
                                                                              sample.generation):
                self.samples.append(sample)
            return sample

    def poll_events(self) -> int:
        """Read the stream entries added since the last read; returns how many."""
        with self._lock:
            got = 0
            while True:
                try:
                    reply = self.probe.request([("XRANGE", EVENTS_KEY, self._cursor, "+", "COUNT", EVENT_BATCH)])[0]
                except ConnectionError:
                    return got
                if not isinstance(reply, list):
                    return got  # WRONGTYPE or similar: the checks report the missing events
                for entry_id, flat in reply:
                    entry_id = _text(entry_id)
                    fields = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2])}
                    self.events.append(Event(self.clock(), entry_id, fields.get("type", "?"),
                                             fields.get("node", "?"), int(fields.get("epoch") or 0),
                                             self.generation))
                    self._cursor = _next_id(entry_id)
                got += len(reply)
                if len(reply) < EVENT_BATCH:
                    return got

    # -- Redis restarts, told by the runner --
    def redis_stopping(self, empty: bool, remembered: dict) -> Restart:
        """Redis is about to stop: read what it still holds; the restart is numbered but not begun."""
        self.poll_events()
        self.poll_lease()
        return Restart(self.clock(), empty, self.generation + 1, self.max_epoch(), remembered)

    def redis_stopped(self, restart: Restart) -> None:
        """Redis is gone: what is read from now on belongs to its next life (an empty one: stream from 0)."""
        with self._lock:
            self.restarts.append(restart)
            self.generation = restart.generation
            if restart.empty:
                self._cursor = "0-0"

    def rollback(self, restart: Restart, replace):
        """Redis's data is replaced by an older copy (``replace()``, atomic in Redis) between two polls:
        what is read from then on belongs to its next life; the event stream keeps its cursor (new entries
        get ids above the copy's last). Returns what ``replace`` returned."""
        with self._lock:
            result = replace()
            self.restarts.append(restart)
            self.generation = restart.generation
            return result

    def redis_started(self, restart: Restart) -> None:
        restart.t_up = self.clock()

    # -- summaries --
    def max_epoch(self) -> int:
        epochs = [s.epoch for s in self.samples if s.epoch is not None] + [e.epoch for e in self.events]
        return max(epochs) if epochs else 0

    def first_other_leader(self, after_t: float, old_leader: str, until_t: float = None):
        """The first sample after ``after_t`` with a leader other than ``old_leader``: (t, leader) or None."""
        for sample in self.samples:
            if sample.t <= after_t or sample.leader in (None, old_leader):
                continue
            if until_t is not None and sample.t > until_t:
                return None
            return sample.t, sample.leader
        return None


# -- the nodes' logs -------------------------------------------------------

BECAME = re.compile(r"^(\S+) \w+ node=(\S+) (\S+): became leader at epoch (\d+)")
LOST = re.compile(r"^(\S+) \w+ node=(\S+) (\S+): lost leadership of epoch (\d+)")
MARKED = re.compile(r"^(\S+) \w+ node=(\S+) (\S+): node (\S+) is offline \(heartbeat expired\); marked at epoch (\d+)")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|unexpected error")


class LogClaims:
    """What the nodes said about themselves: (node, epoch, script, line) tuples per kind."""

    def __init__(self):
        self.became, self.lost, self.marked = [], [], []
        self.tracebacks = []  # (node, where, line)


def parse_logs(nodes) -> LogClaims:
    """Read every node's election and failover logs (and console output for tracebacks)."""
    claims = LogClaims()
    for node in nodes:
        for script in ("leader_election", "failover_manager"):
            for line in node.log_lines(script):
                m = BECAME.match(line)
                if m:
                    claims.became.append((m.group(2), int(m.group(4)), m.group(3), line))
                    continue
                m = LOST.match(line)
                if m:
                    claims.lost.append((m.group(2), int(m.group(4)), m.group(3), line))
                    continue
                m = MARKED.match(line)
                if m:
                    claims.marked.append((m.group(2), int(m.group(5)), m.group(4), line))
        for where, text in (("console", node.console_text()),) + tuple(
                (s, "\n".join(node.log_lines(s))) for s in ("heartbeat", "leader_election", "failover_manager",
                                                             "task_queue")):
            for line in text.splitlines():
                if TRACEBACK.search(line):
                    claims.tracebacks.append((node.node_id, where, line.strip()[:200]))
    return claims
