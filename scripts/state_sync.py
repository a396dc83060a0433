#!/usr/bin/env python3
"""Cluster state for agents: the leader's snapshot mirrored on every node, and a shared key-value store.

Commands:
  tick                 (the default; what cron runs) the leader publishes the cluster
                       snapshot (members and states, leader, epoch, version, updated),
                       fenced by its lease; every node mirrors it to a local JSON file
                       (cluster.mirror_file), atomically, and only when it changed
  show                 print this node's mirror (no Redis needed)
  get KEY              print an entry's JSON value
  set KEY VALUE        store a JSON value (VALUE '-': read stdin; or --value-file F)
  cas KEY --version N VALUE
                       set only if the entry is at version N (0: it must not exist)
  delete KEY [--version N]
                       delete the entry (with --version: only if it is at version N)
  list [--prefix P]    entry names, one a line (--json: with versions and times)
  watch KEY [--timeout S] [--version N]
                       wait until the entry's version differs from N (default: its
                       version now) or S seconds pass (default 60; 0: no limit)

A value that starts with '-' goes after '--':  state_sync.py set delta -- -1
More exit codes: 4 no such key (get; show: no mirror yet), 5 the entry is at another
version (cas, delete --version), 6 watch timed out.

A tick costs a follower one round trip and the leader three (gathering the
members takes two, the fenced publish one); the mirror is rewritten (temp
file, fsync, rename) only when the leader published a new version.
"""

import json
import os
import sys
import time

from distnode.cluster import cluster_state
from distnode.core import config
from distnode.core import local_state
from distnode.run import runner
from distnode.cluster import shared_state
from distnode.core.local_state import read_json

EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_TIMEOUT = 4, 5, 6
DEFAULT_WATCH_TIMEOUT_S = 60.0

FLAGS = [
    ("--value-file", "FILE", "set, cas: read the JSON value from FILE ('-': stdin)"),
    ("--version", "N", "cas, delete: the entry's expected version; watch: wait for another one"),
    ("--prefix", "P", "list: only names that start with P"),
    ("--limit", "N", "list: at most N names (default %d)" % shared_state.DEFAULT_LIST_LIMIT),
    ("--timeout", "S", "watch: give up after S seconds (default %g; 0: no limit)" % DEFAULT_WATCH_TIMEOUT_S),
]

COMMANDS = {  # command: (usage, the flags it takes)
    "tick": ("tick", ()),
    "show": ("show", ()),
    "get": ("get KEY", ()),
    "set": ("set KEY VALUE", ("--value-file",)),
    "cas": ("cas KEY --version N VALUE", ("--value-file", "--version")),
    "delete": ("delete KEY [--version N]", ("--version",)),
    "list": ("list [--prefix P] [--limit N]", ("--prefix", "--limit")),
    "watch": ("watch KEY [--timeout S] [--version N]", ("--timeout", "--version")),
}


def cmd_tick(ctx, words) -> dict:
    _arity(words, 0, "tick")
    return cluster_state.sync(ctx)


def format_snapshot(doc: dict, path: str) -> str:
    updated = doc.get("updated")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated)) if isinstance(updated, (int, float)) else "?"
    lines = ["leader: %s  epoch: %s  version: %s  updated: %s" % (
        doc.get("leader") or "none", doc.get("epoch"), doc.get("version"), when)]
    for node in doc.get("nodes") or []:
        if isinstance(node, dict):
            lines.append("  %-24s %-8s %s" % (node.get("id"), node.get("state"), node.get("host", "")))
    lines.append("(mirror: %s)" % path)
    return "\n".join(lines)


def cmd_show(ctx, words) -> dict:
    _arity(words, 0, "show")
    path = cluster_state.mirror_path(ctx.cfg)
    doc = read_json(path, None)
    if not isinstance(doc, dict):
        return _outcome(ctx, EXIT_NOT_FOUND, "show: no mirror at %s yet (is `state_sync.py tick` scheduled "
                                             "on this node?)" % path, {"mirror_file": path, "found": False})
    if not ctx.flags.get("--json"):
        print(format_snapshot(doc, path))
    return doc


