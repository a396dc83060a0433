"""Leader election: a lease in Redis, a fencing epoch per term, Redlock across several masters.

Shaped like client-go's ``leaderelection``: ``try_acquire_or_renew()`` is one
step, ``release()`` gives the lease up, and transitions fire the hooks
``on_become_leader``, ``on_lose_leadership`` and ``on_leader_change``.

The algorithm, one step (single Redis, one round trip, one Lua script):
  1. If someone holds the lease but Redis's epoch is below the highest epoch
     this node remembers, Redis lost data: raise it to remembered + 1, a
     value nobody has used; the holder adopts it at its next renewal.
  2. If this node holds the lease: release it if its own heartbeat key has
     expired (a leader that cannot heartbeat must not lead), else extend it.
  3. If another node holds it: follow.
  4. If it is vacant and this node is registered (not ``left``), has a live
     heartbeat and did not just release the lease: if Redis has no epoch at
     all (a new cluster, or Redis lost its data), wait one heartbeat
     interval first, while every live node's heartbeat raises the epoch to
     the highest it remembers; then INCR the epoch (never below remembered
     + 1) and take the lease at that epoch.
  5. If this node renewed but its Redis master changed since its last step
     (a Sentinel failover), it starts a new term: INCR under the fence
     (``lua.NEW_TERM``), one more round trip, only then.
  6. With ``election.min_replicas_acked``, a new term counts only once WAIT
     confirms that many replicas hold its lease and epoch (``lua.CONFIRM_TERM``
     + WAIT in one round trip); otherwise the lease is released at once.

With ``redis.instances`` (several independent masters) step 4 is Redlock:
claim on every instance, keep it only if a majority agreed within the
validity time (TTL minus elapsed minus drift), take one above the highest
epoch seen on that majority, write it back, and announce the lease in the
data Redis, where fenced writes are checked; otherwise release everywhere
and retry after a random delay.

Guaranteed: at most one node holds an unexpired lease at a given epoch, and
epochs only grow, including across a Redis that restarts empty, as long as
one node that saw the last epoch heartbeats during the bootstrap wait (each
node remembers the highest epoch it has seen). Every write a leader makes is a Lua
script that first checks, in Redis, that the lease is still the writer's at
its epoch (``lua.FENCE``), so a leader paused past its lease (GC, SIGSTOP,
partition) changes nothing when it wakes.

Not guaranteed: that a node *believes* it leads only while it does: a paused
leader may still think so; fencing is what makes that harmless. A Redis
without persistence or replication forgets the lease when it restarts: the
cluster then elects again and a new, higher epoch starts. Asynchronous
replication can lose the last writes on a failover; ``min_replicas_acked``
narrows that window (see Kleppmann's critique of Redlock: fencing tokens are
this project's answer to it).
"""

import hooks
import keys
import local_state
import lua
from errors import NodeIdCollision
from redis_client import Redis, RedisError, ResponseError, text

LEADER_OUTCOMES = ("renewed", "acquired")


class Observation:
    """What one election step saw: ``outcome``, ``leader``, ``epoch``, ``lease_ms``."""

    def __init__(self, outcome: str, leader: str, epoch: int, lease_ms: int):
        self.outcome, self.leader, self.epoch, self.lease_ms = outcome, leader, epoch, lease_ms

    @property
    def is_leader(self) -> bool:
        return self.outcome in LEADER_OUTCOMES

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "leader": self.leader or None, "epoch": self.epoch,
                "lease_ms": self.lease_ms, "is_leader": self.is_leader}


