"""Waking a living process the moment something lands in Redis: blocking reads on a connection of its own.

Under cron every tick is a new process and waits for the next one. A job that
lives (``--loop``, ``--foreground``) can do better: between ticks it blocks on
the streams that say "tick now" (the worker: its task streams; the elector:
the cluster events), ``XREAD BLOCK`` from the last entry it knows, and ticks
the moment one gets a new entry. ``redis.blocking_reads`` false turns this
off: the job sleeps its period, as cron does.

Guarantees:
- a blocking read never runs on the connection ticks use (``ctx.redis``): a
  tick's request, a heartbeat or a renewal, never queues behind it;
- a block lasts at most ``block_max_s`` (default: half of
  ``redis.socket_timeout``) and its reply is due half the socket timeout
  later, so a Redis that goes away or goes silent while the worker blocks is
  noticed within ``redis.socket_timeout`` (the elector, whose steps use
  another connection anyway, blocks up to its period: fewer reads); the job
  then sleeps
  ``node.retry_delay`` (at least FAULT_PAUSE_MIN_S) and ticks (the tick's own
  retries reconnect);
- nothing that lands is missed: a stream's position is read (``follow``)
  before the tick that covers what came before it, and ``wait`` returns
  ``"primed"`` without blocking whenever it read one, so the caller ticks
  first; from then on every entry past the position wakes the read;
- a stop ends the wait at once: under ``--loop`` SIGTERM raises into it,
  under ``--foreground`` the signal handler calls ``interrupt_all()``, which
  shuts the blocked connections down; either way the connection is dropped.

Waking early never changes what a tick may do: the tick decides, in Redis,
as it does under cron (a lease is taken only once it lapsed, a task claimed
only once).
"""

import time

from distnode.redis.errors import RedisError, ResponseError
from distnode.run.context import WakeUp

# Entries one read returns per stream at most: enough to know what woke it; a backlog past it is
# read by the next wait (which returns at once), never left unseen.
READ_COUNT = 100
# The least a wait sleeps after a fault: node.retry_delay may be 0, and a tick that returns at once
# without Redis (the foreground worker's while no heartbeat works) must not spin with the connects.
FAULT_PAUSE_MIN_S = 0.1
# After Redis refused a blocking read (an ACL without XREAD, a key of another type): the job sleeps its
# periods, as with redis.blocking_reads false, this long before it tries to block again.
REFUSED_PAUSE_S = 60.0


class Entry:
    """One stream entry a wait saw: ``stream``, ``id`` and ``fields`` (str -> str)."""

    __slots__ = ("stream", "id", "fields")

    def __init__(self, stream: str, entry_id: str, fields: dict):
        self.stream, self.id, self.fields = stream, entry_id, fields

    def __repr__(self) -> str:
        return "Entry(%r, %r, %r)" % (self.stream, self.id, self.fields)


_OPEN = set()  # the watches holding a client now: interrupt_all() ends their reads


