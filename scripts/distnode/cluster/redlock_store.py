"""The Redlock lease store: a lease claimed on several independent masters (``redis.instances``).

The same interface as ``SingleRedisStore`` (see ``cluster/lease_store.py``).
One attempt, on the clock injected at construction (monotonic by default):

  R1. Claim on every instance (``redlock_claim``: take or extend, as this
      process's instance token); an instance that fails is a vote not won.
  R2. Keep it only if a majority agreed and validity is left (the lease TTL
      minus the time since R1 started minus the drift allowance); otherwise
      release what this attempt took (never a running term's claim) and
      follow the majority's holder, or retry after a random delay.
  R3. Take the epoch: the led term's epoch if it is still the highest seen,
      else one above the highest epoch seen on the majority and remembered;
      write it back to the instances (``redlock_raise``), tying the claims
      to that term.
  R4. Announce the lease in the data Redis (``redlock_announce``), where
      fenced writes are checked, with what is left of the validity at the
      moment of writing, so the data Redis's lease never outlives the
      quorum's. The announce never overwrites another's live lease nor
      reuses the data Redis's current epoch outside this process's own term.
  R5. Report what is left of the validity after the announce; a renewal
      counts only if the data Redis took the announce, else the quorum is
      given back (the claims of a led term cut to what is left of its data
      lease) and the step fails with the Redis error.

One node runs one attempt at a time: a local lock in the run dir shared by
its leader_election and failover_manager (``exclusive``). A step that comes
out not leading gives up, before it is reported, its data-Redis lease and its
claims at the terms it held (``drop``).
"""

import fcntl
import os
import random
import time

from distnode.core import defaults
from distnode.core import keys
from distnode import lua
from distnode.cluster.lease_store import Memory, Observation, SingleRedisStore
from distnode.redis.client import Redis
from distnode.redis.errors import RedisError

DATA_REDIS_FAILED = "redlock_data_redis_failed"  # memory flag: the data Redis did not take the last announce


