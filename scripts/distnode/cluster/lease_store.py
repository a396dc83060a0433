"""Where the leader lease lives: the small interface the elector steps over, and the single-Redis store.

Shaped like client-go's ``resourcelock.Interface``: the elector
(``cluster/elector.py``) decides what a step means (hooks, memory, replica
confirmation); a store only talks to Redis. Two stores implement it:

- ``SingleRedisStore`` (here): the lease in the data Redis, one ``elect``
  script per step (steps 1-6 of the elector's docstring, numbered the same
  way in ``lua/elect.lua``);
- ``RedlockStore`` (``cluster/redlock_store.py``): claims on several
  independent masters (``redis.instances``), announced into the data Redis
  through a ``SingleRedisStore``.

A store has:

``exclusive(step)``
    run ``step()`` (one election step) and return its Observation; Redlock
    runs it under the node's attempt lock.
``acquire_or_renew() -> Observation``
    one attempt to take or extend the lease. A ``collision`` outcome is
    returned, not raised: the elector decides what it means.
``release(epoch="") -> bool``
    give this process's lease up (in the term at ``epoch``; "": any term).
    True if the data Redis's lease was this process's and is gone.
``drop(led_epoch, obs)``
    after a step that came out not leading: give up what this process held
    at those terms (Redlock's claims); nothing for a single Redis.
``close()``
    close connections the store opened itself.

There is no ``get``/``update`` pair as in client-go: reading the lease and
writing it there are two round trips with a race between them, which client-go
closes with a resource version; here each attempt is one Lua script, atomic
in Redis, so a store reads and writes in the same step.

Guarantee of every store: it never writes a lease, term or claim of another
process (another node, or another instance token with this node id), and a
release matches the term (instance token + epoch), never only the node id.
"""

from distnode import lua
from distnode.core import keys
from distnode.core import local_state

LEADER_OUTCOMES = ("renewed", "acquired")


class Observation:
    """What one election step saw: ``outcome``, ``leader``, ``epoch``, ``lease_ms`` (what is left of the lease)."""

    def __init__(self, outcome: str, leader: str, epoch: int, lease_ms: int, confirmed: bool = True):
        self.outcome, self.leader, self.epoch, self.lease_ms = outcome, leader, epoch, lease_ms
        self.confirmed = confirmed  # False: a term replicas have not confirmed yet (min_replicas_acked)

    def __repr__(self) -> str:
        return "Observation(%r, %r, %d, %d, %r)" % (self.outcome, self.leader, self.epoch, self.lease_ms,
                                                    self.confirmed)

    @property
    def is_leader(self) -> bool:
        return self.outcome in LEADER_OUTCOMES

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "leader": self.leader or None, "epoch": self.epoch,
                "lease_ms": self.lease_ms, "is_leader": self.is_leader}


class Memory:
    """This node's election memory: one JSON file in the run dir that every process of the node shares
    (cron ticks, loops), so each remembers the highest epoch any of them saw (``local_state``)."""

    def __init__(self, ctx, node_id: str):
        self.log = ctx.log
        self.path = local_state.epoch_memory_path(ctx.cfg.run_dir, node_id)
        self.state = {}
        self.reload()

    def reload(self) -> None:
        """Re-read the file (another process of the node may have written it since)."""
        state = local_state.read_json(self.path, None)
        self.state = state if isinstance(state, dict) else {}
        if local_state.corrupt_epoch(self.state) is not None:
            self.log.warning("ignoring max_epoch %.40r in %s: not an integer in [0, %d)",
                             local_state.corrupt_epoch(self.state), self.path, local_state.EPOCH_LIMIT)

    @property
    def remembered_epoch(self) -> int:
        """The highest epoch this node saw (0: none, or a corrupt value)."""
        return local_state.max_epoch_of(self.state)

    @property
    def led_epoch(self) -> int:
        """The epoch of the term this node last recorded leading (0: it did not lead)."""
        return self.state.get("epoch", 0) if self.state.get("is_leader") else 0

    def update(self, change) -> dict:
        """Apply ``change(state)`` to the file under its lock, and to this copy; return the state before."""
        before = local_state.update_json(self.path, change)
        change(self.state)
        return before


class SingleRedisStore:
    """The lease in the data Redis (``ctx.redis``): one round trip and one script per step."""

    def __init__(self, ctx, memory: Memory, instance: str):
        self.ctx, self.memory, self.instance = ctx, memory, instance
        self.node_id = ctx.node_id
        self.lease_ms = int(ctx.cfg.lease_ttl_s * 1000)
        self.maxlen = ctx.cfg["cluster"]["events_maxlen"]
        # One heartbeat round. Every live node learns the epoch from each heartbeat, so
        # the first elector usually remembers the highest epoch already; the wait is for
        # one that joined since. Longer would delay every re-formation past two ticks.
        self.bootstrap_wait_ms = int(ctx.cfg.heartbeat_interval_s * 1000)

    def exclusive(self, step):
        return step()  # one script is atomic in Redis: nothing to hold locally

    def acquire_or_renew(self) -> Observation:
        """Steps 1-6 (the elector's docstring) in one ``elect`` script."""
        unconfirmed = "0" if self.ctx.cfg["election"]["min_replicas_acked"] else "1"
        reply = lua.run(self.ctx.redis, "elect",
                        (keys.leader(), keys.epoch(), keys.heartbeat(self.node_id), keys.nodes(), keys.events(),
                         keys.bootstrap(), keys.released(self.node_id), keys.term(), keys.server()),
                        (self.node_id, self.lease_ms, self.memory.remembered_epoch, self.maxlen,
                         self.bootstrap_wait_ms, self.instance, unconfirmed))
        self._remember_master()
        return Observation(reply.outcome, reply.leader, reply.epoch, reply.pttl_ms, reply.confirmed)

    def release(self, epoch="") -> bool:
        """Release the lease if this process holds it (its term's instance), in the term at ``epoch``."""
        return lua.run(self.ctx.redis, "release",
                       (keys.leader(), keys.epoch(), keys.events(), keys.released(self.node_id), keys.term()),
                       (self.node_id, epoch, self.maxlen, self.lease_ms, self.instance))

    def drop(self, led_epoch: int, obs: Observation) -> None:
        """Nothing: the ``elect`` script already changed what a step that does not lead must change."""

    def close(self) -> None:
        """Nothing: the data Redis is the context's connection."""

    def _remember_master(self) -> None:
        """Remember the address of the master this step ran on (``status``, logs); written on a change.

        Noticing a master change is the script's job (``keys.server()``, step 3), so that the
        node stepping first after a failover notices it, whatever it remembers.
        """
        master = getattr(self.ctx.redis, "peer", "")
        before = self.memory.state.get("redis_master")
        if master and before != master:
            if before:
                self.ctx.log.warning("redis master is now %s (was %s)", master, before)
            self.memory.update(lambda state: state.update(redis_master=master))
