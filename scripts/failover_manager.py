#!/usr/bin/env python3
"""Failover: the leader marks dead nodes offline and hands their work to live ones.

Runs on every node each tick; only the leader acts, and every write it makes
is fenced (a Lua script checks, in Redis, that it still holds the lease at
its epoch). One tick:
  1. sweep the members page by page (HSCAN inside one script per page, no
     per-node round trips): a member whose ``hb:<id>`` key has expired is
     marked ``offline`` once, with an event on ``openclaw:cluster:events``,
     and the ``on_node_offline`` hook runs;
  2. if the lease is vacant, run the election at once instead of waiting
     for this node's leader_election tick;
  3. reclaim tasks held by offline or departed nodes, and tasks stuck
     longer than their timeout plus a grace on live ones.
A follower's tick is one round trip.
"""

import gc
import sys

if __name__ == "__main__":
    gc.disable()  # a one-shot tick runs without the cyclic collector; --loop turns it on (run/ticks.py)

from distnode.run import jobs, ticks  # noqa: E402 - imported with the collector off


def main(argv=None) -> int:
    return ticks.main(jobs.get("failover_manager"), __doc__, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
