"""Every fault the Redis client raises, and the table that names an error reply.

One tree, rooted at ``RedisError``: the connection broke or timed out, the
peer spoke something other than RESP, or the server answered with an error
reply (``ResponseError`` and its subclasses). An error reply's first word
picks its class from ``ERROR_PREFIXES``, as redis-py's ``_parsers/base.py``
does; the project's own Lua refusals (``FENCED``, ``STALE``, ``BADEPOCH``,
``COLLISION``) are in that table too, so a caller catches a class and never
matches the text.

Guarantee: a message built here carries what the caller put in it; the
connection layer puts ``host:port`` in every fault and never a password.

The two faults only Sentinel discovery raises (``MasterNotFoundError``,
``SentinelAuthError``) live in ``sentinel.py``, as in redis-py: a tick
without Sentinel never loads them (each class costs ~0.1 M instructions).
Their marker ``SentinelError`` and ``NotMasterError`` (the connection's
ROLE check) stay here.
"""

__all__ = [
    "RedisError", "RedisConnectionError", "RedisTimeoutError", "ProtocolError", "ResponseError",
    "AuthError", "NoAuthError", "WrongPassError", "NoPermError", "NoScriptError", "ReadOnlyError",
    "LoadingError", "WrongTypeError", "BusyError", "ExecAbortError", "MasterDownError",
    "FencedError", "StaleError", "BadEpochError", "CollisionError",
    "SentinelError", "NotMasterError",
    "ERROR_PREFIXES", "error_from_reply",
]


class RedisError(Exception):
    """Root of every error the Redis client raises."""


class RedisConnectionError(RedisError):
    """The server could not be reached, or the connection broke."""


class RedisTimeoutError(RedisConnectionError):
    """Connecting or waiting for a reply took longer than the timeout."""


class ProtocolError(RedisError):
    """The peer sent bytes that are not valid RESP (maybe not Redis at all)."""


class ResponseError(RedisError):
    """The server answered with an error reply (``-ERR ...``)."""


class AuthError(ResponseError):
    """The server refused our credentials, or needs some."""


class NoAuthError(AuthError):
    """NOAUTH: the server needs a password and got none."""


class WrongPassError(AuthError):
    """WRONGPASS: the password (or user and password) is wrong."""


class NoPermError(ResponseError):
    """NOPERM: the ACL user may not run this command or touch this key."""


class NoScriptError(ResponseError):
    """NOSCRIPT: EVALSHA of a script the server has not cached (restarted or flushed)."""


class ReadOnlyError(ResponseError):
    """READONLY: a write reached a replica (a failover may be under way)."""


class LoadingError(ResponseError):
    """LOADING: the server is still loading its dataset after a restart."""


class WrongTypeError(ResponseError):
    """WRONGTYPE: a key holds another type than the command (or script) expects."""


class BusyError(ResponseError):
    """BUSY: a script has run past lua-time-limit."""


class ExecAbortError(ResponseError):
    """EXECABORT: a transaction was discarded for a queue-time error."""


class MasterDownError(ResponseError):
    """MASTERDOWN: a replica lost its master and refuses stale reads."""


# -- the project's own refusals, raised by its Lua scripts with redis.error_reply --

class FencedError(ResponseError):
    """FENCED: the writer does not hold the lease at the epoch it claims (fenced write refused)."""


class StaleError(ResponseError):
    """STALE: a newer epoch's snapshot is already there; an older one never replaces it."""


class BadEpochError(ResponseError):
    """BADEPOCH: an epoch key or argument is not a plain integer in range."""


class CollisionError(ResponseError):
    """COLLISION: another live process is using this node id."""


# -- Sentinel --

class SentinelError(RedisError):
    """A fault in finding the master through Redis Sentinel (a marker, mixed into NotMasterError and
    sentinel.py's MasterNotFoundError and SentinelAuthError)."""


class NotMasterError(SentinelError, RedisConnectionError):
    """The server the sentinels named is not a master (yet, or any more): a failover is under way."""


# The first word of an error reply picks its class.
ERROR_PREFIXES = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "LOADING": LoadingError,
    "WRONGTYPE": WrongTypeError,
    "NOAUTH": NoAuthError,
    "WRONGPASS": WrongPassError,
    "NOPERM": NoPermError,
    "BUSY": BusyError,
    "EXECABORT": ExecAbortError,
    "MASTERDOWN": MasterDownError,
    "FENCED": FencedError,
    "STALE": StaleError,
    "BADEPOCH": BadEpochError,
    "COLLISION": CollisionError,
}


def error_from_reply(text: str) -> ResponseError:
    """The most specific ``ResponseError`` for an error reply's text (the text is kept whole)."""
    first = text.split(" ", 1)[0]
    if first == "ERR" and text.startswith("ERR Error running script") and ": -" in text:
        # Redis < 7 wraps an error raised inside a script: "... @user_script: 36: -READONLY You can't ..."
        first = text.rpartition(": -")[2].split(" ", 1)[0]
    cls = ERROR_PREFIXES.get(first, ResponseError)
    if cls is ResponseError and "invalid password" in text:
        cls = WrongPassError  # Redis < 6: "ERR invalid password"
    elif cls is ResponseError and "AUTH" in text and "no password is set" in text:
        cls = AuthError  # password given but the server has none
    elif cls is ResponseError and "Protocol error: unauthenticated" in text:
        cls = NoAuthError  # Redis >= 6.2.6 refuses long commands before AUTH this way
    return cls(text)
