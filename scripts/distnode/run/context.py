"""What a tick or a command gets (``Context``), and the one place a Redis call is retried.

``Context.retried(call, ...)`` runs ``call`` again on a connection fault (and
on LOADING, READONLY, MASTERDOWN: faults that clear when the server or a
failover settles), ``node.retry_count`` times, ``node.retry_delay`` seconds
apart plus jitter. Anything else, and the last failure, is raised. The
runners retry a whole tick this way; a command retries only its Redis calls,
so what it prepared first (stdin read, a token, a deadline) is done once.

A write that must not run twice takes an ``Operation`` (``Context.operation()``)
made before ``retried``: its script records what it did under the token for
``record_ttl_ms`` (longer than the retries can go on), so the attempt sent
again after a lost reply gets the first one's outcome and changes nothing.
"""

import os
import time

from distnode.core import defaults, exits
from distnode.redis import errors as redis_errors
from distnode.redis.client import Redis

RETRYABLE = (redis_errors.RedisConnectionError, redis_errors.LoadingError, redis_errors.ReadOnlyError,
             redis_errors.MasterDownError)


class Operation:
    """One write's operation token (16 hex digits) and how long its script keeps the record under it (ms).

    A plain class, not a namedtuple: every tick imports this module, and building a namedtuple type
    costs it ~0.1 ms (0.5 M instructions)."""

    __slots__ = ("token", "record_ttl_ms")

    def __init__(self, token: str, record_ttl_ms: int):
        self.token, self.record_ttl_ms = token, record_ttl_ms

    def __repr__(self) -> str:
        return "Operation(%r, %d)" % (self.token, self.record_ttl_ms)


class WakeUp(Exception):
    """Raised by a signal handler into ``Context.sleep`` so a stop ends the sleep at once."""


class Context:
    """What a tick gets: config, logger, a lazily connected client, its flags."""

    def __init__(self, script: str, cfg, log, flags: dict):
        self.script, self.cfg, self.log, self.flags = script, cfg, log, flags
        self.node_id = cfg.node_id
        self.args = flags.get("args", [])
        self.loop = bool(flags.get("--loop"))
        self.exit_code = exits.OK
        self.stop_event = None  # a threading.Event when several loops share one process
        self.failures_in_a_row = 0  # loop mode: ticks failed since the last good one
        self.last_ok_s = None  # loop mode: time.monotonic() of the last good tick
        self._stopping = False
        self._redis = None
        self.sleeping = False  # inside sleep(): a signal handler may raise WakeUp

    @property
    def stopping(self) -> bool:
        return self._stopping or (self.stop_event is not None and self.stop_event.is_set())

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = value

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_settings(self.cfg["redis"])
        return self._redis

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on SIGTERM/SIGINT in loop mode."""
        if self.stopping or seconds <= 0:
            return
        if self.stop_event is not None:
            self.stop_event.wait(seconds)
            return
        self.sleeping = True
        try:
            time.sleep(seconds)
        except WakeUp:
            pass
        finally:
            self.sleeping = False

    @property
    def retry_window_s(self) -> float:
        """The longest ``retried`` goes on (``retry_window_s``)."""
        return retry_window_s(self.cfg)

    def operation(self) -> Operation:
        """A new token for one write sent through ``retried``; its record outlives the retries."""
        record_s = self.retry_window_s + defaults.OP_RECORD_SLACK_S
        return Operation(os.urandom(8).hex(), int(record_s * 1000))

    def retried(self, call, *args, **kwargs):
        """``call(*args, **kwargs)``, run again after a RETRYABLE fault up to ``node.retry_count`` times."""
        attempts = self.cfg["node"]["retry_count"] + 1
        for attempt in range(1, attempts + 1):
            try:
                return call(*args, **kwargs)
            except RETRYABLE as exc:
                if attempt >= attempts or self.stopping:
                    raise
                self.log.warning("attempt %d/%d failed: %s; retrying", attempt, attempts, exc)
                self.sleep(_jitter(self.cfg.retry_delay_s))


def retry_window_s(cfg, requests_per_attempt: int = defaults.REQUESTS_PER_ATTEMPT) -> float:
    """The longest ``Context.retried`` goes on for a call that sends ``requests_per_attempt`` requests:
    every attempt's requests at their whole deadline (connect + request timeout, a Sentinel query
    included) and every pause at its longest."""
    attempts = cfg["node"]["retry_count"] + 1
    request_s = cfg.connect_timeout_s + cfg.socket_timeout_s
    pauses_s = (attempts - 1) * cfg.retry_delay_s * (1 + defaults.RETRY_JITTER_FRACTION)
    return attempts * requests_per_attempt * request_s + pauses_s


def _jitter(delay_s: float) -> float:
    """``delay_s`` plus up to RETRY_JITTER_FRACTION of it, so nodes retrying together spread out."""
    return delay_s * (1 + defaults.RETRY_JITTER_FRACTION * os.urandom(1)[0] / 255.0)  # no `random` import