# -- the key-value store --------------------------------------------------------

def cmd_get(ctx, words) -> dict:
    name = _arity(words, 1, "get KEY")[0]
    entry = shared_state.get(ctx.redis, name)
    if entry is None:
        return _outcome(ctx, EXIT_NOT_FOUND, "get: no key %r" % name, {"key": name, "found": False})
    if not ctx.flags.get("--json"):
        print(json.dumps(entry["value"]))
    return entry


def cmd_set(ctx, words) -> dict:
    name, text = _key_and_value(ctx, words, "set KEY VALUE")
    result = shared_state.put(ctx.redis, name, text, token=_token(ctx))
    return _written(ctx, result)


def cmd_cas(ctx, words) -> dict:
    name, text = _key_and_value(ctx, words, "cas KEY --version N VALUE")
    expected = runner.number_flag(ctx, "--version", int)
    if expected is None:
        raise runner.UsageError("cas needs --version N (the version you read; 0: the key must not exist)")
    result = shared_state.put(ctx.redis, name, text, expected=expected, token=_token(ctx))
    if not result["ok"]:
        return _outcome(ctx, EXIT_CONFLICT, "cas: %s; nothing written (read it again and retry)"
                        % _conflict(name, result["version"], expected), result)
    return _written(ctx, result)


def cmd_delete(ctx, words) -> dict:
    name = _arity(words, 1, "delete KEY [--version N]")[0]
    expected = runner.number_flag(ctx, "--version", int)
    result = shared_state.delete(ctx.redis, name, expected)
    if result["outcome"] == "conflict":
        message = "delete: %s; nothing deleted" % _conflict(name, result["version"], expected)
        return _outcome(ctx, EXIT_CONFLICT, message, result)
    if not ctx.flags.get("--json"):
        print("deleted %s (was version %d)" % (name, result["version"]) if result["outcome"] == "deleted"
              else "%s did not exist" % name)
    return result


def cmd_list(ctx, words) -> dict:
    _arity(words, 0, "list [--prefix P] [--limit N]")
    limit = runner.number_flag(ctx, "--limit", int, minimum=1, default=shared_state.DEFAULT_LIST_LIMIT)
    prefix = ctx.flags.get("--prefix", "")
    entries, truncated = shared_state.list_entries(ctx.redis, prefix, limit)
    if truncated:
        sys.stderr.write("state_sync.py: list: only the first %d names; narrow with --prefix or raise --limit\n"
                         % limit)
    if not ctx.flags.get("--json"):
        for entry in entries:
            print(entry["key"])
    return {"prefix": prefix, "keys": entries, "truncated": truncated}


def cmd_watch(ctx, words) -> dict:
    name = shared_state.check_name(_arity(words, 1, "watch KEY [--timeout S] [--version N]")[0])
    if not hasattr(ctx, "watch_from"):  # kept on ctx: a retry after a connection fault goes on, not over
        timeout_s = runner.number_flag(ctx, "--timeout", default=DEFAULT_WATCH_TIMEOUT_S,
                                       maximum=config.MAX_TASK_DURATION_S)
        baseline = runner.number_flag(ctx, "--version", int)
        if baseline is None:
            entry = shared_state.get(ctx.redis, name)
            baseline = entry["version"] if entry else 0
        ctx.watch_from = (baseline, time.monotonic() + timeout_s if timeout_s else None)
    baseline, deadline_s = ctx.watch_from
    changed, entry = shared_state.watch(ctx.redis, name, baseline, deadline_s, sleep=ctx.sleep)
    result = dict(entry or {"key": name, "version": 0}, changed=changed, previous_version=baseline)
    if not changed:
        return _outcome(ctx, EXIT_TIMEOUT, "watch: %s did not change in time (version %d)" % (name, baseline), result)
    if entry is None:
        sys.stderr.write("state_sync.py: watch: %s was deleted\n" % name)
    elif not ctx.flags.get("--json"):
        print(json.dumps(entry["value"]))
    return result


