#!/usr/bin/env python3
"""Leader election: renew this node's lease, or take it when it is vacant.

One tick is one step of the elector (see distnode/cluster/elector.py for the algorithm
and its guarantees): one Lua script, one round trip with a single Redis. The
lease is ``openclaw:cluster:leader`` (the leader's node id, TTL
``election.lease_ttl``); every acquisition increments the fencing epoch
``openclaw:cluster:epoch``. Hooks in config run on transitions.

With ``--loop`` it renews every ``election.renew_interval`` seconds and, on
SIGTERM or SIGINT, releases the lease at once so another node takes over in
one tick instead of one TTL.
"""

import gc
import sys

if __name__ == "__main__":
    gc.disable()  # a one-shot tick runs without the cyclic collector; --loop turns it on (run/ticks.py)

from distnode.run import jobs, ticks  # noqa: E402 - imported with the collector off


def main(argv=None) -> int:
    return ticks.main(jobs.get("leader_election"), __doc__, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
