"""The project's Lua scripts, one file each (``<name>.lua``), and the loader that runs them.

Each script's header comment names every ``KEYS[i]`` and ``ARGV[i]`` and its reply;
``--- @include "piece"`` pulls in ``include/<piece>.lua`` (resolved recursively, each
piece once, in first-use order). The loader reads only the files a script needs, once
per process, and sends the text without its comment and blank lines (what Redis
compiles and hashes). The number of keys comes from the header (the comment lines
before the first line of code): ``KEYS[n]`` lines fix it; a ``KEYS[n..]`` line makes
the script variadic (at least n - 1 keys). Comments are dropped line by line, so a
file with a long bracket (``[[``, ``[=[``: a block comment or a long string) is
refused, as is a comment line that looks like an include but is not exactly one (a
typo must not drop a piece silently): ``LuaSourceError``, naming the file and line.

- ``script(name)``: the ``Script`` (distnode.redis.script) for a batch sent with
  ``request_with_scripts``: EVAL the first time on a client, EVALSHA after.
- ``run(client, name, keys, args)``: one round trip, the reply decoded into the
  script's named result (lua/results.py). Error replies raise the client's
  classes (FencedError, StaleError, CollisionError, ...).
- ``decode(name, reply)``: the same decoding for a reply taken out of a batch.

Scripts that read Redis's clock call ``redis.replicate_commands()`` first (Redis 5
needs it before a write that follows TIME); includes only define, so that call
stays the first command a script runs.
"""

import os

from distnode.lua import results
from distnode.core.errors import BrokenInstall
from distnode.redis.script import Script

LUA_DIR = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIR = os.path.join(LUA_DIR, "include")

# Lines are parsed with str methods, not `re`: compiling two patterns cost every tick ~0.4 ms.
_INCLUDE_PREFIX = '--- @include "'
_INCLUDE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_KEYS_PREFIX = "-- KEYS["
_DIGITS = frozenset("0123456789")

_loaded = {}  # name -> (Script, number of keys, variadic), filled on first use


class LuaSourceError(BrokenInstall):
    """A Lua file the loader cannot strip safely: a malformed include line, or a long bracket."""


class UnknownInclude(LuaSourceError):
    """An ``@include`` (or a script name) names no file in lua/."""


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _include_name(line: str, where: str = "<text>", number: int = 0):
    """The piece an ``--- @include "piece"`` line names (``[a-z0-9_]+``, trailing blanks allowed); None
    for a line that is no include. A comment whose text starts with ``@include`` in any other form
    raises LuaSourceError (``where``:``number`` names the line)."""
    if line.startswith(_INCLUDE_PREFIX):
        rest = line[len(_INCLUDE_PREFIX):].rstrip()
        name = rest[:-1]
        if rest.endswith('"') and name and _INCLUDE_NAME_CHARS.issuperset(name):
            return name
    else:
        text = line.lstrip()
        if not text.startswith("--") or not text.lstrip("-").lstrip().startswith("@include"):
            return None
    raise LuaSourceError('%s:%d: malformed include line %r: write --- @include "piece" (piece: a-z, 0-9, _)'
                         % (where, number, line.strip()))


def _keys_range(line: str):
    """(first, last) of a ``-- KEYS[first]``, ``KEYS[first..last]`` or ``KEYS[first..]`` header line: last is
    None for the first form, "" for the open one; None for any other line."""
    if not line.startswith(_KEYS_PREFIX):
        return None
    first, sep, rest = line[len(_KEYS_PREFIX):].partition("]")
    first, dots, last = first.partition("..")
    if not sep or not first or not _DIGITS.issuperset(first) or not _DIGITS.issuperset(last):
        return None
    return int(first), (last if dots else None)


def _refuse_long_brackets(text: str, where: str) -> None:
    """Comments are dropped line by line: a block comment's or a long string's lines would be misread."""
    for mark in ("[[", "[="):
        at = text.find(mark)
        if at >= 0:
            raise LuaSourceError("%s:%d: a long bracket (%s: a block comment or a long string), which the loader "
                                 "cannot strip line by line: use -- line comments and quoted strings"
                                 % (where, text.count("\n", 0, at) + 1, mark))


