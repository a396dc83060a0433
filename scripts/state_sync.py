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
import sys
import time

from distnode.cluster import cluster_state
from distnode.core import defaults
from distnode.core import exits
from distnode.core import local_state
from distnode.core import settings
from distnode.run import cli, commands
from distnode.run.commands import Command
from distnode.cluster import shared_state
from distnode.core.errors import BadInput, InputError, UsageError
from distnode.core.local_state import read_json


FLAGS = [
    ("--value-file", "FILE", "set, cas: read the JSON value from FILE ('-': stdin)"),
    ("--version", "N", "cas, delete: the entry's expected version; watch: wait for another one"),
    ("--prefix", "P", "list: only names that start with P"),
    ("--limit", "N", "list: at most N names (default %d)" % defaults.STATE_LIST_LIMIT),
    ("--timeout", "S", "watch: give up after S seconds (default %g; 0: no limit)" % defaults.STATE_WATCH_TIMEOUT_S),
]

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


def cmd_show(ctx, _words) -> dict:
    path = cluster_state.mirror_path(ctx.cfg)
    doc = read_json(path, None)
    if not isinstance(doc, dict):
        return _outcome(ctx, exits.NOT_FOUND, "show: no mirror at %s yet (is `state_sync.py tick` scheduled "
                                             "on this node?)" % path, {"mirror_file": path, "found": False})
    if not ctx.flags.get("--json"):
        print(format_snapshot(doc, path))
    return doc


# -- the key-value store --------------------------------------------------------

def cmd_get(ctx, words) -> dict:
    name = words[0]
    entry = ctx.retried(shared_state.get, ctx.redis, name)
    if entry is None:
        return _outcome(ctx, exits.NOT_FOUND, "get: no key %r" % name, {"key": name, "found": False})
    if not ctx.flags.get("--json"):
        print(json.dumps(entry["value"]))
    return entry


def cmd_set(ctx, words) -> dict:
    name, text = _key_and_value(ctx, words, "set KEY VALUE")
    result = ctx.retried(shared_state.put, ctx.redis, name, text, ctx.operation())
    return _written(ctx, result)


def cmd_cas(ctx, words) -> dict:
    name, text = _key_and_value(ctx, words, "cas KEY --version N VALUE")
    expected = cli.number_flag(ctx, "--version", int)
    if expected is None:
        raise UsageError("cas needs --version N (the version you read; 0: the key must not exist)")
    result = ctx.retried(shared_state.put, ctx.redis, name, text, ctx.operation(), expected=expected)
    if not result["ok"]:
        return _outcome(ctx, exits.CONFLICT, "cas: %s; nothing written (read it again and retry)"
                        % _conflict(name, result["version"], expected), result)
    return _written(ctx, result)


def cmd_delete(ctx, words) -> dict:
    name = words[0]
    expected = cli.number_flag(ctx, "--version", int)
    result = ctx.retried(shared_state.delete, ctx.redis, name, ctx.operation(), expected=expected)
    if result["outcome"] == "conflict":
        message = "delete: %s; nothing deleted" % _conflict(name, result["version"], expected)
        return _outcome(ctx, exits.CONFLICT, message, result)
    if not ctx.flags.get("--json"):
        print("deleted %s (was version %d)" % (name, result["version"]) if result["outcome"] == "deleted"
              else "%s did not exist" % name)
    return result


def cmd_list(ctx, _words) -> dict:
    limit = cli.number_flag(ctx, "--limit", int, minimum=1, default=defaults.STATE_LIST_LIMIT)
    prefix = ctx.flags.get("--prefix", "")
    entries, truncated = ctx.retried(shared_state.list_entries, ctx.redis, prefix, limit)
    if truncated:
        sys.stderr.write("state_sync.py: list: only the first %d names; narrow with --prefix or raise --limit\n"
                         % limit)
    if not ctx.flags.get("--json"):
        for entry in entries:
            print(entry["key"])
    return {"prefix": prefix, "keys": entries, "truncated": truncated}


