"""The fault schedule: a pure function of the seed and the timing, so a run can be replayed.

The schedule fixes, for each fault in order: its kind, whether it targets the
leader of the moment or a follower (and which follower, by rank), how long it
lasts and the pause after the cluster has converged again. Which node id
plays the leader is the cluster's choice, not the schedule's. Every kind
comes once, in a seeded order, before any kind repeats, and in that first
round every node fault hits the leader, so even a short run exercises all of
them and measures every kind of failover.

Faults never overlap: each is healed, and the cluster has converged, before
the next one starts. In particular Redis never restarts while a node is down,
stopped or cut off, which keeps the run clear of the documented limit of the
epoch floor (an empty Redis can reuse an epoch only if every node that saw the
last one is down while it restarts).
"""

import random

KINDS = ("kill", "stop", "graceful", "stall_delay", "stall_cut", "redis_empty", "redis_aof", "partition",
         "handshake", "lagging_failover", "duplicate", "worker_kill", "disk_full")
# Only with --redlock (three lease instances beside the data Redis): see redlock.py.
REDLOCK_KINDS = ("redlock_slow", "redlock_empty")
ALL_KINDS = KINDS + REDLOCK_KINDS
# Faults on a node that take the lease away when they hit the leader.
NODE_KINDS = ("kill", "stop", "graceful", "stall_delay", "stall_cut", "partition")
# Faults on a node that must NOT cost it the lease (a duplicate of it, one process of it, its disk).
SIDE_KINDS = ("duplicate", "worker_kill", "disk_full")
# The failover-time category of a fault on the leader.
CATEGORY = {"kill": "crash", "graceful": "graceful", "stop": "stall", "stall_delay": "stall",
            "stall_cut": "stall", "partition": "stall"}


class FaultSpec:
    """One planned fault. ``target`` is "leader", "follower:<rank>" or "redis"."""

    __slots__ = ("index", "kind", "target", "duration_s", "gap_s", "delay_s")

    def __init__(self, index: int, kind: str, target: str, duration_s: float, gap_s: float, delay_s: float = 0.0):
        self.index, self.kind, self.target = index, kind, target
        self.duration_s, self.gap_s, self.delay_s = duration_s, gap_s, delay_s

    def as_tuple(self) -> tuple:
        return (self.index, self.kind, self.target, self.duration_s, self.gap_s, self.delay_s)

    def describe(self) -> str:
        extra = ", replies %.1fs late" % self.delay_s if self.kind in ("stall_delay", "redlock_slow") else ""
        return "#%d %s on %s for %.1fs%s" % (self.index, self.kind, self.target, self.duration_s, extra)


def make_schedule(seed: int, timing, kinds=KINDS, count: int = 200, leader_share: float = 0.7) -> list:
    """``count`` faults drawn from ``kinds`` with ``random.Random(seed)``.

    Durations: node faults last past the lease (lease + 2 to 3 intervals), so a
    fault on the leader always forces a failover, with an interval to spare; Redis is down for half an
    interval to two intervals. A delay stall holds every chunk for the lease plus an
    interval: the node's requests time out on its side and land in Redis after
    its lease has lapsed (the late writes fencing must refuse).
    """
    rng = random.Random(seed)
    kinds = list(kinds)
    out, deck = [], []
    i = timing.interval_s
    for index in range(count):
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        kind = deck.pop(0)
        if kind in ("redis_empty", "redis_aof"):
            target, duration = "redis", rng.uniform(0.5 * i, 2 * i)
        elif kind == "lagging_failover":
            target, duration = "redis", timing.lease_s + rng.uniform(i, 2 * i)
        elif kind == "handshake":
            target, duration = "impostor", timing.lease_s + rng.uniform(i, 2 * i)
        elif kind == "redlock_empty":  # how long each killed lease instance stays down
            target, duration = "redlock", rng.uniform(0.5 * i, 2 * i)
        elif kind == "redlock_slow":
            target, duration = "redlock", timing.lease_s + rng.uniform(2 * i, 4 * i)
        else:
            duration = timing.lease_s + rng.uniform(2 * i, 3 * i)
            first_round = index < len(kinds)
            target = "leader" if first_round or rng.random() < leader_share else "follower:%d" % rng.randrange(1000)
            if kind == "partition":
                target = "partition-node"
        delay = timing.lease_s + i if kind == "stall_delay" else 0.0
        if kind == "redlock_slow":  # each way: a round trip below or above the socket timeout (one interval)
            delay = round(rng.uniform(0.2 * i, 0.7 * i), 2)
        out.append(FaultSpec(index + 1, kind, target, round(duration, 2), round(rng.uniform(0, i), 2), delay))
    return out