# -- input and output helpers -----------------------------------------------------

def _arity(words: list, count: int, usage: str) -> list:
    if len(words) != count:
        raise runner.UsageError("expected: %s (got %d argument%s after the command)" % (
            usage, len(words), "" if len(words) == 1 else "s"))
    return words


def _key_and_value(ctx, words: list, usage: str) -> tuple:
    """(name, value text) from ``KEY VALUE``, ``KEY -`` (stdin) or ``KEY --value-file F``."""
    source = ctx.flags.get("--value-file")
    _arity(words, 1 if source is not None else 2, usage + " (or KEY --value-file FILE)")
    name = shared_state.check_name(words[0])
    if not hasattr(ctx, "value_text"):  # read once: a retry must not read stdin again
        if source is None and words[1] != "-":
            ctx.value_text = words[1]
        else:
            ctx.value_text = _read_value(source or "-")
    return name, ctx.value_text


def _read_value(source: str) -> str:
    where = "stdin" if source == "-" else source
    cap = shared_state.MAX_VALUE_BYTES
    try:  # bounded; a FIFO, a device or a closed stdin is refused, never waited on
        raw = local_state.read_input(source, cap, refuse_over=False)
    except local_state.InputError as exc:
        raise shared_state.BadInput("the value: %s" % exc) from None
    if len(raw) > cap:
        raise shared_state.BadInput("the value in %s is over %d bytes" % (where, cap))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise shared_state.BadInput("the value in %s is not UTF-8 (byte %d)" % (where, exc.start)) from None


def _token(ctx) -> str:
    """One id per command run, the same across its retries (see shared_state.put)."""
    if not hasattr(ctx, "op_token"):
        ctx.op_token = os.urandom(8).hex()
    return ctx.op_token


def _conflict(name: str, current: int, expected: int) -> str:
    if current == 0:
        return "%s does not exist (expected version %d)" % (name, expected)
    if expected == 0:
        return "%s already exists at version %d (expected it not to exist)" % (name, current)
    return "%s is at version %d, not %d" % (name, current, expected)


def _written(ctx, result: dict) -> dict:
    if not ctx.flags.get("--json"):
        print("%s: version %d" % (result["key"], result["version"]))
    return result


def _outcome(ctx, code: int, message: str, result: dict) -> dict:
    """An answer that is not a failure of the tool (no such key, a conflict, a timeout)."""
    ctx.exit_code = code
    sys.stderr.write("state_sync.py: %s\n" % message)
    return result


def tick(ctx) -> dict:
    words = ctx.args or ["tick"]
    command = words[0]
    if command not in COMMANDS:
        raise runner.UsageError("unknown command %r; expected one of: %s" % (command, ", ".join(COMMANDS)))
    usage, accepted = COMMANDS[command]
    for flag, _metavar, _help in FLAGS:
        if flag in ctx.flags and flag not in accepted:
            raise runner.UsageError("%s does not apply to %s (usage: %s)" % (flag, command, usage))
    if ctx.loop and command != "tick":
        raise runner.UsageError("--loop works only with tick")
    try:
        return globals()["cmd_" + command](ctx, words[1:])
    except shared_state.BadInput as exc:
        raise runner.UsageError("%s: %s" % (command, exc)) from None


def main(argv=None) -> int:
    return runner.main("state_sync", tick, __doc__, extra_flags=FLAGS, argv=argv,
                       locked=lambda ctx: not ctx.args or ctx.args[0] == "tick",
                       usage="[%s] [ARGS] [options]" % "|".join(COMMANDS),
                       interval_s=lambda cfg: cfg["node"]["heartbeat_interval"])


if __name__ == "__main__":
    sys.exit(main())