class Elector:
    """One node's view of the election, remembered between one-shot ticks in a local file."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.node_id = ctx.node_id
        self.lease_ms = int(ctx.cfg.lease_ttl_s * 1000)
        self.maxlen = ctx.cfg["cluster"]["events_maxlen"]
        # One heartbeat round. Every live node learns the epoch from each heartbeat, so
        # the first elector usually remembers the highest epoch already; the wait is for
        # one that joined since. Longer would delay every re-formation past two ticks.
        self.bootstrap_wait_ms = int(ctx.cfg["node"]["heartbeat_interval"] * 1000)
        self.state_path = local_state.epoch_memory_path(ctx.cfg.run_dir, self.node_id)
        self.instance = local_state.instance_token(ctx.cfg.run_dir, self.node_id)
        self.state = {}
        self._reload()

    def _reload(self) -> None:
        """Re-read the memory the node's other processes share (cron ticks, loops)."""
        state = local_state.read_json(self.state_path, None)
        self.state = state if isinstance(state, dict) else {}

    @property
    def remembered_epoch(self) -> int:
        return local_state.max_epoch_of(self.state)

    def try_acquire_or_renew(self) -> Observation:
        """One election step; fires hooks on transitions; remembers what it saw."""
        self._reload()
        if self.ctx.cfg["redis"]["instances"]:
            obs = self._redlock_step()
        else:
            reply = lua.ELECT(self.ctx.redis,
                              (keys.leader(), keys.epoch(), keys.heartbeat(self.node_id), keys.nodes(), keys.events(),
                               keys.bootstrap(), keys.released(self.node_id)),
                              (self.node_id, self.lease_ms, self.remembered_epoch, self.maxlen,
                               self.bootstrap_wait_ms, self.instance))
            obs = Observation(text(reply[0]), text(reply[1]), int(reply[2]), int(reply[3]))
            if obs.outcome == "collision":
                self._observe(Observation("collision", "", obs.epoch, 0))  # not leader, whatever the other does
                raise NodeIdCollision(
                    "node id %r is claimed by another live process (the cluster's record of it names another "
                    "instance); this one takes no part in the election: give this node its own node.id / "
                    "OPENCLAW_NODE_ID, or stop the other one" % self.node_id)
            obs = self._new_term_if_master_moved(obs)
        if obs.is_leader and self.ctx.cfg["election"]["min_replicas_acked"] and self._is_new_term(obs):
            obs = self._confirm_replicated(obs)
        self._observe(obs)
        return obs

    def release(self) -> bool:
        """Give the lease up at once if this node holds it, at whatever epoch.

        The memory file may not yet say this node leads (another of its processes
        took the lease a moment ago), so Redis decides: the script releases the
        lease only if it is this node's. Stepping down is always safe.
        """
        self._reload()
        released = self._release_at("")
        for client in self._instances():
            try:
                lua.REDLOCK_RELEASE(client, (keys.leader(),), (self.node_id,))
            except RedisError as exc:  # one instance down must not stop the release on the others
                self.ctx.log.warning("release on %s failed: %s", client.peer, exc)
        self._observe(Observation("released", "", self.state.get("epoch", 0), 0))
        return released

    def close(self) -> None:
        for client in getattr(self, "_clients", ()):
            client.close()

    def _release_at(self, epoch) -> bool:
        return lua.RELEASE(self.ctx.redis, (keys.leader(), keys.epoch(), keys.events(), keys.released(self.node_id)),
                           (self.node_id, epoch, self.maxlen, self.lease_ms)) == 1

    # -- transitions and memory --
    def _observe(self, obs: Observation) -> None:
        """Record what this step saw; fire hooks once per node for each transition.

        The memory file is updated under a lock, so when two processes of one
        node (a cron tick and the failover manager, say) see the same
        transition, exactly one of them fires its hook.
        """
        def change(state):
            state.update(is_leader=obs.is_leader, leader=obs.leader, epoch=obs.epoch,
                         max_epoch=max(local_state.max_epoch_of(state), obs.epoch))
        before = local_state.update_json(self.state_path, change)
        self.state = dict(before)
        change(self.state)
        was_leader, old_leader, old_epoch = before.get("is_leader", False), before.get("leader", ""), before.get("epoch", 0)
        new_term = obs.is_leader and (not was_leader or obs.epoch != old_epoch)
        log = self.ctx.log
        if new_term:
            log.info("became leader at epoch %d", obs.epoch)
            hooks.fire(self.ctx, "on_become_leader", obs.leader, obs.epoch)
        if was_leader and (not obs.is_leader or obs.epoch != old_epoch):
            log.warning("lost leadership of epoch %s (%s)", old_epoch, obs.outcome)
            hooks.fire(self.ctx, "on_lose_leadership", obs.leader, obs.epoch)
        if obs.leader and obs.leader != old_leader:
            log.info("leader is now %s (epoch %d)", obs.leader, obs.epoch)
            hooks.fire(self.ctx, "on_leader_change", obs.leader, obs.epoch)

    # -- surviving a Redis failover --
    def _is_new_term(self, obs: Observation) -> bool:
        return not self.state.get("is_leader") or self.state.get("epoch") != obs.epoch

    def _new_term_if_master_moved(self, obs: Observation) -> Observation:
        """A leader whose Redis master changed keeps the lease but starts a new, higher epoch.

        After a Sentinel failover the new master holds only what the old one
        had replicated, which may miss the running term's last writes; a new
        term makes every write still carrying the old epoch fail its fence,
        and gives the failover an epoch above every one seen before it. The
        master in use is remembered in the node's memory file, so one-shot
        ticks notice the change too. Costs a round trip only on a change.
        """
        master = getattr(self.ctx.redis, "peer", "")
        before = self.state.get("redis_master")
        if master and before != master:
            local_state.update_json(self.state_path, lambda state: state.update(redis_master=master))
            self.state["redis_master"] = master
        if not before or before == master or obs.outcome != "renewed":
            return obs
        try:
            epoch = lua.NEW_TERM(self.ctx.redis, (keys.leader(), keys.epoch(), keys.events()),
                                 (self.node_id, obs.epoch, self.lease_ms, self.maxlen, "redis master is now " + master))
        except ResponseError as exc:
            if not str(exc).startswith("FENCED"):
                raise
            self.ctx.log.warning("lease lost while starting a new term on %s: %s", master, exc)
            return Observation("fenced", "", obs.epoch, 0)
        self.ctx.log.warning("redis master moved from %s to %s: new term at epoch %d", before, master, epoch)
        return Observation("acquired", self.node_id, int(epoch), self.lease_ms)

    def _confirm_replicated(self, obs: Observation) -> Observation:
        """Keep a new term only once ``min_replicas_acked`` replicas hold its lease and epoch.

        One round trip: a fenced no-op write and WAIT, pipelined on one
        connection, so WAIT counts the replicas that received everything up
        to this term's lease and epoch (replication is one ordered stream,
        and WAIT only counts the writes of its own connection). Short of
        that within ``replica_wait_ms`` the lease is released, so a failover
        cannot promote a replica that never saw this epoch while the leader
        acts on it; another node (or this one after the handover pause)
        tries again.
        """
        election = self.ctx.cfg["election"]
        want, wait_ms = election["min_replicas_acked"], election["replica_wait_ms"]
        confirm, acked = self.ctx.redis.request([
            lua.CONFIRM_TERM.args((keys.leader(), keys.epoch()), (self.node_id, obs.epoch), False),
            ("WAIT", want, wait_ms)])
        if isinstance(confirm, ResponseError):
            self.ctx.log.warning("lease at epoch %d lost before replicas confirmed it: %s", obs.epoch, confirm)
            return Observation("unreplicated", "", obs.epoch, 0)
        if isinstance(acked, int) and acked >= want:
            return obs
        why = ("WAIT failed: %s" % acked if isinstance(acked, ResponseError)
               else "%s of %d replicas confirmed within %dms" % (acked, want, wait_ms))
        self.ctx.log.warning("not leading at epoch %d: %s; releasing the lease", obs.epoch, why)
        self._release_at(obs.epoch)
        return Observation("unreplicated", "", obs.epoch, 0)

    # -- Redlock over several independent masters --
    def _instances(self) -> list:
        if not hasattr(self, "_clients"):
            base = self.ctx.cfg["redis"]
            # each instance is its own master: the data Redis's Sentinel settings do not apply
            self._clients = [Redis.from_settings(dict(base, sentinels=[], master_name="", **ep))
                             for ep in base["instances"]]
        return self._clients

    def _redlock_step(self) -> Observation:
        import random
        import time
        for attempt in range(3):
            obs = self._redlock_attempt(time.monotonic)
            if obs is not None:
                return obs
            time.sleep(random.uniform(0.05, 0.2))  # desynchronise competing candidates
        return Observation("no_quorum", "", self.remembered_epoch, 0)

    def _redlock_attempt(self, clock):
        clients = self._instances()
        quorum = len(clients) // 2 + 1
        start = clock()
        mine, epochs, holders = [], [], []
        for client in clients:
            try:
                reply = lua.REDLOCK_CLAIM(client, (keys.leader(), keys.epoch()), (self.node_id, self.lease_ms))
            except RedisError as exc:  # an instance down counts as a vote not won
                self.ctx.log.debug("redlock: %s: %s", client.peer, exc)
                continue
            if text(reply[0]) == "mine":
                mine.append(client)
                epochs.append(int(reply[1]))
            else:
                holders.append(text(reply[1]))
                epochs.append(int(reply[2]))
        drift_ms = self.lease_ms * self.ctx.cfg["election"]["clock_drift_factor"] + 2
        validity_ms = int(self.lease_ms - (clock() - start) * 1000 - drift_ms)
        if len(mine) < quorum or validity_ms <= 0:
            self._redlock_release(mine)
            if holders:
                leader = max(set(holders), key=holders.count)
                return Observation("follower", leader, max(epochs), 0)
            return None  # split or timed out: retry after a random delay
        known = self.state.get("epoch", 0) if self.state.get("is_leader") else 0
        top = max(epochs + [self.remembered_epoch])
        epoch = known if known and known >= top else top + 1
        for client in mine:
            try:
                lua.REDLOCK_RAISE(client, (keys.leader(), keys.epoch()), (self.node_id, epoch))
            except RedisError as exc:
                self.ctx.log.debug("redlock: raise on %s: %s", client.peer, exc)
        reply = lua.REDLOCK_ANNOUNCE(self.ctx.redis, (keys.leader(), keys.epoch(), keys.heartbeat(self.node_id),
                                                      keys.nodes(), keys.events()),
                                     (self.node_id, validity_ms, epoch, self.maxlen))
        outcome = text(reply[0])
        if outcome != "ok":
            self._redlock_release(mine)
            self.state["max_epoch"] = max(self.remembered_epoch, int(reply[1]))
            return Observation("ineligible" if outcome == "ineligible" else "stale", "", int(reply[1]), 0)
        return Observation("renewed" if epoch == known else "acquired", self.node_id, epoch, validity_ms)

    def _redlock_release(self, clients) -> None:
        for client in clients:
            try:
                lua.REDLOCK_RELEASE(client, (keys.leader(),), (self.node_id,))
            except RedisError:
                pass  # it expires by itself
