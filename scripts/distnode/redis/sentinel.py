"""Finding the current master through Redis Sentinel.

Imported only when ``redis.sentinels`` is set: a tick without Sentinel never
loads this module.

Guarantees:
- A sentinel's answer counts only as two bulk strings, a host and a port
  1..65535; anything else is its problem and the next sentinel is asked.
- Every sentinel's refusal or fault is kept for the one error raised when
  nobody names a master, which names each sentinel's ``host:port``; a
  password a sentinel echoes is replaced by ***.
"""

from distnode.redis.connection import Connection
from distnode.redis.errors import AuthError, RedisConnectionError, RedisError, ResponseError, SentinelError
from distnode.redis.resp import describe, text

__all__ = ["SentinelResolver", "SENTINEL_RECHECK_S", "MasterNotFoundError", "SentinelAuthError"]

# Shorter than any sensible tick interval, so a loop-mode process asks once per tick, as a
# one-shot tick does; long enough that one tick's requests share one answer.
SENTINEL_RECHECK_S = 0.5


class MasterNotFoundError(SentinelError, RedisConnectionError):
    """No sentinel answered, or none of them knows a master by that name."""


class SentinelAuthError(SentinelError, AuthError):
    """Every sentinel that answered refused our credentials (``redis.sentinel_password``)."""


class SentinelResolver:
    """Finds the current master of ``master_name`` by asking Redis Sentinel.

    One answer costs one round trip to one sentinel (AUTH rides in the same
    write: the query only reads). Sentinels are asked in order until one names the master; the one
    that answered is asked first next time, so a dead sentinel costs its
    connect timeout once per process. An answer is trusted for ``recheck_s``
    seconds: a loop-mode process asks again on its first request after that
    (in effect once per tick), which makes it follow a failover within one
    tick even when nothing failed: after ``SENTINEL FAILOVER`` the old master
    keeps accepting writes for several seconds until Sentinel demotes it.
    """

    def __init__(self, endpoints, master_name: str, password: str = "", username: str = "",
                 recheck_s: float = SENTINEL_RECHECK_S, **conn_kwargs):
        self.endpoints = [dict(ep) for ep in endpoints]
        self.master_name = master_name
        self._password, self._username = password, username
        self.recheck_s = recheck_s
        self._conn_kwargs = conn_kwargs
        self.round_trips = 0
        self.answered_by = ""

    def _ask(self, ep: dict, command: tuple, deadline_at: float = None):
        # A sentinel query only reads: its AUTH may ride with it (one round trip), as a
        # refused AUTH is still raised and nothing the query does can land anywhere.
        conn = Connection(ep["host"], ep.get("port", 26379), password=ep.get("password") or self._password,
                          username=ep.get("username") or self._username, handshake_apart=False,
                          **self._conn_kwargs)
        try:
            reply = conn.request([command], deadline_at)[0]
        finally:
            conn.close()
        self.round_trips += 1
        if isinstance(reply, ResponseError):
            raise type(reply)("%s: %s" % (conn.peer, conn.scrub(str(reply))))
        return reply, conn.peer

    def master_address(self, deadline_at: float = None) -> tuple:
        """``(host, port)`` of the master; MasterNotFoundError or SentinelAuthError if nobody says.

        Only a list of two bulk strings, a host and a port 1..65535 in digits, is an
        answer; anything else is that sentinel's problem and the next one is asked.
        """
        problems, refused = [], 0
        for i, ep in enumerate(self.endpoints):
            try:
                reply, peer = self._ask(ep, ("SENTINEL", "get-master-addr-by-name", self.master_name), deadline_at)
            except AuthError as exc:
                refused += 1
                problems.append(str(exc))
                continue
            except RedisError as exc:  # down, not a sentinel, or refusing: ask the next one
                problems.append(str(exc))
                continue
            if reply is None or reply == []:
                problems.append("%s knows no master named %r" % (peer, self.master_name))
                continue
            address = _master_address(reply)
            if address is None:
                problems.append("%s answered with %s, not a master's host and port" % (peer, describe(reply)))
                continue
            self.endpoints.insert(0, self.endpoints.pop(i))
            self.answered_by = peer
            return address
        detail = "; ".join(problems) or "no sentinels configured"
        if refused and refused == len(problems):
            raise SentinelAuthError("sentinels refused the credentials: %s" % detail)
        raise MasterNotFoundError("no sentinel named a master for %r: %s" % (self.master_name, detail))

    def master_state(self) -> dict:
        """``SENTINEL MASTER <name>`` from the sentinel that answered last, as a dict of str."""
        reply, _peer = self._ask(self.endpoints[0], ("SENTINEL", "MASTER", self.master_name))
        flat = [text(v) for v in reply or []]
        return dict(zip(flat[::2], flat[1::2]))


def _master_address(reply):
    """``(host, port)`` from a get-master-addr-by-name reply, or None if it is not one."""
    if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(v, bytes) for v in reply)):
        return None
    host, port = reply
    if not host or len(host) > 255 or any(b <= 32 or b == 127 for b in host):
        return None
    if not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return None
    return host.decode("utf-8", "replace"), int(port)
