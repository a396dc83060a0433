"""The application's errors: one root, each class carrying its exit code and its hint.

A script never prints a traceback for an expected fault: the runner turns it
into one line on stderr and an exit code, both read from here (``describe``):

- an ``AppError`` carries its own: ``exit_code`` (a name from ``exits``) and the
  line ``line()`` renders, "<label>: <message> (<hint>)";
- a Redis fault (the client's tree, ``distnode.redis.errors``) exits
  ``exits.FAILED`` with the words of ``REDIS_HINTS``, looked up along the
  fault's class hierarchy, most specific class first;
- anything else is not expected: ``describe`` returns None and the runner
  reports it as ``exits.INTERNAL`` with the traceback in the log.

A class's ``hint`` is what to check for any error of that class; it is added
to the line unless the message already says it. A class whose every message
names its own next step (a ConfigError names the file and key, a TickError
the process, key or setting) carries no class hint; a raise site may pass
its own ``hint=``.
"""

from distnode.core import exits  # no `typing` here: a tick would pay its ~5 ms import for two annotations
from distnode.redis import errors as redis_errors


class AppError(Exception):
    """Root of every error this skill raises on purpose; never raised itself."""

    exit_code = exits.FAILED
    label = "error"  # the word before the message on the user's line ("" for none)
    hint = ""

    def __init__(self, message: str = "", hint: str = None):  # hint None: the class's
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def line(self) -> str:
        """The one line a user sees (without the program's name): label, message, and the hint unless
        the message already holds it."""
        text = "%s: %s" % (self.label, self) if self.label else str(self)
        if self.hint and self.hint not in text:
            text += " (%s)" % self.hint
        return text


class ConfigError(AppError):
    """The configuration cannot be used; the message names the file and key, and why."""

    exit_code = exits.BAD_CONFIG
    label = "config error"


class UsageError(AppError):
    """A command line this script does not take; nothing was done."""

    exit_code = exits.BAD_CONFIG
    hint = "see --help"


class BrokenInstall(AppError):
    """A file the skill ships (a Lua script) is missing or malformed: reinstall; nothing was sent."""

    exit_code = exits.INTERNAL
    label = "broken install"
    hint = "reinstall the skill or restore the file from its release"


class BadInput(AppError, ValueError):
    """A name or value the command refuses (a key, a JSON value, a payload); the message says what and why."""

    exit_code = exits.BAD_CONFIG
    hint = "see --help"


class InputError(BadInput):
    """A file or stdin that cannot be read as input: missing, a FIFO or device, closed, or over its cap."""


class TickError(AppError):
    """The cluster is in a state this command refuses to act in; the message says why and what to check."""


class NodeIdCollision(TickError):
    """Another live machine already heartbeats under this node id; the message says how to pick another."""


class SetupError(AppError):
    """A step of ``start-node.sh`` failed; the message is the one line saying what to check.

    Its exit code is that of the failing step (a script it ran exits 1, 2 or 3), FAILED by default."""

    label = ""

    def __init__(self, message: str, exit_code: int = exits.FAILED):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(SystemExit):
    """SIGTERM stopped a one-shot command or tick (raised from the signal handler that
    ``run/commands.py`` or ``procs/spawn.py`` sets); ``message`` is the one line the runner shows.

    A SystemExit with code 143: no ``except Exception`` on the way up takes it for a failure of
    the work and carries on, and where no runner catches it (the detached hook owner) the process
    still exits 143 without a word, as SIGTERM's default action would."""

    exit_code = exits.TERMINATED

    def __init__(self, message: str = "stopped by SIGTERM"):
        super().__init__(exits.TERMINATED)
        self.message = message


# Redis faults: the words around the fault's own text. Looked up along the class's MRO, so a Sentinel
# fault that is also a connection fault reads as Sentinel's, and any other error reply as "refused".
REDIS_HINTS = {
    redis_errors.SentinelError: "Redis Sentinel: %s (check redis.sentinels, redis.master_name and "
                                "redis.sentinel_password; during a failover this clears within seconds)",
    redis_errors.AuthError: "%s (check redis.password / redis.username in secrets.json or REDIS_PASSWORD)",
    redis_errors.RedisTimeoutError: "Redis timed out: %s (is the host reachable and the server responsive?)",
    redis_errors.RedisConnectionError: "Redis unreachable: %s (check redis.host / redis.port and that "
                                       "redis-server runs)",
    redis_errors.ProtocolError: "not a Redis server? %s",
    redis_errors.ReadOnlyError: "Redis refused: %s (this server is a read-only replica: point redis.host at "
                                "the master, or use redis.sentinels)",
    redis_errors.LoadingError: "Redis refused: %s (the server is still loading its data: this clears by itself)",
    redis_errors.NoPermError: "Redis ACL refused a command: %s (grant the user the commands listed in "
                              "docs/en/security.md)",
    redis_errors.ResponseError: "Redis refused: %s",
}


def explain(exc: BaseException) -> str:
    """What went wrong, in words: a Redis fault with its hint, an AppError's line without its label."""
    if isinstance(exc, AppError):
        return exc.line()[len(exc.label) + 2:] if exc.label else exc.line()
    for cls in type(exc).__mro__:
        template = REDIS_HINTS.get(cls)
        if template is not None:
            return template % exc
    return str(exc)


def describe(exc: BaseException):  # -> (int, str) or None
    """(exit code, the one line a user sees) for an expected fault; None for anything else (a bug)."""
    if isinstance(exc, AppError):
        return exc.exit_code, exc.line()
    if isinstance(exc, redis_errors.RedisError):
        return exits.FAILED, "error: " + explain(exc)
    return None
