#!/usr/bin/env python3
"""Leader election: renew this node's lease, or take it when it is vacant.

One tick is one step of the elector (see scripts/elector.py for the algorithm
and its guarantees): one Lua script, one round trip with a single Redis. The
lease is ``openclaw:cluster:leader`` (the leader's node id, TTL
``election.lease_ttl``); every acquisition increments the fencing epoch
``openclaw:cluster:epoch``. Hooks in config run on transitions.

With ``--loop`` it renews every ``election.renew_interval`` seconds and, on
SIGTERM or SIGINT, releases the lease at once so another node takes over in
one tick instead of one TTL.
"""

import sys

from distnode.run import runner
from distnode.cluster.elector import Elector


def tick(ctx) -> dict:
    elector = _elector(ctx)
    obs = elector.try_acquire_or_renew()
    level = "info" if obs.outcome in ("acquired", "stepped_down") else "debug"
    getattr(ctx.log, level)("election: %s (leader %s, epoch %d)", obs.outcome, obs.leader or "none", obs.epoch)
    return dict(obs.as_dict(), node=ctx.node_id)


def _elector(ctx) -> Elector:
    if not hasattr(ctx, "elector"):
        ctx.elector = Elector(ctx)
    return ctx.elector


def on_stop(ctx) -> None:
    if _elector(ctx).release():
        ctx.log.info("released the lease on shutdown")


def main(argv=None) -> int:
    return runner.main("leader_election", tick, __doc__, argv=argv, on_stop=on_stop,
                       interval_s=lambda cfg: cfg.renew_interval_s)


if __name__ == "__main__":
    sys.exit(main())