def _resolve(text: str, seen: set, out: list, where: str = "<text>") -> None:
    """Append ``text`` (the file ``where``)'s code lines to ``out``, each include in place at its first use."""
    _refuse_long_brackets(text, where)
    for number, line in enumerate(text.splitlines(), 1):
        # only a line holding "@include" can be an include (or a malformed one): testing that first
        # spares a tick a call per line (0.1-0.3 M instructions a script)
        piece = _include_name(line, where, number) if "@include" in line else None
        if piece is not None:
            if piece not in seen:
                seen.add(piece)  # before recursing: an include cycle ends here
                try:
                    body = include_text(piece, raw=True)
                except UnknownInclude as exc:
                    raise UnknownInclude("%s:%d: %s" % (where, number, exc)) from None
                _resolve(body, seen, out, os.path.join(INCLUDE_DIR, piece + ".lua"))
            continue
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            out.append(line)


def include_text(piece: str, raw: bool = False) -> str:
    """The text of include ``piece``: as written (``raw``) or resolved, comments dropped."""
    path = os.path.join(INCLUDE_DIR, piece + ".lua")
    if not os.path.isfile(path):
        raise UnknownInclude("unknown Lua include %r (no %s)" % (piece, path))
    text = _read(path)
    if raw:
        return text
    out = []
    _resolve(text, {piece}, out, path)
    return "\n".join(out) + "\n"


def key_count(header_text: str) -> tuple:
    """(number of keys, variadic) from a script's ``-- KEYS[...]`` header lines.

    ``KEYS[3]`` and ``KEYS[1..7]`` fix the count at their highest index;
    ``KEYS[9..]`` makes the script take 8 or more. Only the header counts: the
    comment lines before the first other line (a body comment naming a key does not).
    """
    count, variadic = 0, False
    for line in header_text.splitlines():
        if not line.startswith("--"):
            break
        found = _keys_range(line)
        if found is None:
            continue
        first, last = found
        if last == "":
            variadic, count = True, max(count, first - 1)
        else:
            count = max(count, int(last) if last else first)
    return count, variadic


def source(name: str) -> str:
    """The text sent to Redis for script ``name``: includes resolved, comments dropped."""
    path = os.path.join(LUA_DIR, name + ".lua")
    return _code(_read(path), path)


def _code(text: str, where: str) -> str:
    out = []
    _resolve(text, set(), out, where)
    return "\n".join(out) + "\n"


def _load(name: str) -> tuple:
    entry = _loaded.get(name)
    if entry is None:
        path = os.path.join(LUA_DIR, name + ".lua")
        if not os.path.isfile(path):
            raise LookupError("unknown Lua script %r (no %s)" % (name, path))
        text = _read(path)  # once: the header and the code come from the same text
        numkeys, variadic = key_count(text)
        entry = _loaded[name] = (Script(name, _code(text, path), None if variadic else numkeys), numkeys, variadic)
    return entry


def script(name: str) -> Script:
    """The script ``name`` (loaded and cached on first use), for request_with_scripts."""
    return _load(name)[0]


def run(client, name: str, keys, args=()):
    """Run script ``name`` in one round trip and return its decoded result.

    Raises ValueError before sending anything if ``keys`` is not the number
    the header names (for a variadic script: fewer than it names).
    """
    loaded, numkeys, variadic = _load(name)
    if variadic and len(keys) < numkeys:
        raise ValueError("Lua script %s takes at least %d keys, got %d" % (name, numkeys, len(keys)))
    return decode(name, loaded(client, keys, args))


def decode(name: str, reply):
    """Script ``name``'s raw reply (from a batch) as its named result (KeyError: no decoder)."""
    if name.startswith("task_"):
        # deferred: a tick that runs no task script skips building the task results (~0.5 ms)
        from distnode.lua import task_results
        return task_results.DECODERS[name](reply)
    return results.DECODERS[name](reply)
