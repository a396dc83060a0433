"""Errors a tick reports as one line on stderr with exit code 1 (no traceback).

Redis faults have their own tree in ``redis_client`` and config faults raise
``config.ConfigError``; this is for the rest: a cluster in a state the tick
refuses to act in, named so the user knows what to fix.
"""


class TickError(Exception):
    """The tick could not do its job; the message says why and what to check."""


class NodeIdCollision(TickError):
    """Another live machine already heartbeats under this node id."""
