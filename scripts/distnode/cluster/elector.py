"""Leader election: a lease in Redis, a fencing epoch per term, Redlock across several masters.

Shaped like client-go's ``leaderelection``: ``try_acquire_or_renew()`` is one
step, ``release()`` gives the lease up, and transitions fire the hooks
``on_become_leader``, ``on_lose_leadership`` and ``on_leader_change``.

The algorithm, one step (single Redis, one round trip, one Lua script, ``lua.ELECT``):
  1. The lease comes with a term (``keys.term()``: node, instance token,
     epoch, confirmed), written, expired and deleted with it. A lease held
     under this node id by another process (another instance token: a copied
     config) is a collision: nothing changes, this process never renews,
     releases or writes through it.
  2. A bootstrap round (one heartbeat interval, ``keys.bootstrap()``) starts
     when Redis has no epoch (new, or restarted empty), when its epoch is
     below what this node remembers (it is raised to that), or when the
     master changed (``keys.server()``, replicated with the data, names
     another server's run_id: a failover, a restart from files), whichever
     node steps first. While it runs nobody is elected and no term starts,
     and every live node's heartbeat raises the epoch to the highest it
     remembers, so the next epoch is above every one a live node saw.
  3. If this node holds the lease: release it if its own heartbeat key has
     expired (a leader that cannot heartbeat must not lead), else extend it.
     If its term is stale (its epoch is no longer Redis's, or it ran when the
     master changed: writes of it may be missing here), it keeps the lease
     but leads at no epoch (``waiting``, fenced) until the round is over,
     then starts a new term at a new epoch (``acquired``).
  4. If another node holds it: follow.
  5. If it is vacant and this node is registered (not ``left``), has a live
     heartbeat and did not just release the lease, and no round runs: INCR
     the epoch (never below remembered + 1) and take the lease at that epoch.
  6. With ``election.min_replicas_acked``, a new term is written unconfirmed:
     the fence refuses every write at it and the failover sweep (another
     process) does not act on it, until WAIT confirmed that many replicas
     hold its lease, epoch and term (``lua.CONFIRM_TERM`` + WAIT in one
     round trip, then ``lua.ACCEPT_TERM``: one more, per new term only);
     otherwise the lease is released at once. If the elector dies in
     between, nobody acts at that epoch until the holder's next step
     confirms it or the lease lapses.

With ``redis.instances`` (several independent masters) step 4 is Redlock:
claim on every instance, keep it only if a majority agreed within the
validity time (TTL minus elapsed minus drift), take one above the highest
epoch seen on that majority, write it back, and announce the lease in the
data Redis, where fenced writes are checked; otherwise release everywhere
and retry after a random delay. The data Redis gets what is left of the
validity at the moment of writing (so its lease never outlives the quorum's),
the announce never overwrites another's live lease nor reuses the data
Redis's current epoch outside this process's own term, releases match the
term (instance token + epoch), and one node runs one attempt at a time (a
local lock shared by its leader_election and failover_manager). A leader that
drops its term gives up its data-Redis lease and its claims at that term in
the same step, before it reports it; a renewal counts only if the data Redis
took the announce, else the quorum is given back (claims of a led term cut to
what is left of its data lease) and the step fails with the Redis error.

Guaranteed: at most one process holds an unexpired lease at a given epoch, and
epochs only grow, including across a Redis that restarts empty or a failover
to a replica that missed the last epochs, whichever node steps first, as long
as one node that saw the last epoch heartbeats during the bootstrap round
(each node remembers the highest epoch it has seen). Every write a leader
makes is a Lua script that first checks, in Redis, that the lease is still
the writer's at its epoch, as the process that took it, in a confirmed term
(``lua.FENCE``), so a leader paused past its lease (GC, SIGSTOP, partition),
a second process with the same node id, or a term replicas have not
confirmed changes nothing.

Not guaranteed: that a node *believes* it leads only while it does: a paused
leader may still think so; fencing is what makes that harmless. A Redis
without persistence or replication forgets the lease when it restarts: the
cluster then elects again and a new, higher epoch starts. Asynchronous
replication can lose the last writes on a failover; ``min_replicas_acked``
narrows that window (see Kleppmann's critique of Redlock: fencing tokens are
this project's answer to it).
"""

from distnode.cluster import hooks
from distnode.core import keys
from distnode.core import local_state
from distnode.lua import scripts as lua
from distnode.core.errors import NodeIdCollision
from distnode.redis.client import Redis, RedisError, ResponseError, text

