"""Running Lua scripts: the one way the project sends EVAL and EVALSHA.

``Script(name, source, numkeys)`` is a script; ``script(client, keys, args)``
runs it alone and ``request_with_scripts(client, items)`` runs scripts and
plain commands together in one round trip.

Guarantees:
- The first run of a script on a client is an EVAL (which also caches it in
  Redis), so a one-shot tick needs neither hashlib nor a second round trip;
  later runs send EVALSHA.
- A NOSCRIPT reply (Redis restarted or flushed its script cache) costs one
  more round trip, which sends again, as EVAL, only the scripts that got
  NOSCRIPT (and a WAIT that followed one of them): every item runs once.
- A wrong number of keys is a ``ValueError`` before anything is sent.
"""

from distnode.redis.errors import NoScriptError, ResponseError

__all__ = ["Script", "request_with_scripts"]


class Script:
    """A named Lua script that takes ``numkeys`` keys.

    ``numkeys`` None: any number (a variadic script; the Lua loader checks
    its minimum before the script is sent).
    """

    def __init__(self, name: str, source: str, numkeys: "int | None"):
        self.name, self.source, self.numkeys = name, source, numkeys
        self._sha = None

    def __repr__(self) -> str:
        return "Script(%r, numkeys=%r)" % (self.name, self.numkeys)

    @property
    def sha(self) -> str:
        """The SHA-1 of the source, as EVALSHA wants it; computed on first use."""
        if self._sha is None:
            import hashlib  # only EVALSHA needs it: a one-shot tick sends EVAL and skips ~2.5 ms (-X importtime)
            self._sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        return self._sha

    def check_keys(self, keys) -> None:
        """ValueError unless ``keys`` has as many keys as the script takes."""
        if self.numkeys is not None and len(keys) != self.numkeys:
            raise ValueError("script %s takes %d keys, got %d" % (self.name, self.numkeys, len(keys)))

    def command(self, keys, args, use_sha: bool) -> tuple:
        """The EVALSHA (``use_sha``) or EVAL command that runs this script."""
        head = ("EVALSHA", self.sha) if use_sha else ("EVAL", self.source)
        return head + (len(keys),) + tuple(keys) + tuple(args)

    def __call__(self, client, keys=(), args=()):
        """Run the script alone and return its reply; an error reply is raised."""
        reply = request_with_scripts(client, [(self, keys, args)])[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply


def _is_script_item(item) -> bool:
    return isinstance(item[0], Script)


def request_with_scripts(client, items) -> list:
    """Send ``items`` in one round trip and return one reply each, error replies in place.

    An item is a command tuple or ``(Script, keys, args)``. Scripts this
    client has run go as EVALSHA, others as EVAL. Every item runs once: on
    NOSCRIPT only the refused scripts are sent once more, as EVAL, in their
    order; everything else has run and keeps its reply. A refused script so
    runs after the items that followed it: a batch must not need a later
    item to see what an earlier script wrote (a worker's XREADGROUP before
    task_prepare's promotions merely reads them next time). The one
    exception is WAIT, which counts the replicas that got this connection's
    writes before it: a WAIT that followed a refused script is sent again
    after the script's EVAL (its first reply covered less), and WAIT writes
    nothing, so running it twice does no harm.
    """
    items = list(items)
    for item in items:
        if _is_script_item(item):
            item[0].check_keys(item[1])
    known = client.known_scripts
    replies = client.request([_command(item, known) for item in items])
    again = _refused(items, replies)
    if again:
        known.difference_update(items[i][0].source for i in again if _is_script_item(items[i]))
        for i, reply in zip(again, client.request([_command(items[i], known) for i in again])):
            replies[i] = reply
    _learn(known, items, replies)
    return replies


def _refused(items: list, replies: list) -> list:
    """Positions to send again: each script that got NOSCRIPT, and each WAIT after the first of them."""
    again = []
    for i, (item, reply) in enumerate(zip(items, replies)):
        if _is_script_item(item) and isinstance(reply, NoScriptError):
            again.append(i)
        elif again and not _is_script_item(item) and _is_wait(item):
            again.append(i)
    return again


def _is_wait(command: tuple) -> bool:
    name = command[0]
    return (name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)).upper() == "WAIT"


def _command(item, known: set) -> tuple:
    if not _is_script_item(item):
        return item
    script, keys, args = item
    return script.command(keys, args, script.source in known)


def _learn(known: set, items: list, replies: list) -> None:
    """Remember the scripts that ran without an error reply: Redis has them cached now. (One
    that failed to compile is not cached; one sent as EVALSHA that refused stays known.)"""
    for item, reply in zip(items, replies):
        if _is_script_item(item) and not isinstance(reply, ResponseError):
            known.add(item[0].source)
