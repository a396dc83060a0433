#!/usr/bin/env python3
"""Heartbeat: tell the cluster this node is alive, once per tick.

One tick is one Lua script, one round trip, atomic: it refreshes this node's
record in ``openclaw:cluster:nodes`` (JSON: id, host, pid, status,
last_heartbeat and started_at by Redis's clock, version, labels,
capabilities) and sets ``hb:<node id>`` with a TTL of ``heartbeat_ttl``. When
the key expires the node is offline; nobody compares machine clocks.

Run it every ``heartbeat_interval`` seconds from OpenClaw cron, or with
``--loop``. Exit codes: 0 ok, 1 Redis unreachable/refusing or the node id is
taken by another live machine, 2 bad config.
"""

import gc
import sys

if __name__ == "__main__":
    gc.disable()  # a one-shot tick runs without the cyclic collector; --loop turns it on (run/ticks.py)

from distnode.run import jobs, ticks  # noqa: E402 - imported with the collector off


def main(argv=None) -> int:
    return ticks.main(jobs.get("heartbeat"), __doc__, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
