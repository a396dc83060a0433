"""The leader_election job: one election step per tick, and, in a living process, the wait between steps.

The job's tick (``run/jobs.py`` names it) over ``cluster/elector.py``'s
``Elector``: one step, logged; one Elector per process, kept between the
steps of a loop; when the loop stops, ``stop`` gives the lease up at once.

Between two steps of a living process (``--loop``, ``--foreground``) a
follower blocks on the cluster events (``run/wake.py``) and steps the moment
the lease is vacant: another node's ``leader_released`` or
``leader_stepped_down``, or the lapse of the lease its last step saw. A
leader sleeps its period: its renewal is never late. Waking early never
takes a lease early: ``elect.lua`` takes one only once it is vacant.
"""

import time

from distnode.cluster.elector import Elector, Observation
from distnode.core import defaults, keys

# Events after which the lease is vacant: release.lua and leave.lua (a graceful stop, a leave, an
# unconfirmed term given back) and elect.lua (a holder without a heartbeat); nothing else empties it
# but a lapse, which no event announces (the follower wakes at the PTTL its last step saw instead).
VACATED_EVENTS = ("leader_released", "leader_stepped_down")
# Outcomes whose lease_ms is a PTTL elect.lua read in the step: the lease held by another node or by a
# predecessor of this id, or the bootstrap round ("waiting"). Elsewhere it is 0 or a leader's own lease.
LAPSE_OUTCOMES = ("follower", "predecessor", "waiting")


class ElectionJob:
    """The leader_election job's tick (``run/jobs.py``), beside the elector as the heartbeat's is beside
    membership: one step, logged. One Elector per process, kept between the ticks of a loop; when the
    loop stops, ``stop`` gives the lease up at once."""

    def __init__(self, ctx):
        self.elector = Elector(ctx)
        self.last = None  # the last step's Observation
        self.watch = None  # run/wake.StreamWatch on the cluster events, made by the first blocking wait

    def __call__(self, ctx) -> dict:
        obs = self.elector.try_acquire_or_renew()
        self.last = obs
        # predecessor: this id's lease is an earlier process's term, waited out (at most one lease)
        level = "info" if obs.outcome in ("acquired", "stepped_down", "predecessor") else "debug"
        getattr(ctx.log, level)("election: %s (leader %s, epoch %d)", obs.outcome, obs.leader or "none", obs.epoch)
        return dict(obs.as_dict(), node=ctx.node_id)

    def wait(self, ctx, seconds: float) -> str:
        """Between two steps of a living process: return by ``seconds``, earlier once the lease is vacant.

        A leader (or ``redis.blocking_reads`` false) sleeps ``seconds``: its renewal is never late. Any
        other node blocks on the cluster events (``run/wake.py``, a connection of its own) and returns at
        the first ``leader_released`` or ``leader_stepped_down`` of another node, or when the lease its
        last step saw lapses (single Redis: that step's PTTL, counted from its reply, plus
        ``defaults.ELECTION_LAPSE_MARGIN_S``; the bootstrap round's end likewise). Returning early only makes the next step come sooner:
        elect.lua still takes a lease only once it is vacant. Under Redlock a follower's ``lease_ms`` is 0
        (the instances' claims are not read for their TTL): the events alone wake it, else its period.
        Why it returned: "slept", or what ``wake.wait`` says ("woken", "due", "primed", ...).
        """
        obs = self.last
        if not ctx.cfg["redis"]["blocking_reads"] or obs is None or obs.is_leader or (
                self.watch is not None and not self.watch.usable):
            self._close_watch()  # a leader reads no events: positions kept would replay old ones later
            ctx.sleep(seconds)
            return "slept"
        from distnode.run import wake  # deferred: a one-shot tick never waits (-X importtime: 0.5-2 ms)
        if self.watch is None:
            # a block as long as the period: the steps use another connection, so a silent Redis costs
            # nothing here that the next step would not find; one read per period while nothing happens
            self.watch = wake.StreamWatch(ctx, block_max_s=ctx.cfg.renew_interval_s)
        until_s = min(time.monotonic() + max(seconds, 0), self._lapse_s(obs))
        woken_by = []

        def vacated(entry) -> bool:
            if entry.fields.get("type") in VACATED_EVENTS and entry.fields.get("node") != ctx.node_id:
                woken_by.append(entry)  # this node's own release bars it (keys.released): no wake for it
                return True
            return False
        why = wake.wait(ctx, self.watch, (keys.events(),), until_s, vacated)
        if woken_by:
            fields = woken_by[0].fields
            ctx.log.debug("election: woken by %s of %s", fields.get("type"), fields.get("node"))
        if ctx.stopping:
            self._close_watch()  # --foreground calls no stop(): the process ends after its leave
        return why

    def _lapse_s(self, obs: Observation) -> float:
        """When (monotonic) the lease or round ``obs`` saw lapses, or infinity when it is not known."""
        if obs.outcome not in LAPSE_OUTCOMES or obs.lease_ms < 0 or self.elector.store is not self.elector.data:
            return float("inf")  # PTTL -1: a lease without expiry (an operator's SET): only events end it
        return self.elector.replied_s + obs.lease_ms / 1000 + defaults.ELECTION_LAPSE_MARGIN_S

    def _close_watch(self) -> None:
        if self.watch is not None:
            self.watch.reset()  # the connection and the positions: a later follow reads them anew

    def stop(self, ctx) -> None:
        """Release the lease at once (its ``leader_released`` wakes the followers: one of them takes over
        then, not at its next tick), and close the events connection."""
        try:
            if self.elector.release():
                ctx.log.info("released the lease on shutdown")
        finally:
            self._close_watch()