class RedlockStore:
    """Claims on ``redis.instances``, announced into the data Redis through ``data``."""

    def __init__(self, ctx, memory: Memory, data: SingleRedisStore, clock=time.monotonic, sleep=time.sleep,
                 rng=random):
        """``clock`` (seconds, monotonic), ``sleep`` and ``rng`` (``.uniform``) are injectable for tests."""
        self.ctx, self.memory, self.data = ctx, memory, data
        self.node_id, self.instance, self.lease_ms = ctx.node_id, data.instance, data.lease_ms
        self.clock, self.sleep, self.rng = clock, sleep, rng
        self.drift_ms = self.lease_ms * ctx.cfg["election"]["clock_drift_factor"] + defaults.REDLOCK_DRIFT_EXTRA_MS
        self._clients = None
        self._attempt_fd = None

    def instances(self) -> list:
        """One client per instance, opened on first use; each is its own master (no Sentinel)."""
        if self._clients is None:
            base = self.ctx.cfg["redis"]
            self._clients = [Redis.from_settings(dict(base, sentinels=[], master_name="", **ep))
                             for ep in base["instances"]]
        return self._clients

    def close(self) -> None:
        for client in self._clients or ():
            client.close()

    def exclusive(self, step):
        """Run ``step()`` holding the node's attempt lock (leader_election and failover_manager both elect;
        two attempts of one node would fight over its claims).

        A flock in the run dir, shared by every process of the node. The second comes in after the first
        recorded its outcome, so it renews the term instead of starting another. It waits at most half a
        lease for the lock; past that it does nothing: outcome ``busy``, whatever the memory says.
        """
        path = os.path.join(self.ctx.cfg.run_dir, "election.%s.attempt.lock" % self.node_id)
        os.makedirs(self.ctx.cfg.run_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # also holds the node's data-lease end (below)
        deadline = self.clock() + self.lease_ms / 2000
        try:
            while not _try_lock(fd):
                if self.clock() >= deadline:
                    self.memory.reload()
                    return Observation("busy", self.memory.state.get("leader", ""),
                                       self.memory.state.get("epoch", 0), 0)
                self.sleep(defaults.REDLOCK_ATTEMPT_LOCK_POLL_S)
            self._attempt_fd = fd
            return step()
        finally:
            self._attempt_fd = None
            os.close(fd)  # closing drops the lock

    def acquire_or_renew(self) -> Observation:
        """Up to ``defaults.REDLOCK_ATTEMPTS`` attempts. After an announce the data Redis could not
        take (unreachable, or this node ineligible there), the next steps first ask the data Redis
        whether this node's heartbeat is there (one round trip, only then) and touch no instance
        until it is: a node cut off from the data Redis would otherwise hold the instances' claims
        a socket timeout per step, and no other node could win a quorum."""
        if self.memory.state.get(DATA_REDIS_FAILED):
            if self.ctx.redis.request([("EXISTS", keys.heartbeat(self.node_id))])[0] != 1:  # an error raises
                return Observation("ineligible", "", self.memory.remembered_epoch, 0)
        for attempt in range(defaults.REDLOCK_ATTEMPTS):
            if attempt:
                self.sleep(self.rng.uniform(*defaults.REDLOCK_RETRY_DELAY_S))
            obs = self._attempt()
            if obs is not None:
                return obs
        return Observation("no_quorum", "", self.memory.remembered_epoch, 0)

    def release(self, epoch="") -> bool:
        """The data Redis's lease, then this process's claims on every instance (whatever their term when
        ``epoch`` is ''), never another process's with this node id; one instance down stops nothing."""
        released = self.data.release(epoch)
        for client in self.instances():
            try:
                lua.run(client, "redlock_release", (keys.leader(), keys.redlock_claim()),
                        (self.node_id, self.instance, epoch))
            except RedisError as exc:
                self.ctx.log.warning("release on %s failed: %s", client.peer, exc)
        return released

    def drop(self, led_epoch: int, obs: Observation) -> None:
        """A step that came out not leading gives up, before it is reported, the term this node led
        (``led_epoch``) and one it won but could not keep (expired while announced, or unconfirmed): its
        lease in the data Redis and its claims on the instances, each only at that epoch and as this
        process, never another node's or another term's. A data Redis that cannot be reached raises
        here: nothing is reported then, and that lease lapses by itself."""
        terms = {led_epoch, obs.epoch if obs.outcome in ("expired", "unreplicated") else 0} - {0}
        for epoch in sorted(terms):
            self.data.release(epoch)  # first: if the data Redis is away, the claims stay (and outlive it)
            self._release_claims(self.instances(), epoch)

    # -- one attempt --
    def _attempt(self):
        """One attempt (R1-R5). None: retry after a random delay.

        Validity is measured again right before the data Redis is written and after, so the data
        Redis's lease ends no later than the quorum's (up to the announce's one-way delay beyond the
        drift allowance) and ``lease_ms`` is what was really left.
        """
        start = self.clock()
        mine, fresh, epochs, holders = self._claim_all()  # R1
        left_ms = lambda: int(self.lease_ms - (self.clock() - start) * 1000 - self.drift_ms)  # noqa: E731
        if len(mine) < len(self.instances()) // 2 + 1 or left_ms() <= 0:  # R2
            self._release_claims(fresh, 0)  # only what this attempt took: never a running term's claim
            if holders:
                return Observation("follower", max(set(holders), key=holders.count), max(epochs), 0)
            return None  # split or timed out
        known = self.memory.led_epoch
        top = max(epochs + [self.memory.remembered_epoch])
        epoch = known if known and known >= top else top + 1  # R3
        self._raise_all(mine, epoch)
        validity_ms = left_ms()  # what is left now, at the moment of writing
        if validity_ms <= 0:
            self.ctx.log.warning("redlock: the quorum's validity ran out before the lease could be announced")
            self._release_claims(mine, epoch)
            return None
        reply = self._announce(mine, epoch, known, validity_ms)  # R4
        if reply.outcome != "ok":
            return self._refused(mine, epoch, reply)
        self._data_lease_end(self.clock() + validity_ms / 1000)  # it ends before that (set before the reply)
        remaining_ms = left_ms()  # R5
        if remaining_ms <= 0:
            self.ctx.log.warning("redlock: the lease at epoch %d expired while it was announced", epoch)
            return Observation("expired", "", epoch, 0)
        return Observation("renewed" if epoch == known else "acquired", self.node_id, epoch, remaining_ms,
                           reply.confirmed)

    def _claim_all(self):
        """R1: (instances won, those won afresh, epochs seen, holders seen elsewhere)."""
        mine, fresh, epochs, holders = [], [], [], []
        for client in self.instances():
            try:
                claim = lua.run(client, "redlock_claim", (keys.leader(), keys.epoch(), keys.redlock_claim()),
                                (self.node_id, self.lease_ms, self.instance))
            except RedisError as exc:  # an instance down counts as a vote not won
                self.ctx.log.debug("redlock: %s: %s", client.peer, exc)
                continue
            epochs.append(claim.epoch)
            if claim.outcome == "mine":
                mine.append(client)
                if claim.claimed_epoch == 0:
                    fresh.append(client)
            else:
                holders.append(claim.holder)
        return mine, fresh, epochs, holders

    def _raise_all(self, clients, epoch: int) -> None:
        for client in clients:
            try:
                lua.run(client, "redlock_raise", (keys.leader(), keys.epoch(), keys.redlock_claim()),
                        (self.node_id, epoch, self.instance))
            except RedisError as exc:
                self.ctx.log.debug("redlock: raise on %s: %s", client.peer, exc)

    def _announce(self, mine, epoch: int, known: int, validity_ms: int):
        """R4; on a Redis error the quorum is given back and the error raised (see the module docstring)."""
        confirmed = "0" if self.ctx.cfg["election"]["min_replicas_acked"] else "1"
        try:
            reply = lua.run(self.ctx.redis, "redlock_announce",
                            (keys.leader(), keys.epoch(), keys.heartbeat(self.node_id), keys.nodes(),
                             keys.events(), keys.term()),
                            (self.node_id, validity_ms, epoch, self.data.maxlen, self.instance, confirmed))
        except RedisError:
            # no announce, no lease: give the quorum back so another node can win it, and fail the step as
            # any step whose Redis is away fails (nothing reported: the data lease of a term this node led
            # cannot be released from here, and lapses by itself). The claims of that term are cut to
            # what is left of its data lease (never shorter: the data lease never outlives the quorum);
            # unknown (another process of the node renewed it last and left no note): left to lapse.
            if epoch != known:
                self._release_claims(mine, epoch)
            else:
                end = self._data_lease_end()
                if end is not None:
                    self._release_claims(mine, epoch, max(0, int((end - self.clock()) * 1000 + self.drift_ms)))
            self._note_data_redis(False)
            raise
        self._note_data_redis(reply.outcome != "ineligible")
        return reply

    def _refused(self, mine, epoch: int, reply):
        """The data Redis did not take the announce: give the claims back; None to try again above it."""
        self._release_claims(mine, epoch)
        self.memory.state["max_epoch"] = max(self.memory.remembered_epoch, reply.epoch)
        if reply.outcome == "held":
            return Observation("follower", reply.holder, reply.epoch, 0)
        if reply.outcome == "stale":
            # the data Redis is at (or past) this epoch under another term (or this node's own term
            # lapsed there): try again above it, as a new term
            self.memory.state["is_leader"] = False
            self.ctx.log.info("redlock: epoch %d is taken in the data Redis (at %d): trying above it",
                              epoch, reply.epoch)
            return None
        return Observation("ineligible", "", reply.epoch, 0)

    def _note_data_redis(self, took_it: bool) -> None:
        """Remember (for every process of the node) whether the data Redis took the last announce."""
        if bool(self.memory.state.get(DATA_REDIS_FAILED)) != (not took_it):
            def change(state):
                if took_it:
                    state.pop(DATA_REDIS_FAILED, None)
                else:
                    state[DATA_REDIS_FAILED] = True
            self.memory.update(change)

    def _data_lease_end(self, end: float = None):
        """Read (or, given ``end``, write) when this node's data-Redis lease ends at the latest, on the
        monotonic clock (system-wide), in the attempt lock file its processes share (no fsync: a reboot
        restarts that clock and loses nothing that matters). None: unknown."""
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

    def _release_claims(self, clients, epoch, keep_ms: int = 0) -> None:
        """Release this process's claims of term ``epoch`` (0: claims no term was tied to yet); with
        ``keep_ms`` > 0, shorten them to at most that instead."""
        for client in clients:
            try:
                lua.run(client, "redlock_release", (keys.leader(), keys.redlock_claim()),
                        (self.node_id, self.instance, epoch, keep_ms))
            except RedisError:
                pass  # it expires by itself


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