LEADER_OUTCOMES = ("renewed", "acquired")
ATTEMPT_LOCK_POLL_S = 0.01  # how often a Redlock step waiting for its node's other attempt looks again
DATA_REDIS_FAILED = "redlock_data_redis_failed"  # memory flag: the data Redis did not take the last announce


class Observation:
    """What one election step saw: ``outcome``, ``leader``, ``epoch``, ``lease_ms``."""

    def __init__(self, outcome: str, leader: str, epoch: int, lease_ms: int, confirmed: bool = True):
        self.outcome, self.leader, self.epoch, self.lease_ms = outcome, leader, epoch, lease_ms
        self.confirmed = confirmed  # False: a term replicas have not confirmed yet (min_replicas_acked)

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
        self._attempt_fd = None
        self._reload()

    def _reload(self) -> None:
        """Re-read the memory the node's other processes share (cron ticks, loops)."""
        state = local_state.read_json(self.state_path, None)
        self.state = state if isinstance(state, dict) else {}
        if local_state.corrupt_epoch(self.state) is not None:
            self.ctx.log.warning("ignoring max_epoch %.40r in %s: not an integer in [0, %d)",
                                 local_state.corrupt_epoch(self.state), self.state_path, local_state.EPOCH_LIMIT)

    @property
    def remembered_epoch(self) -> int:
        return local_state.max_epoch_of(self.state)

    def try_acquire_or_renew(self) -> Observation:
        """One election step; fires hooks on transitions; remembers what it saw."""
        if self.ctx.cfg["redis"]["instances"] and self._attempt_fd is None:
            return self._redlock_exclusive()  # the same step, one per node at a time
        self._reload()
        held_back = self._unconfirmable()
        if held_back is not None:
            self._observe(held_back)
            return held_back
        held = 0  # Redlock: the term this node led before this step (0: none)
        if self.ctx.cfg["redis"]["instances"]:
            held = self.state.get("epoch", 0) if self.state.get("is_leader") else 0
            obs = self._redlock_step()
        else:
            unconfirmed = "0" if self.ctx.cfg["election"]["min_replicas_acked"] else "1"
            reply = lua.ELECT(self.ctx.redis,
                              (keys.leader(), keys.epoch(), keys.heartbeat(self.node_id), keys.nodes(), keys.events(),
                               keys.bootstrap(), keys.released(self.node_id), keys.term(), keys.server()),
                              (self.node_id, self.lease_ms, self.remembered_epoch, self.maxlen,
                               self.bootstrap_wait_ms, self.instance, unconfirmed))
            obs = Observation(text(reply[0]), text(reply[1]), int(reply[2]), int(reply[3]), reply[4] == 1)
            self._remember_master()
            if obs.outcome == "collision":
                self._observe(Observation("collision", "", obs.epoch, 0))  # not leader, whatever the other does
                raise NodeIdCollision(
                    "node id %r is claimed by another live process (the cluster's record of it names another "
                    "instance); this one takes no part in the election: give this node its own node.id / "
                    "OPENCLAW_NODE_ID, or stop the other one" % self.node_id)
        if obs.is_leader and self.ctx.cfg["election"]["min_replicas_acked"] and (
                not obs.confirmed or self._is_new_term(obs)):
            obs = self._confirm_replicated(obs)
        if self.ctx.cfg["redis"]["instances"] and not obs.is_leader:
            self._redlock_drop(held, obs)  # before it is reported: what it reports is what Redis shows
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
            try:  # this process's claim, whatever its term; never another process's with this node id
                lua.REDLOCK_RELEASE(client, (keys.leader(), keys.redlock_claim()), (self.node_id, self.instance, ""))
            except RedisError as exc:  # one instance down must not stop the release on the others
                self.ctx.log.warning("release on %s failed: %s", client.peer, exc)
        self._observe(Observation("released", "", self.state.get("epoch", 0), 0))
        return released

    def close(self) -> None:
        for client in getattr(self, "_clients", ()):
            client.close()

    def _release_at(self, epoch) -> bool:
        """Release the lease if this process holds it (its term's instance), in the term at ``epoch`` ('': any)."""
        return lua.RELEASE(self.ctx.redis, (keys.leader(), keys.epoch(), keys.events(), keys.released(self.node_id),
                                            keys.term()),
                           (self.node_id, epoch, self.maxlen, self.lease_ms, self.instance)) == 1

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
        self.state = dict(before)
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
        was_leader, old_leader, old_epoch = before.get("is_leader", False), before.get("leader", ""), before.get("epoch", 0)
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

    # -- surviving a Redis failover --
    def _is_new_term(self, obs: Observation) -> bool:
        return not self.state.get("is_leader") or self.state.get("epoch") != obs.epoch

    def _remember_master(self) -> None:
        """Remember the address of the master this step ran on (``status``, logs); written on a change.

        Noticing a master change is ELECT's job (``keys.server()``), so that the
        node stepping first after a failover notices it, whatever it remembers.
        """
        master = getattr(self.ctx.redis, "peer", "")
        before = self.state.get("redis_master")
        if master and before != master:
            if before:
                self.ctx.log.warning("redis master is now %s (was %s)", master, before)
            local_state.update_json(self.state_path, lambda state: state.update(redis_master=master))
            self.state["redis_master"] = master

    def _confirm_replicated(self, obs: Observation) -> Observation:
        """Let a term act only once ``min_replicas_acked`` replicas hold its lease, epoch and term.

        The term is written unconfirmed (``confirmed`` "0"): the fence refuses
        every write at it, and the failover sweep acts on it in no process of
        this node, until this confirms it. Then: a no-op write fenced but for
        the confirmation, and WAIT, pipelined on one connection, so WAIT counts
        the replicas that received everything up to this term (replication is
        one ordered stream, and WAIT only counts the writes of its own
        connection); if enough did, ``lua.ACCEPT_TERM`` sets ``confirmed`` "1"
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
        confirm, acked = self.ctx.redis.request([lua.CONFIRM_TERM.args(fence_keys, fence_args, False),
                                                 ("WAIT", want, wait_ms)])
        if isinstance(confirm, ResponseError):
            self.ctx.log.warning("lease at epoch %d lost before replicas confirmed it: %s", obs.epoch, confirm)
            return Observation("unreplicated", "", obs.epoch, 0)
        if isinstance(acked, int) and acked >= want:
            try:
                lua.ACCEPT_TERM(self.ctx.redis, fence_keys, fence_args)
            except ResponseError as exc:
                if not str(exc).startswith("FENCED"):
                    raise
                self.ctx.log.warning("lease at epoch %d lost while replicas confirmed it: %s", obs.epoch, exc)
                return Observation("unreplicated", "", obs.epoch, 0)
            return Observation(obs.outcome, obs.leader, obs.epoch, obs.lease_ms)
        why = ("WAIT failed: %s" % acked if isinstance(acked, ResponseError)
               else "%s of %d replicas confirmed within %dms" % (acked, want, wait_ms))
        self.ctx.log.warning("not leading at epoch %d: %s; releasing the lease", obs.epoch, why)
        self._note_unconfirmed(obs.epoch, acked, want, wait_ms)
        self._release_at(obs.epoch)
        return Observation("unreplicated", "", obs.epoch, 0)

    # -- min_replicas_acked without enough replicas: say why, and do not burn epochs --
    def _note_unconfirmed(self, epoch: int, acked, want: int, wait_ms: int) -> None:
        """Remember why this node's last term was released unconfirmed (for ``status`` and ``health``)."""
        import time
        reason = ("term not confirmed: %s of %d replicas acknowledged within %dms" % (acked, want, wait_ms)
                  if isinstance(acked, int) else "term not confirmed: WAIT failed: %s" % acked)
        note = {"epoch": epoch, "reason": reason, "at": round(time.time(), 3)}
        local_state.update_json(self.state_path, lambda state: state.update(unconfirmed=note))
        self.state["unconfirmed"] = note

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

    # -- Redlock over several independent masters --
    def _instances(self) -> list:
        if not hasattr(self, "_clients"):
            base = self.ctx.cfg["redis"]
            # each instance is its own master: the data Redis's Sentinel settings do not apply
            self._clients = [Redis.from_settings(dict(base, sentinels=[], master_name="", **ep))
                             for ep in base["instances"]]
        return self._clients

    def _redlock_exclusive(self) -> Observation:
        """Run one Redlock step while holding the node's attempt lock (leader_election and
        failover_manager both elect; two attempts of one node would fight over its claims).

        A local flock in the run dir, shared by every process of the node. The second comes in
        after the first recorded its outcome, so it renews the term instead of starting another.
        It waits at most half a lease for the lock; past that it does nothing: outcome ``busy``,
        not observed (no hook, the memory file unchanged).
        """
        import fcntl
        import os
        import time
        path = os.path.join(self.ctx.cfg.run_dir, "election.%s.attempt.lock" % self.node_id)
        os.makedirs(self.ctx.cfg.run_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # also holds the node's data-lease end (below)
        deadline = time.monotonic() + self.lease_ms / 2000
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        self._reload()
                        return Observation("busy", self.state.get("leader", ""), self.state.get("epoch", 0), 0)
                    time.sleep(ATTEMPT_LOCK_POLL_S)
            self._attempt_fd = fd
            return self.try_acquire_or_renew()
        finally:
            self._attempt_fd = None
            os.close(fd)  # closing drops the lock

    def _redlock_step(self) -> Observation:
        """Up to three attempts. After an announce the data Redis could not take (unreachable, or this
        node ineligible there), the next steps first ask the data Redis whether this node's heartbeat
        is there (one round trip, only then) and touch no instance until it is: a node cut off from
        the data Redis would otherwise hold the instances' claims a socket timeout per step, and no
        other node could win a quorum."""
        import random
        import time
        if self.state.get(DATA_REDIS_FAILED):
            if self.ctx.redis.request([("EXISTS", keys.heartbeat(self.node_id))])[0] != 1:  # an error raises
                return Observation("ineligible", "", self.remembered_epoch, 0)
        for attempt in range(3):
            obs = self._redlock_attempt(time.monotonic)
            if obs is not None:
                return obs
            time.sleep(random.uniform(0.05, 0.2))  # desynchronise competing candidates
        return Observation("no_quorum", "", self.remembered_epoch, 0)

    def _redlock_attempt(self, clock):
        """One Redlock attempt: claim everywhere, keep it only with a quorum and validity left.

        Validity is what is left of the lease since ``start`` (before the first claim), on the
        monotonic clock, minus the drift allowance; it is measured again right before the data
        Redis is written and after, so the data Redis's lease ends no later than the quorum's
        (up to the announce's one-way delay beyond the drift allowance) and ``lease_ms`` is
        what was really left. None: retry after a random delay.
        """
        clients = self._instances()
        quorum = len(clients) // 2 + 1
        start = clock()
        claim_keys = (keys.leader(), keys.epoch(), keys.redlock_claim())
        mine, fresh, epochs, holders = [], [], [], []
        for client in clients:
            try:
                reply = lua.REDLOCK_CLAIM(client, claim_keys, (self.node_id, self.lease_ms, self.instance))
            except RedisError as exc:  # an instance down counts as a vote not won
                self.ctx.log.debug("redlock: %s: %s", client.peer, exc)
                continue
            if text(reply[0]) == "mine":
                mine.append(client)
                epochs.append(int(reply[1]))
                if int(reply[2]) == 0:
                    fresh.append(client)
            else:
                holders.append(text(reply[1]))
                epochs.append(int(reply[2]))
        drift_ms = self.lease_ms * self.ctx.cfg["election"]["clock_drift_factor"] + 2

        def left_ms() -> int:
            return int(self.lease_ms - (clock() - start) * 1000 - drift_ms)
        if len(mine) < quorum or left_ms() <= 0:
            self._redlock_release(fresh, 0)  # only what this attempt took: never a running term's claim
            if holders:
                leader = max(set(holders), key=holders.count)
                return Observation("follower", leader, max(epochs), 0)
            return None  # split or timed out: retry after a random delay
        known = self.state.get("epoch", 0) if self.state.get("is_leader") else 0
        top = max(epochs + [self.remembered_epoch])
        epoch = known if known and known >= top else top + 1
        for client in mine:
            try:
                lua.REDLOCK_RAISE(client, claim_keys, (self.node_id, epoch, self.instance))
            except RedisError as exc:
                self.ctx.log.debug("redlock: raise on %s: %s", client.peer, exc)
        validity_ms = left_ms()  # what is left now, at the moment of writing
        if validity_ms <= 0:
            self.ctx.log.warning("redlock: the quorum's validity ran out before the lease could be announced")
            self._redlock_release(mine, epoch)
            return None
        confirmed = "0" if self.ctx.cfg["election"]["min_replicas_acked"] else "1"
        try:
            reply = lua.REDLOCK_ANNOUNCE(self.ctx.redis, (keys.leader(), keys.epoch(),
                                                          keys.heartbeat(self.node_id), keys.nodes(), keys.events(),
                                                          keys.term()),
                                         (self.node_id, validity_ms, epoch, self.maxlen, self.instance, confirmed))
        except RedisError:
            # no announce, no lease: give the quorum back so another node can win it, and fail the step as
            # any step whose Redis is away fails (nothing reported: the data lease of a term this node led
            # cannot be released from here, and lapses by itself). The claims of that term are cut to
            # what is left of its data lease (never shorter: the data lease never outlives the quorum);
            # unknown (another process of the node renewed it last... and left no note): left to lapse.
            if epoch != known:
                self._redlock_release(mine, epoch)
            else:
                end = self._data_lease_end()
                if end is not None:
                    self._redlock_release(mine, epoch, max(0, int((end - clock()) * 1000 + drift_ms)))
            self._note_data_redis(False)
            raise
        outcome, current = text(reply[0]), int(reply[1])
        self._note_data_redis(outcome != "ineligible")
        if outcome != "ok":
            self._redlock_release(mine, epoch)
            self.state["max_epoch"] = max(self.remembered_epoch, current)
            if outcome == "held":
                return Observation("follower", text(reply[2]), current, 0)
            if outcome == "stale":
                # the data Redis is at (or past) this epoch under another term (or this node's own term
                # lapsed there): try again above it, as a new term
                self.state["is_leader"] = False
                self.ctx.log.info("redlock: epoch %d is taken in the data Redis (at %d): trying above it",
                                  epoch, current)
                return None
            return Observation("ineligible", "", current, 0)
        self._data_lease_end(clock() + validity_ms / 1000)  # it ends before that (set before the reply)
        remaining_ms = left_ms()
        if remaining_ms <= 0:
            self.ctx.log.warning("redlock: the lease at epoch %d expired while it was announced", epoch)
            return Observation("expired", "", epoch, 0)
        return Observation("renewed" if epoch == known else "acquired", self.node_id, epoch, remaining_ms,
                           reply[2] == 1)

    def _note_data_redis(self, took_it: bool) -> None:
        """Remember (for every process of the node) whether the data Redis took the last announce."""
        if bool(self.state.get(DATA_REDIS_FAILED)) != (not took_it):
            def change(state):
                if took_it:
                    state.pop(DATA_REDIS_FAILED, None)
                else:
                    state[DATA_REDIS_FAILED] = True
            local_state.update_json(self.state_path, change)
            change(self.state)

    def _redlock_drop(self, held: int, obs: Observation) -> None:
        """A step that came out not leading gives up, before it is reported, the term this node led
        (``held``) and one it won but could not keep (expired while announced, or unconfirmed): its
        claims on the instances and its lease in the data Redis, each only at that epoch and as this
        process (instance token), never another node's or another term's. A data Redis that cannot be
        reached raises here: nothing is reported then, and that lease lapses by itself."""
        terms = {held, obs.epoch if obs.outcome in ("expired", "unreplicated") else 0} - {0}
        for epoch in sorted(terms):
            self._release_at(epoch)  # first: if the data Redis is away, the claims stay (and outlive it)
            self._redlock_release(self._instances(), epoch)

    def _data_lease_end(self, end: float = None):
        """Read (or, given ``end``, write) when this node's data-Redis lease ends at the latest, on the
        monotonic clock (system-wide), in the attempt lock file its processes share (no fsync: a reboot
        restarts that clock and loses nothing that matters). None: unknown."""
        import os
        fd = self._attempt_fd
        if fd is None:
            return None
        try:
            if end is not None:
                os.pwrite(fd, b"%24.3f" % end, 0)
                return end
            return float(os.pread(fd, 24, 0) or "x")
        except (OSError, ValueError):
            return None

    def _redlock_release(self, clients, epoch, keep_ms: int = 0) -> None:
        """Release this process's claims of term ``epoch`` (0: claims no term was tied to yet); with
        ``keep_ms`` > 0, shorten them to at most that instead."""
        for client in clients:
            try:
                lua.REDLOCK_RELEASE(client, (keys.leader(), keys.redlock_claim()),
                                    (self.node_id, self.instance, epoch, keep_ms))
            except RedisError:
                pass  # it expires by itself