def interrupt_all() -> None:
    """End every blocking read under way in this process (another thread's); each is dropped as a fault."""
    for watch in list(_OPEN):
        client = watch.redis
        if client is not None:
            client.interrupt()


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class StreamWatch:
    """``XREAD BLOCK`` over a set of streams, from the last id seen on each, on a connection of its own."""

    def __init__(self, ctx, block_max_s: float = None):
        """``block_max_s``: the longest one read blocks (default: half of ``redis.socket_timeout``)."""
        self.ctx = ctx
        self.half_timeout_s = ctx.cfg.socket_timeout_s / 2
        self.block_max_s = self.half_timeout_s if block_max_s is None else block_max_s
        self.redis = None
        self.positions = {}  # stream -> the last entry id this watch knows of ("0-0": none)
        self.refused_until_s = 0.0  # time.monotonic() before which the caller sleeps instead (a refusal)
        self.streams = ()

    def _client(self):
        if self.redis is None:
            from distnode.redis.client import Redis  # already loaded by the tick's own client
            # a read blocks up to block_max_s; its reply is due half the socket timeout after that
            self.redis = Redis.from_settings(self.ctx.cfg["redis"], pool_size=1,
                                             socket_timeout_s=self.block_max_s + self.half_timeout_s)
            _OPEN.add(self)
        return self.redis

    @property
    def usable(self) -> bool:
        """False for REFUSED_PAUSE_S after Redis refused a read: the caller sleeps its period instead."""
        return time.monotonic() >= self.refused_until_s

    def follow(self, streams) -> bool:
        """Watch ``streams`` from now on; True if each already had a position (the watch may block).

        A stream new to the watch gets the id of the last entry it ever got as
        its position (one round trip for all of them; "0-0" for a missing
        stream), and False says so: something may have landed on it between the caller's
        last tick and now, so the caller ticks before it blocks.
        """
        self.streams = tuple(streams)
        new = [s for s in self.streams if s not in self.positions]
        if not new:
            return True
        from distnode import lua  # already loaded by the tick
        # the last generated ids (lua/stream_ends.lua says why not the last entries'); a key of another
        # type is a WRONGTYPE error naming it, which wait() takes as a refusal
        self.positions.update(zip(new, lua.run(self._client(), "stream_ends", new)))
        return False

    def read(self, timeout_s: float) -> list:
        """Block up to ``timeout_s`` (at most ``block_max_s``) for entries past the positions.

        Returns the entries (``Entry``), oldest first per stream, and moves the
        positions past them; [] when the block ran out. A fault drops the
        connection and every position (a restarted server has other ids) and
        is raised. Under ``--loop`` a stop signal ends the block (``WakeUp``): [].
        """
        block_ms = max(1, int(min(timeout_s, self.block_max_s) * 1000))
        command = ("XREAD", "COUNT", READ_COUNT, "BLOCK", block_ms, "STREAMS") + self.streams + tuple(
            self.positions[s] for s in self.streams)
        ctx = self.ctx
        ctx.sleeping = True  # a stop signal may raise WakeUp into the read (run/ticks.py)
        try:
            reply = self._client().execute(*command)
        except WakeUp:
            self.reset()  # the reply may still come: this connection is not safe to reuse
            return []
        except RedisError:
            self.reset()
            raise
        finally:
            ctx.sleeping = False
        entries = []
        for stream, items in reply or ():
            stream = _text(stream)
            for entry_id, flat in items:
                fields = {}
                for i in range(0, len(flat or ()) - 1, 2):
                    fields[_text(flat[i])] = _text(flat[i + 1])
                entries.append(Entry(stream, _text(entry_id), fields))
            if items:
                self.positions[stream] = _text(items[-1][0])
            else:  # an answer with no entry (Redis 5, a position below the stream's end): read it anew
                self.positions.pop(stream, None)
        return entries

    def forget(self) -> None:
        """Forget every position, keep the connection: the next ``follow`` reads them again (one round
        trip). For a caller whose tick consumed a backlog: reading from the old positions would return
        every entry it already handled, a hundred per stream and read, each waking a tick for nothing."""
        self.positions = {}

    def reset(self) -> None:
        """Forget the connection and every position (the next ``follow`` reads them again)."""
        self.forget()
        self.close()

    def close(self) -> None:
        _OPEN.discard(self)
        if self.redis is not None:
            self.redis.close()
            self.redis = None


def wait(ctx, watch: StreamWatch, streams, until_s: float, wakes) -> str:
    """Block on ``streams`` until an entry ``wakes(entry)`` accepts lands, or ``time.monotonic()``
    reaches ``until_s``. Why it returned: "woken", "due", "primed" (new streams were read:
    tick before blocking), "fault" (Redis failed; slept ``node.retry_delay``), "refused" (Redis
    refused the read: ``watch.usable`` is False for REFUSED_PAUSE_S) or "stopping".

    Entries ``wakes`` refuses (an event of another kind) move the positions on and the wait goes on.
    """
    try:
        while not ctx.stopping:
            if not watch.follow(streams):  # no round trip once every stream has a position
                return "primed"
            left_s = until_s - time.monotonic()
            if left_s <= 0:
                return "due"
            if any(wakes(entry) for entry in watch.read(left_s)):
                return "woken"
    except ResponseError as exc:  # refused, not failed: an ACL without XREAD, a key of another type
        watch.reset()
        watch.refused_until_s = time.monotonic() + REFUSED_PAUSE_S
        ctx.log.warning("Redis refused a blocking read (%s): sleeping between ticks for %ds, as with "
                        "redis.blocking_reads false", exc, REFUSED_PAUSE_S)
        return "refused"
    except RedisError as exc:
        watch.reset()
        if ctx.stopping:
            return "stopping"  # interrupt_all() ended the read
        ctx.log.info("blocking read failed (%s); ticking instead", exc)
        ctx.sleep(min(max(ctx.cfg.retry_delay_s, FAULT_PAUSE_MIN_S), max(until_s - time.monotonic(), 0)))
        return "fault"
    return "stopping"
