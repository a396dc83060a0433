"""Leader election: a lease in Redis, a fencing epoch per term, behind a small lease-store interface.

Shaped like client-go's ``tools/leaderelection``: ``try_acquire_or_renew()``
is one step, ``release()`` gives the lease up, and transitions fire the hooks
``on_become_leader``, ``on_lose_leadership`` and ``on_leader_change`` ("new
leader observed"). Where the lease lives is a store's business
(``cluster/lease_store.py``): ``SingleRedisStore`` (the data Redis) or
``RedlockStore`` (``cluster/redlock_store.py``: several independent masters,
``redis.instances``, its own steps R1-R5, announced into the data Redis).
The elector keeps the node's memory (a file its processes share), fires the
hooks and, with ``election.min_replicas_acked``, confirms a new term.
The leader_election job's tick over it is ``cluster/election_job.py``; in a
living process (``--loop``, ``--foreground``) it also waits between steps so
that a follower steps the moment the lease is vacant.

One step with a single Redis (one round trip: ``lua/elect.lua``, whose
comments carry the same numbers):
  1. Check: every key has its expected type, the epoch key holds an epoch,
     the remembered epoch is one; an error reply before any write.
  2. Collision: this node's record names another instance token while the
     id's heartbeat is live (a copied config on another machine), or the
     lease is held under this node id by a term of another instance token
     while the heartbeat is live and the record is not this process's:
     nothing changes; this process never renews, releases or writes through
     it, and the step raises NodeIdCollision. A record whose heartbeat lapsed
     is a dead predecessor's, which this process's next heartbeat takes over;
     a lease whose term is such a predecessor's (the heartbeat lapsed, or this
     process's heartbeat took the record over since) is waited out:
     ``predecessor``, nothing changes, and once the lease lapsed this process
     takes it at a new epoch (step 6).
  3. Epoch floor and master change: a bootstrap round (one heartbeat
     interval, ``keys.bootstrap()``) starts when Redis has no epoch (new, or
     restarted empty), when its epoch is below what this node remembers (it
     is raised to that), or when the master changed (``keys.server()``,
     replicated with the data, names another server's run_id: a failover, a
     restart from files), whichever node steps first. While it runs nobody is
     elected and no term starts, and every live node's heartbeat raises the
     epoch to the highest it remembers, so the next epoch is above every one
     a live node saw.
  4. This node holds the lease: release it if its own heartbeat key has
     expired (a leader that cannot heartbeat must not lead), else extend it.
     If its term is stale (its epoch is no longer Redis's, or it ran when the
     master changed: writes of it may be missing here), it keeps the lease
     but leads at no epoch (``waiting``, fenced) until the round is over,
     then starts a new term at a new epoch (``acquired``).
  5. Another node holds it: follow.
  6. It is vacant: if this node is registered (not ``left``), has a live
     heartbeat and did not just release the lease, and no round runs: INCR
     the epoch (never below remembered + 1) and take the lease at that epoch.
  7. (here, not in the script) With ``election.min_replicas_acked``, a new
     term is written unconfirmed: the fence refuses every write at it and
     the failover sweep does not act on it, until WAIT confirmed that many
     replicas hold its lease, epoch and term (``confirm_term`` + WAIT in one
     round trip, then ``accept_term``: one more, per new term only);
     otherwise the lease is released at once. If the elector dies in
     between, nobody acts at that epoch until the holder's next step
     confirms it or the lease lapses.

Guaranteed: at most one process holds an unexpired lease at a given epoch, and
epochs only grow, including across a Redis that restarts empty or a failover
to a replica that missed the last epochs, whichever node steps first, as long
as one node that saw the last epoch heartbeats during the bootstrap round
(each node remembers the highest epoch it has seen). Every write a leader
makes is a Lua script that first checks, in Redis, that the lease is still
the writer's at its epoch, as the process that took it, in a confirmed term
(the fence, ``lua/include/fence.lua``), so a leader paused past its lease (GC,
SIGSTOP, partition), a second process with the same node id, or a term
replicas have not confirmed changes nothing: the epoch is a fencing token,
checked by the storage itself.

Not guaranteed: that a node *believes* it leads only while it does. A lease
is time-bound, and time on a client is unreliable: a paused leader may still
think so, and Redlock's validity arithmetic (the Redlock spec) assumes
bounded pauses, network delay and clock drift that nothing enforces. This is
Kleppmann's critique of Redlock ("How to do distributed locking"), and
fencing tokens are this project's answer to it: a stale leader's writes are
refused by Redis, whatever it believes, but effects outside Redis (a hook, a
task's side effects) are not fenced. A Redis without persistence or
replication forgets the lease when it restarts: the cluster then elects
again and a new, higher epoch starts. Asynchronous replication can lose the
last writes on a failover; ``min_replicas_acked`` narrows that window.
"""