def cmd_watch(ctx, words) -> dict:
    name = shared_state.check_name(words[0])
    timeout_s = cli.number_flag(ctx, "--timeout", default=defaults.STATE_WATCH_TIMEOUT_S,
                                  maximum=settings.MAX_TASK_DURATION_S)
    deadline_s = time.monotonic() + timeout_s if timeout_s else None  # fixed once: a retry goes on, not over
    baseline = cli.number_flag(ctx, "--version", int)
    if baseline is None:
        entry = ctx.retried(shared_state.get, ctx.redis, name)
        baseline = entry["version"] if entry else 0
    # each poll retried on its own: a fault costs the retries of that poll, so a watch without a limit
    # outlives Redis restarting every few seconds (the retry budget is for faults in a row)
    changed, entry = shared_state.watch(ctx.redis, name, baseline, deadline_s, sleep=ctx.sleep, retried=ctx.retried)
    result = dict(entry or {"key": name, "version": 0}, changed=changed, previous_version=baseline)
    if not changed:
        return _outcome(ctx, exits.TIMED_OUT, "watch: %s did not change in time (version %d)" % (name, baseline), result)
    if entry is None:
        sys.stderr.write("state_sync.py: watch: %s was deleted\n" % name)
    elif not ctx.flags.get("--json"):
        print(json.dumps(entry["value"]))
    return result


# -- input and output helpers -----------------------------------------------------

def _arity(words: list, count: int, usage: str) -> list:
    if len(words) != count:
        raise UsageError("expected: %s (got %d argument%s after the command)" % (
            usage, len(words), "" if len(words) == 1 else "s"))
    return words


def _key_and_value(ctx, words: list, usage: str) -> tuple:
    """(name, value text) from ``KEY VALUE``, ``KEY -`` (stdin) or ``KEY --value-file F``; read before
    the Redis call, so a retry never reads stdin again."""
    source = ctx.flags.get("--value-file")
    _arity(words, 1 if source is not None else 2, usage + " (or KEY --value-file FILE)")
    name = shared_state.check_name(words[0])
    if source is None and words[1] != "-":
        return name, words[1]
    return name, _read_value(source or "-")


def _read_value(source: str) -> str:
    where = "stdin" if source == "-" else source
    cap = defaults.STATE_VALUE_MAX_BYTES
    try:  # bounded; a FIFO, a device or a closed stdin is refused, never waited on
        raw = local_state.read_input(source, cap, refuse_over=False)
    except InputError as exc:
        raise BadInput("the value: %s" % exc) from None
    if len(raw) > cap:
        raise BadInput("the value in %s is over %d bytes" % (where, cap))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("the value in %s is not UTF-8 (byte %d)" % (where, exc.start)) from None


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


COMMANDS = {
    "tick": Command(usage="tick", flags=(), words=0, job="state_sync"),
    "show": Command(cmd_show, "show", (), 0),
    "get": Command(cmd_get, "get KEY", (), 1),
    "set": Command(cmd_set, "set KEY VALUE", ("--value-file",)),
    "cas": Command(cmd_cas, "cas KEY --version N VALUE", ("--value-file", "--version")),
    "delete": Command(cmd_delete, "delete KEY [--version N]", ("--version",), 1),
    "list": Command(cmd_list, "list [--prefix P] [--limit N]", ("--prefix", "--limit"), 0),
    "watch": Command(cmd_watch, "watch KEY [--timeout S] [--version N]", ("--timeout", "--version"), 1),
}


def main(argv=None) -> int:
    return commands.main("state_sync", __doc__, COMMANDS, FLAGS, argv=argv, default="tick",
                         more_codes=(exits.NOT_FOUND, exits.CONFLICT, exits.TIMED_OUT))


if __name__ == "__main__":
    sys.exit(main())
