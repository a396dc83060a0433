"""The agents' shared key-value store in Redis: small JSON values, versioned, written atomically.

An entry is the hash ``openclaw:cluster:kv:<name>`` {value, version, updated}; its
name is also in ``openclaw:cluster:kv-index`` (for ``list``), and every change is
announced on the pub/sub channel ``openclaw:cluster:kv-changes`` (message: the name).

Guarantees:
- every write (set, compare-and-set, delete) is one Lua script: readers see the old
  entry or the new one, never a mix, and the index never disagrees with the entries;
- versions only grow: each write takes the next number of one counter, so an entry
  never shows the same version twice, not even after a delete and re-create; a
  compare-and-set at the version a reader saw succeeds only if nobody wrote in
  between, so read-modify-write loops lose no update;
- ``updated`` is Redis's clock (seconds, 3 decimals), not the writer's;
- a write sent again with the same operation (a retry after its reply was lost)
  returns what the first one did and changes nothing: the script records its
  outcome under the operation's token (``openclaw:cluster:kv-op:<token>``, for
  the operation's ``record_ttl_ms``);
- nothing is written unless the name and the value are valid.

Not guaranteed: values are as durable as Redis's persistence; ``watch`` reports that an
entry changed and its value then, not every version in between. These writes are
agents' writes and are not fenced by the leader's lease.
"""

import json
import time

from distnode.core import config
from distnode.core import keys
from distnode import lua
from distnode.core.defaults import (STATE_KEY_MAX_CHARS, STATE_LIST_LIMIT, STATE_VALUE_MAX_BYTES, WAIT_POLL_FIRST_S,
                                    WAIT_POLL_MAX_S)
from distnode.core.errors import BadInput, TickError  # noqa: F401 - BadInput: raised here, caught as shared_state.BadInput
from distnode.redis.errors import WrongTypeError


# -- validation --------------------------------------------------------------

def _shown(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "...")


def _bad_char(ch: str):
    """What is wrong with one character of a name, or None."""
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return "bytes that are not UTF-8"
    if ch == " ":
        return "a space"
    if code < 32 or 127 <= code < 160:
        return "a control character (%r)" % ch
    if ch.isspace():
        return "a white-space character (%r)" % ch
    return None


def check_name(name: str, what: str = "key", allow_empty: bool = False) -> str:
    """Return ``name`` if it is 1-200 characters without spaces or control characters."""
    if len(name) > STATE_KEY_MAX_CHARS or (not name and not allow_empty):
        raise BadInput("%s must be 1 to %d characters, got %d" % (what, STATE_KEY_MAX_CHARS, len(name)))
    for pos, ch in enumerate(name, 1):
        problem = _bad_char(ch)
        if problem:
            raise BadInput("%s %s has %s at character %d; names are 1-%d characters without spaces or "
                           "control characters" % (what, _shown(name), problem, pos, STATE_KEY_MAX_CHARS))
    return name