import time

from distnode.cluster import hooks
from distnode import lua
from distnode.cluster.lease_store import LEADER_OUTCOMES, Memory, Observation, SingleRedisStore
from distnode.core import keys
from distnode.core import local_state
from distnode.core.errors import NodeIdCollision
from distnode.redis.errors import FencedError, ResponseError
from distnode.redis.resp import text
from distnode.redis.script import request_with_scripts

__all__ = ["Elector", "Observation", "LEADER_OUTCOMES"]


class Elector:
    """One node's view of the election, remembered between one-shot ticks in a local file."""

    def __init__(self, ctx, **timing):
        """``timing``: ``clock``, ``sleep``, ``rng`` for the Redlock store (tests; defaults: the real ones)."""
        self.ctx = ctx
        self.node_id = ctx.node_id
        self.memory = Memory(ctx, self.node_id)
        self.data = SingleRedisStore(ctx, self.memory, local_state.instance_token(ctx.cfg.run_dir, self.node_id))
        self.store = self.data
        self.replied_s = 0.0  # time.monotonic() when the last step's reply arrived (its PTTLs count from it)
        if ctx.cfg["redis"]["instances"]:
            # deferred: only Redlock users load it and random (~1.2 ms of every election tick, -X importtime)
            from distnode.cluster.redlock_store import RedlockStore
            self.store = RedlockStore(ctx, self.memory, self.data, **timing)

    @property
    def state(self) -> dict:
        """What this node remembers (see ``lease_store.Memory``)."""
        return self.memory.state

    @property
    def state_path(self) -> str:
        return self.memory.path

    @property
    def instance(self) -> str:
        return self.data.instance

    @property
    def remembered_epoch(self) -> int:
        return self.memory.remembered_epoch

    def try_acquire_or_renew(self) -> Observation:
        """One election step (steps 1-7); fires hooks on transitions; remembers what it saw."""
        return self.store.exclusive(self._step)

    def release(self) -> bool:
        """Give the lease up at once if this process holds it, at whatever epoch.

        The memory file may not yet say this node leads (another of its processes
        took the lease a moment ago), so Redis decides: the store releases the
        lease only if it is this process's. Stepping down is always safe.
        """
        self.memory.reload()
        released = self.store.release("")
        self._observe(Observation("released", "", self.state.get("epoch", 0), 0))
        return released

    def close(self) -> None:
        self.store.close()

    def _step(self) -> Observation:
        self.memory.reload()
        held_back = self._unconfirmable()
        if held_back is not None:
            self._observe(held_back)
            return held_back
        led = self.memory.led_epoch  # the term this node led before this step (0: none)
        obs = self.store.acquire_or_renew()
        self.replied_s = time.monotonic()
        if obs.outcome == "collision":
            self._observe(Observation("collision", "", obs.epoch, 0))  # not leader, whatever the other does
            raise NodeIdCollision(
                "node id %r is claimed by another live process (the cluster's record of it names another "
                "instance); this one takes no part in the election: give this node its own node.id / "
                "OPENCLAW_NODE_ID, or stop the other one" % self.node_id)
        if obs.is_leader and self.ctx.cfg["election"]["min_replicas_acked"] and (
                not obs.confirmed or self._is_new_term(obs)):
            obs = self._confirm_replicated(obs)  # step 7
        if not obs.is_leader:
            self.store.drop(led, obs)  # before it is reported: what it reports is what Redis shows
        self._observe(obs)
        return obs

    # -- transitions and memory --
    def _observe(self, obs: Observation) -> None:
        """Record what this step saw; fire hooks once per node for each transition.

        The memory file is updated under a lock, so when two processes of one
        node (a cron tick and the failover manager, say) see the same
        transition, exactly one of them fires its hook. An observation older
        than the recorded one (its epoch is below the recorded epoch: a step
        paused after Redis replied, while another process of the node went on)
        is dropped: no hook, no change to the memory. Epochs only grow, so it
        can only be a stale view.

        ``on_lose_leadership`` gets the epoch of the term that ended. A node
        that moves straight from leading one term to leading a newer one (its
        lease lapsed and one of its processes took a new term before any step
        saw it lose, or it kept its lease through a bootstrap round and then
        started a new term under it) fires only ``on_become_leader`` with the
        new epoch: it never stopped holding the lease as far as its steps saw,
        and a lose hook run while it holds the lease would contradict it.
        """
        stale = []
        # This node keeps its lease through a bootstrap round (a master change, an epoch raised under
        # it): it is fenced and starts a new term when the round ends, and no other node can lead
        # meanwhile, so nothing was lost: no hook, no change, as for a straight move to a new term.
        holding_through_round = obs.outcome == "waiting" and obs.leader == self.ctx.node_id

        def change(state):
            recorded = state.get("epoch", 0)
            if local_state.sane_epoch(recorded) and obs.epoch < recorded:
                stale.append(recorded)
                return
            if holding_through_round and state.get("is_leader"):
                state["max_epoch"] = max(local_state.max_epoch_of(state), obs.epoch)
                return
            state.update(is_leader=obs.is_leader, leader=obs.leader, epoch=obs.epoch,
                         max_epoch=max(local_state.max_epoch_of(state), obs.epoch))
            if obs.leader:  # a leader (this node or another) holds a term that counts: nothing to report
                state.pop("unconfirmed", None)
        before = local_state.update_json(self.state_path, change)
        self.memory.state = dict(before)
        log = self.ctx.log
        if stale:
            log.info("ignored a stale election view (%s at epoch %d; epoch %d is recorded)",
                     obs.outcome, obs.epoch, stale[0])
            return
        if holding_through_round and before.get("is_leader"):
            log.info("keeping the lease of epoch %s through a bootstrap round: fenced until a new term starts",
                     before.get("epoch"))
            return
        change(self.state)
        was_leader, old_leader = before.get("is_leader", False), before.get("leader", "")
        old_epoch = before.get("epoch", 0)
        new_term = obs.is_leader and (not was_leader or obs.epoch != old_epoch)
        if new_term:
            log.info("became leader at epoch %d", obs.epoch)
            hooks.fire(self.ctx, "on_become_leader", obs.leader, obs.epoch)
        if was_leader and not obs.is_leader:
            log.warning("lost leadership of epoch %s (%s)", old_epoch, obs.outcome)
            hooks.fire(self.ctx, "on_lose_leadership", obs.leader, old_epoch)
        if obs.leader and obs.leader != old_leader:
            log.info("leader is now %s (epoch %d)", obs.leader, obs.epoch)
            hooks.fire(self.ctx, "on_leader_change", obs.leader, obs.epoch)

    # -- step 7: terms replicas confirm --
    def _is_new_term(self, obs: Observation) -> bool:
        return not self.state.get("is_leader") or self.state.get("epoch") != obs.epoch

    def _confirm_replicated(self, obs: Observation) -> Observation:
        """Let a term act only once ``min_replicas_acked`` replicas hold its lease, epoch and term.

        The term is written unconfirmed (``confirmed`` "0"): the fence refuses
        every write at it, and the failover sweep acts on it in no process of
        this node, until this confirms it. Then: a no-op write fenced but for
        the confirmation, and WAIT, pipelined on one connection, so WAIT counts
        the replicas that received everything up to this term (replication is
        one ordered stream, and WAIT only counts the writes of its own
        connection); if enough did, ``accept_term`` sets ``confirmed`` "1"
        (a second round trip, per new term only). Short of that within
        ``replica_wait_ms`` the lease is released, so a failover cannot promote
        a replica that never saw this epoch while the leader acts on it;
        another node (or this one after the handover pause) tries again. If
        this process dies between the two, nobody acts at that epoch: the term
        stays unconfirmed until the holder's next step confirms it or the lease
        lapses.
        """
        election = self.ctx.cfg["election"]
        want, wait_ms = election["min_replicas_acked"], election["replica_wait_ms"]
        fence_keys, fence_args = (keys.leader(), keys.epoch(), keys.term()), (self.node_id, obs.epoch, self.instance)
        batch = [(lua.script("confirm_term"), fence_keys, fence_args), ("WAIT", want, wait_ms)]
        confirm, acked = request_with_scripts(self.ctx.redis, batch)
        if isinstance(confirm, ResponseError):
            self.ctx.log.warning("lease at epoch %d lost before replicas confirmed it: %s", obs.epoch, confirm)
            return Observation("unreplicated", "", obs.epoch, 0)
        if isinstance(acked, int) and acked >= want:
            try:
                lua.run(self.ctx.redis, "accept_term", fence_keys, fence_args)
            except FencedError as exc:
                self.ctx.log.warning("lease at epoch %d lost while replicas confirmed it: %s", obs.epoch, exc)
                return Observation("unreplicated", "", obs.epoch, 0)
            return Observation(obs.outcome, obs.leader, obs.epoch, obs.lease_ms)
        why = ("WAIT failed: %s" % acked if isinstance(acked, ResponseError)
               else "%s of %d replicas confirmed within %dms" % (acked, want, wait_ms))
        self.ctx.log.warning("not leading at epoch %d: %s; releasing the lease", obs.epoch, why)
        self._note_unconfirmed(obs.epoch, acked, want, wait_ms)
        self.data.release(obs.epoch)
        return Observation("unreplicated", "", obs.epoch, 0)

    # -- min_replicas_acked without enough replicas: say why, and do not burn epochs --
    def _note_unconfirmed(self, epoch: int, acked, want: int, wait_ms: int) -> None:
        """Remember why this node's last term was released unconfirmed (for ``status`` and ``health``)."""
        reason = ("term not confirmed: %s of %d replicas acknowledged within %dms" % (acked, want, wait_ms)
                  if isinstance(acked, int) else "term not confirmed: WAIT failed: %s" % acked)
        note = {"epoch": epoch, "reason": reason, "at": round(time.time(), 3)}
        self.memory.update(lambda state: state.update(unconfirmed=note))

    def _unconfirmable(self):
        """Hold back a new term that cannot be confirmed; None: go on with the step.

        Only after this node's last term went unconfirmed (``_note_unconfirmed``) and only
        with ``election.min_replicas_acked``: one round trip asks the data Redis for its
        connected replicas (``ROLE``) and whether a lease is held. With the lease vacant and
        fewer replicas than needed, a new term would be released unconfirmed again after
        burning an epoch, so the step stops here (outcome ``unconfirmable``, not leader).
        Not electing is always safe; the first tick that finds enough replicas elects.
        """
        want = self.ctx.cfg["election"]["min_replicas_acked"]
        note = self.state.get("unconfirmed")
        if not want or not isinstance(note, dict):
            return None
        role, held = self.ctx.redis.request([("ROLE",), ("EXISTS", keys.leader())])
        if isinstance(role, ResponseError) or held != 0 or not isinstance(role, list) or text(role[0]) != "master":
            return None  # ROLE refused (ACL), a lease to follow, or not a master: the step finds out
        connected = len(role[2]) if len(role) > 2 and isinstance(role[2], list) else 0
        if connected >= want:
            return None
        self.ctx.log.info("not electing: %s; %d of %d replicas connected now", note.get("reason"), connected, want)
        return Observation("unconfirmable", "", self.state.get("epoch", 0), 0)
