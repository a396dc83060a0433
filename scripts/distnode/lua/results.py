"""One decoder per Lua script: its raw reply as a named result (the reply shapes are in each
script's header). Text comes back as ``str``, numbers as ``int``, flags as ``bool``; a document
or payload stays ``bytes`` (its reader parses it). The task scripts' decoders are in
lua/task_results.py (lua.decode imports them only for a task script).
"""

from operator import itemgetter

# Each result type's fields. A type is built on first use (``result_type``): a tick decodes one or
# two scripts, and building every type at import cost a tick ~0.8 ms with namedtuple.
FIELDS = {
    "Heartbeat": "outcome now_s epoch other",
    "Elect": "outcome leader epoch pttl_ms confirmed run_id",
    "RedlockClaim": "outcome holder epoch claimed_epoch",
    "RedlockAnnounce": "outcome epoch confirmed holder",
    "FailoverScan": "outcome leader epoch cursor marked host pid",
    "Leave": "outcome released had_record host pid",
    "PublishState": "outcome epoch version doc",
    "StateRead": "leader epoch version doc",
    "KvSet": "ok version updated_s",
    "KvDelete": "outcome version",
    "KvEntry": "name version updated_s",
}
_types = {}  # name -> its type, once built (names are unique across this table and task_results')


def _new(cls, *values):
    if len(values) != len(cls._fields):
        raise TypeError("%s takes %d values, got %d" % (cls.__name__, len(cls._fields), len(values)))
    return tuple.__new__(cls, values)


def _repr(self) -> str:
    return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % pair for pair in zip(self._fields, self)))


def _getnewargs(self) -> tuple:
    return tuple(self)


def record(name: str, fields: str, module: str = __name__) -> type:
    """A tuple type whose items are also named attributes: what ``collections.namedtuple`` gives a
    caller here (``==`` with a plain tuple, slicing, unpacking, its repr, ``_fields``), at a tenth of
    its cost to build (namedtuple compiles code for each type: ~0.1 ms, 0.5 M instructions)."""
    names = tuple(fields.split())
    body = {"__slots__": (), "__module__": module, "_fields": names, "__new__": _new, "__repr__": _repr,
            "__getnewargs__": _getnewargs}
    for index, field in enumerate(names):
        body[field] = property(itemgetter(index), doc="item %d" % index)
    return type(name, (tuple,), body)


def result_type(name: str, fields: dict = FIELDS, module: str = __name__) -> type:
    """The result type ``name`` (its fields from ``fields``), built once per process on first use."""
    cls = _types.get(name)
    if cls is None:
        cls = _types[name] = record(name, fields[name], module)
    return cls


def __getattr__(name: str):
    """``results.Heartbeat`` and the like still name their types (PEP 562), built when first asked for."""
    if name in FIELDS:
        return result_type(name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def text(value) -> str:
    """A reply's bulk string as text ('' for nil); node ids and outcomes are ASCII."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _float_or_none(value):
    return float(value) if value not in (None, b"", "") else None


def heartbeat(reply) -> "Heartbeat":
    make = result_type("Heartbeat")
    if reply[0] == b"collision":
        return make("collision", 0.0, 0, text(reply[1]))
    return make("ok", float(reply[1]), int(reply[2]), None)


def elect(reply) -> "Elect":
    return result_type("Elect")(text(reply[0]), text(reply[1]), int(reply[2]), int(reply[3]), reply[4] == 1,
                                text(reply[5]))


def flag(reply) -> bool:
    """release, accept_term, redlock_raise, redlock_release, task_renew: 1 or 0."""
    return reply == 1


def integer(reply) -> int:
    """confirm_term: the lease's PTTL in ms."""
    return int(reply)


def id_list(reply) -> list:
    """prune, task_release: the ids the script acted on."""
    return [text(item) for item in reply]


def redlock_claim(reply) -> "RedlockClaim":
    make = result_type("RedlockClaim")
    if reply[0] == b"mine":
        return make("mine", "", int(reply[1]), int(reply[2]))
    return make("other", text(reply[1]), int(reply[2]), 0)


def redlock_announce(reply) -> "RedlockAnnounce":
    outcome = text(reply[0])
    return result_type("RedlockAnnounce")(outcome, int(reply[1]), outcome == "ok" and reply[2] == 1,
                                          text(reply[2]) if outcome == "held" else "")


def failover_scan(reply) -> "FailoverScan":
    make, outcome = result_type("FailoverScan"), text(reply[0])
    if outcome == "leader":
        return make(outcome, "", text(reply[1]), text(reply[2]), [text(m) for m in reply[3]], "", "")
    if outcome == "collision":
        return make(outcome, "", "", "0", [], text(reply[1]), text(reply[2]))
    if outcome == "follower":
        return make(outcome, text(reply[1]), "", "0", [], "", "")
    return make(outcome, "", text(reply[1]) if len(reply) > 1 else "", "0", [], "", "")


def leave(reply) -> "Leave":
    make = result_type("Leave")
    if reply[0] == b"collision":
        return make("collision", False, False, text(reply[1]), text(reply[2]))
    return make("left", reply[1] == 1, reply[2] == 1, "", "")


def publish_state(reply) -> "PublishState":
    return result_type("PublishState")(text(reply[0]), int(reply[1]), int(reply[2]), reply[3])


def state_read(reply) -> "StateRead":
    return result_type("StateRead")(text(reply[0]), int(reply[1]), int(reply[2]), reply[3])


def kv_set(reply) -> "KvSet":
    return result_type("KvSet")(reply[0] == b"ok", int(reply[1]), _float_or_none(reply[2]))


def kv_delete(reply) -> "KvDelete":
    return result_type("KvDelete")(text(reply[0]), int(reply[1]))


def kv_list(reply) -> list:
    make = result_type("KvEntry")
    return [make(text(reply[i]), int(reply[i + 1]), _float_or_none(reply[i + 2])) for i in range(0, len(reply), 3)]


DECODERS = {
    "heartbeat": heartbeat, "elect": elect, "release": flag, "confirm_term": integer, "accept_term": flag,
    "redlock_claim": redlock_claim, "redlock_raise": flag, "redlock_release": flag,
    "redlock_announce": redlock_announce, "failover_scan": failover_scan, "leave": leave, "prune": id_list,
    "publish_state": publish_state, "state_read": state_read, "kv_set": kv_set, "kv_delete": kv_delete,
    "kv_list": kv_list, "stream_ends": id_list,
}

