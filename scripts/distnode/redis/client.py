"""The Redis client the product uses: commands over a small pool of connections to one server.

Layers, as redis-py keeps them: ``errors`` (the exception tree and the
reply-prefix table), ``resp`` (encoding and parsing, pure bytes),
``connection`` (one socket, its handshake and deadline), ``sentinel``
(finding the master; imported only when Sentinel is configured), ``script``
(EVAL/EVALSHA), and this module, which ties them into ``Redis``.

Guarantees:
- ``Redis.request`` as a whole (the sentinels' query and a resend included)
  ends within ``connect_timeout_s + socket_timeout_s``; one connection's
  handshake and commands within ``socket_timeout_s`` after connecting.
- Every fault is a ``RedisError`` naming ``host:port`` (or the master's name
  under Sentinel), never the password.
- With Sentinel, a broken connection or a READONLY reply is sent once more to
  the master the sentinels name now, when that can help.
"""

import time

from distnode.redis.connection import DEFAULT_TIMEOUT_S, Connection
from distnode.redis.errors import (NotMasterError, ReadOnlyError, RedisConnectionError, RedisTimeoutError,
                                   ResponseError, SentinelError)
from distnode.redis.resp import MAX_REPLY_BYTES

__all__ = ["Redis"]


class Redis:
    """Commands over a small pool of connections to one server.

    One-shot ticks use one connection; loop mode reuses pooled connections.
    ``request`` returns error replies in place; ``execute`` raises them.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, pool_size: int = 2,
                 sentinel=None, **conn_kwargs):
        """``sentinel``: a ``sentinel.SentinelResolver``, or None; ``conn_kwargs`` go to each ``Connection``."""
        self.host, self.port = host, int(port)
        self.peer = "%s:%d" % (host, self.port)
        self._conn_kwargs = conn_kwargs
        self._pool_size = pool_size
        self._idle = []
        self.round_trips = 0  # requests sent; a new connection's handshake trip is in Connection.round_trips
        # With a resolver, host and port are the master's as Sentinel last named it.
        self.sentinel = sentinel
        self._resolved_at = None
        self._reused = False
        self._in_flight = None  # the connection a request is using now (``interrupt``)
        self._interrupted = False  # interrupt() ended the request under way: no resend
        # Sources of the scripts this client has run, so the server has them cached (script.py).
        self.known_scripts = set()
        if sentinel is not None:
            self.peer = "the master %r (via Sentinel)" % sentinel.master_name

    @classmethod
    def from_settings(cls, redis_cfg: dict, **overrides) -> "Redis":
        """Build a client from the config's ``redis`` section."""
        kw = dict(host=redis_cfg["host"], port=redis_cfg["port"], password=redis_cfg.get("password", ""),
                  username=redis_cfg.get("username", ""), db=redis_cfg.get("db", 0),
                  connect_timeout_s=redis_cfg.get("connect_timeout", DEFAULT_TIMEOUT_S),
                  socket_timeout_s=redis_cfg.get("socket_timeout", DEFAULT_TIMEOUT_S),
                  tls=redis_cfg.get("tls", False), tls_ca_file=redis_cfg.get("tls_ca_file", ""),
                  tls_insecure=redis_cfg.get("tls_insecure", False),
                  max_reply_bytes=redis_cfg.get("max_reply_bytes", MAX_REPLY_BYTES))
        if redis_cfg.get("sentinels"):
            # Deferred: a tick without Sentinel skips the module (0.1-0.3 ms, measured with -X importtime).
            from distnode.redis.sentinel import SentinelResolver
            kw["sentinel"] = SentinelResolver(
                redis_cfg["sentinels"], redis_cfg["master_name"], password=redis_cfg.get("sentinel_password", ""),
                username=redis_cfg.get("sentinel_username", ""), connect_timeout_s=kw["connect_timeout_s"],
                socket_timeout_s=kw["socket_timeout_s"], tls=kw["tls"], tls_ca_file=kw["tls_ca_file"],
                tls_insecure=kw["tls_insecure"], max_reply_bytes=kw["max_reply_bytes"])
        kw.update(overrides)
        return cls(**kw)

    def _connection(self, deadline_at: float) -> Connection:
        if self.sentinel is not None:
            self._follow_master(False, deadline_at)
        self._reused = bool(self._idle)
        if self._idle:
            return self._idle.pop()
        return Connection(self.host, self.port, expect_master=self.sentinel is not None, **self._conn_kwargs)

    def _follow_master(self, force: bool, deadline_at: float = None) -> bool:
        """Ask the sentinels where the master is (when forced or the answer is old); True if it moved.

        A routine re-check that finds no sentinel keeps the master it knows:
        an outage of the sentinels alone must not stop a healthy cluster.
        """
        known = self._resolved_at is not None
        if not force and known and time.monotonic() - self._resolved_at < self.sentinel.recheck_s:
            return False
        try:
            host, port = self.sentinel.master_address(deadline_at)
        except SentinelError:
            if force or not known:
                raise
            self._resolved_at = time.monotonic()
            return False
        self._resolved_at = time.monotonic()
        moved = known and (host, port) != (self.host, self.port)
        if moved:
            self.close()  # pooled connections lead to the old master
            self.known_scripts.clear()  # and the new one has not cached our scripts
        self.host, self.port, self.peer = host, port, "%s:%d" % (host, port)
        return moved

    def _resend_after(self, exc, deadline_at: float) -> bool:
        """After a fault (``exc``) or a READONLY reply (None): ask the sentinels again; say if resending helps.

        It helps when the master moved, or when a pooled connection had gone
        stale (the server restarted or dropped us). A timeout on the same
        master, or a fresh connection refused, is left to the tick's retries.
        """
        if isinstance(exc, SentinelError) and not isinstance(exc, NotMasterError):
            return False  # the sentinels themselves failed: asking again at once will not help
        if time.monotonic() >= deadline_at:
            return False  # the request's time is spent: the fault stands as it is
        reused = self._reused
        self.close()
        if self._follow_master(True, deadline_at):
            return True
        return exc is not None and reused and not isinstance(exc, (RedisTimeoutError, NotMasterError))

    def _send(self, commands, deadline_at: float) -> list:
        conn = self._in_flight = self._connection(deadline_at)
        try:
            replies = conn.request(commands, deadline_at)
        finally:
            self._in_flight = None
            self._release(conn)
        self.round_trips += 1
        return replies

    def _release(self, conn: Connection) -> None:
        if conn.connected and len(self._idle) < self._pool_size:
            self._idle.append(conn)
        else:
            conn.close()

    def request(self, commands) -> list:
        """Run commands in one round trip; error replies are returned in place.

        With Sentinel, a connection fault or a READONLY reply sends the
        commands once more to the master the sentinels name now, when that
        can help (see ``_resend_after``); like the tick's own retries, a fault
        after the write may run a command twice.

        The whole request, the sentinels' query and a resend included, ends
        within ``connect_timeout_s + socket_timeout_s``; one connection's
        handshake and commands within ``socket_timeout_s`` after connecting.
        """
        kw = self._conn_kwargs
        deadline_at = time.monotonic() + kw.get("connect_timeout_s", DEFAULT_TIMEOUT_S) + \
            kw.get("socket_timeout_s", DEFAULT_TIMEOUT_S)
        self._interrupted = False
        if self.sentinel is None:
            return self._send(commands, deadline_at)
        try:
            replies = self._send(commands, deadline_at)
        except RedisConnectionError as exc:
            if self._interrupted or not self._resend_after(exc, deadline_at):
                raise
            return self._send(commands, deadline_at)
        if any(isinstance(r, ReadOnlyError) for r in replies) and self._resend_after(None, deadline_at):
            return self._send(commands, deadline_at)
        return replies

    def execute(self, *args):
        """Run one command; an error reply is raised."""
        reply = self.request([args])[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def interrupt(self) -> None:
        """From another thread: end the request under way (a blocking read) with a connection fault."""
        self._interrupted = True
        conn = self._in_flight
        if conn is not None:
            conn.shut_down()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
