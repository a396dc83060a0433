"""The leader_election job's tick: one elector step, logged; the lease given up when a loop stops."""

from distnode.cluster.elector import Elector


class ElectionJob:
    """One Elector per process, kept between the ticks of a loop (see ``run/jobs.py``)."""

    def __init__(self, ctx):
        self.elector = Elector(ctx)

    def __call__(self, ctx) -> dict:
        obs = self.elector.try_acquire_or_renew()
        # predecessor: this id's lease is an earlier process's term, waited out (at most one lease)
        level = "info" if obs.outcome in ("acquired", "stepped_down", "predecessor") else "debug"
        getattr(ctx.log, level)("election: %s (leader %s, epoch %d)", obs.outcome, obs.leader or "none", obs.epoch)
        return dict(obs.as_dict(), node=ctx.node_id)

    def stop(self, ctx) -> None:
        """Release the lease at once, so another node takes over in one tick instead of one TTL."""
        if self.elector.release():
            ctx.log.info("released the lease on shutdown")