def parse_value(text: str) -> str:
    """Validate a JSON value given as text; return it in compact form (what is stored).

    Taken as task payloads are (``config.parse_data``: JSON as every reader takes it, no NaN,
    Infinity, 1e999, key given twice or lone surrogate), and at most STATE_VALUE_MAX_BYTES both
    as given and as stored (compact), so a ``get`` always fits in a reply (redis.max_reply_bytes)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput("the value is not valid UTF-8") from None
    if size > STATE_VALUE_MAX_BYTES:
        raise BadInput("the value is %d bytes; the most is %d" % (size, STATE_VALUE_MAX_BYTES))
    if not text.strip():
        raise BadInput("the value is empty; give a JSON value such as 42, '\"text\"' or '{\"a\": 1}'")
    try:
        value = config.parse_data(text, "the value")
    except ValueError as exc:
        hint = " (text must be a quoted JSON string, e.g. '\"hello\"')" if str(exc).endswith(
            "(line 1, column 1)") else ""
        raise BadInput("%s%s" % (exc, hint)) from None
    # UTF-8 as given (no lone surrogate is left to escape): a value is never stored larger for its
    # non-ASCII text; a number may be (1e15 is stored as 1000000000000000.0), hence the second check
    stored = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    stored_bytes = len(stored.encode("utf-8"))
    if stored_bytes > STATE_VALUE_MAX_BYTES:
        raise BadInput("the value is %d bytes as stored (compact JSON: numbers as Python writes them); the most "
                       "is %d" % (stored_bytes, STATE_VALUE_MAX_BYTES))
    return stored


def lex_range(prefix: str) -> tuple:
    """ZRANGEBYLEX bounds of the names that start with ``prefix`` (UTF-8 never has byte 0xff)."""
    if not prefix:
        return b"-", b"+"
    raw = prefix.encode("utf-8")
    return b"[" + raw, b"[" + raw + b"\xff"


# -- operations ---------------------------------------------------------------

def _float(raw) -> float:
    return float(raw) if raw else 0.0


def get(client, name: str):
    """The entry {key, value, version, updated}, or None when it does not exist (one round trip)."""
    check_name(name)
    try:
        raw, version, updated = client.execute("HMGET", keys.kv(name), "value", "version", "updated")
    except WrongTypeError:
        raise WrongTypeError("WRONGTYPE %s is not a hash, so not a kv entry" % keys.kv(name)) from None
    if version is None:
        return None
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        raise TickError("entry %s does not hold JSON (written outside state_sync?)" % _shown(name)) from None
    return {"key": name, "value": value, "version": int(version), "updated": _float(updated)}


def put(client, name: str, value_text: str, op, expected=None) -> dict:
    """Write an entry (a JSON text, checked and stored compactly); with ``expected``
    (0: must not exist) only if the entry is at that version.

    Returns {key, ok, version, updated}: on a conflict ``ok`` is False and ``version``
    is the entry's current one (0: missing). ``op`` (run.context.Operation: token,
    record_ttl_ms) names this write: sent again with the same ``op``, it returns the
    first one's {ok: True, version, updated} and writes nothing.
    """
    check_name(name)
    value_json = parse_value(value_text)
    result = lua.run(client, "kv_set", (keys.kv(name), keys.kv_index(), keys.kv_version(), keys.kv_op(op.token)),
                     (name, value_json, "" if expected is None else int(expected), op.record_ttl_ms,
                      keys.kv_channel()))
    return {"key": name, "ok": result.ok, "version": result.version, "updated": result.updated_s or 0.0}


def delete(client, name: str, op, expected=None) -> dict:
    """Delete an entry (only at version ``expected``, if given).

    Returns {key, outcome: deleted|missing|conflict, version: the old or current version}.
    Sent again with the same ``op`` (as in ``put``) after it deleted, it returns that
    deletion, not 'missing' or a conflict.
    """
    check_name(name)
    result = lua.run(client, "kv_delete", (keys.kv(name), keys.kv_index(), keys.kv_op(op.token)),
                     (name, "" if expected is None else int(expected), keys.kv_channel(), op.record_ttl_ms))
    return {"key": name, "outcome": result.outcome, "version": result.version}


def list_entries(client, prefix: str = "", limit: int = STATE_LIST_LIMIT) -> tuple:
    """([{key, version, updated}...] in name order, truncated: bool), in one round trip."""
    low, high = lex_range(check_name(prefix, "prefix", allow_empty=True))
    entries = [{"key": entry.name, "version": entry.version, "updated": entry.updated_s or 0.0}
               for entry in lua.run(client, "kv_list", (keys.kv_index(),), (low, high, limit + 1, keys.kv("")))]
    return entries[:limit], len(entries) > limit


def _once(call, *args):
    return call(*args)


def watch(client, name: str, baseline: int, deadline_s=None, clock=time.monotonic, sleep=time.sleep, retried=_once):
    """Wait until the entry's version differs from ``baseline`` (0: missing) or the deadline.

    Polls with backoff (50 ms doubling to 1 s), so a change is seen within about a
    second. ``deadline_s`` is a ``clock()`` value, None for no deadline. Each poll runs
    as ``retried(get, client, name)`` (``Context.retried``: a fault is retried per poll,
    so its budget is for faults in a row, and a watch without a deadline outlives any
    number of Redis restarts). Returns (changed, entry or None): the entry as it is now
    (None: deleted or missing).
    """
    delay_s = WAIT_POLL_FIRST_S
    while True:
        entry = retried(get, client, name)
        if (entry["version"] if entry else 0) != baseline:
            return True, entry
        left_s = None if deadline_s is None else deadline_s - clock()
        if left_s is not None and left_s <= 0:
            return False, entry
        sleep(delay_s if left_s is None else min(delay_s, left_s))
        delay_s = min(delay_s * 2, WAIT_POLL_MAX_S)
