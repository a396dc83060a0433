#!/usr/bin/env python3
"""Distribute tasks over the cluster: submit them, work on them, look at them.

Commands:
  submit --type T [--payload JSON | --payload-file F | -] [--node ID] [--key K]
         [--require LABEL ...] [--strict] [--max-attempts N] [--timeout S]
         [--wait [--wait-timeout S]]
                       queue a task (payload: JSON, `-` reads stdin; default {});
                       prints its id. --node: only that node runs it. --key: an
                       idempotency key; the same key never queues twice.
                       --require: only a node with every such label (node.labels
                       or a capability) runs it; if no live node has them now
                       it waits for one (a warning; an error with --strict, and
                       nothing is queued). --wait: block until the task is done
                       (print its result, exit 0) or dead (print the error,
                       exit 1); exit 6 when --wait-timeout passes first (the
                       task stays queued: look later with `status ID`)
  work                 one worker tick: run up to tasks.max_per_tick tasks or for
                       tasks.tick_budget_s seconds; --loop works continuously
  status ID            one task: state, attempts, node, result or error, times
  list                 recent tasks, newest first (--state S, --limit N)
  stats                queue depth, running, done, dead, oldest pending age,
                       entries in flight per node
  retry ID             put a dead-lettered task back in the queue
  purge                delete done tasks older than --done-older-than S (and/or
                       dead ones older than --dead-older-than S)

Each task type runs the argv configured in tasks.handlers, without a shell,
the payload on stdin, TASK_ID, TASK_TYPE, TASK_ATTEMPT, TASK_MAX_ATTEMPTS and
NODE_ID in its environment. Exit 0 stores stdout as the result; anything else
(or the timeout) is retried with backoff, then dead-lettered. Delivery is
at least once: make handlers idempotent. See scripts/distnode/tasks/ for the states.

The built-in type `agent` runs one OpenClaw agent turn on a node that has the
CLI (capability `agent`): payload {"message": "...", "agent": "<id>",
"timeout_s": N} (agent and timeout_s optional); --wait prints the agent's
reply. See scripts/distnode/tasks/agent_task.py.
"""

import sys
import time

from distnode.core import exits
from distnode.core import local_state
from distnode.core import settings
from distnode.core.errors import Terminated, TickError, UsageError
from distnode.run import cli, commands
from distnode.run.commands import Command
from distnode.tasks import admin
from distnode.tasks import agent_task
from distnode.tasks import common
from distnode.tasks import routes
from distnode.tasks import submit

FLAGS = [
    ("--type", "T", "submit: the task type (a key of tasks.handlers, or the built-in agent)"),
    ("--payload", "JSON", "submit: the payload, a JSON text"),
    ("--payload-file", "F", "submit: read the JSON payload from file F"),
    ("--node", "ID", "submit: only node ID may run the task"),
    ("--key", "K", "submit: idempotency key; a key already used returns the first task's id"),
    ("--max-attempts", "N", "submit: attempts before dead-lettering (default tasks.default_max_attempts)"),
    ("--timeout", "S", "submit: seconds the handler may run (default tasks.default_timeout_s; agent tasks "
                       "with timeout_s: that plus 60)"),
    ("--require", "LABEL", "submit: only nodes with this label (or capability) run the task; repeatable"),
    ("--strict", None, "submit: refuse (exit 1, nothing queued) when no live node can run the task now"),
    ("--wait", None, "submit: wait for the outcome: result on stdout (exit 0), or the error (exit 1)"),
    ("--wait-timeout", "S", "submit --wait: give up waiting after S seconds (exit 6; the task stays queued)"),
    ("--state", "S", "list: only tasks in state S (pending, running, done, dead)"),
    ("--limit", "N", "list: at most N tasks (default 50)"),
    ("--done-older-than", "S", "purge: done tasks that finished at least S seconds ago"),
    ("--dead-older-than", "S", "purge: dead tasks that died at least S seconds ago"),
]


MAX_TIMEOUT_S = settings.MAX_TASK_DURATION_S  # --timeout, --wait-timeout: a week at most, like tasks.default_timeout_s


def _one_id(ctx) -> str:
    if len(ctx.args) != 2:
        raise UsageError("%s needs one task id" % ctx.args[0])
    return _name(ctx.args[1], "the task id")  # ids are <ms>-<hex>: a 100 KB or two-line one is a typo


def _name(value: str, what: str) -> str:
    """common.check_name as a usage error, its echo of the value cut short (a 100 KB --type is one short line)."""
    if not value or len(value) > common.MAX_NAME_LEN or any(ch not in common.NAME_CHARS for ch in value):
        raise UsageError("%s must be 1 to %d characters of letters, digits, '.', '_' and '-', got %s"
                         % (what, common.MAX_NAME_LEN, cli.shown(value)))
    return value


def _payload(ctx) -> str:
    sources = [f for f in ("--payload", "--payload-file") if f in ctx.flags] + (["-"] if "-" in ctx.args[1:] else [])
    if len(sources) > 1:
        raise UsageError("give the payload once: --payload, --payload-file or - (stdin), not %s"
                         % " and ".join(sources))
    extra = [a for a in ctx.args[1:] if a != "-"]
    if extra:
        raise UsageError("submit takes no words but -, got %s" % " ".join(extra))
    if not sources:
        return "{}"
    limit = ctx.cfg["tasks"]["max_payload_bytes"]  # refused before it is read whole or parsed
    try:
        if sources[0] == "--payload":
            text, where = ctx.flags["--payload"], "--payload"
            submit.check_payload_size(ctx, len(text.encode("utf-8", "surrogatepass")), where)
        else:
            if sources[0] == "-":
                source, where = "-", "the payload on stdin"
            else:
                source, where = ctx.flags["--payload-file"], "--payload-file " + ctx.flags["--payload-file"]
            try:  # a FIFO, a device or a closed stdin is refused, never waited on or read without end
                data = local_state.read_input(source, limit, where, refuse_over=False)
            except local_state.InputError as exc:  # "cannot read --payload-file F: why", as it always said
                raise UsageError(str(exc).replace(where + ": cannot read: ", "cannot read %s: " % where)) \
                    from None
            submit.check_payload_size(ctx, len(data), where, exact=len(data) <= limit)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError("%s is not UTF-8 (byte %d)" % (where, exc.start)) from None
        return submit.parse_payload(text, where)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except RecursionError:
        raise UsageError("%s is not valid JSON: arrays or objects nested too deep" % where) from None


def cmd_submit(ctx, _words) -> dict:
    req = _submit_request(ctx)  # flags, payload and stdin read once, before any Redis call
    if req["needs"]:
        ctx.retried(_check_able, ctx, req["needs"], req["target"])
    task_id = submit.new_task_id()  # drawn once: a retried submit finds its task, never adds a second
    result = ctx.retried(submit.submit, ctx, req["type"], req["payload"], target=req["target"], key=req["key"],
                         max_attempts=req["max_attempts"] or 0, timeout_s=req["timeout_s"] or 0,
                         task_id=task_id, requires=req["needs"].split(",") if req["needs"] else ())
    if req["target"] and not result["target_known"]:
        ctx.log.warning("node %s is not a member (yet): the task waits until it runs a worker", req["target"])
    if ctx.flags.get("--wait"):
        return _wait(ctx, result["id"], req["wait_timeout_s"])
    if not ctx.flags.get("--json"):
        print(result["id"])
    return result


def _submit_request(ctx) -> dict:
    """submit's flags, checked (UsageError for the first bad one); ``needs`` as routes.requirement gives it."""
    task_type = ctx.flags.get("--type")
    if task_type is None:
        raise UsageError("submit needs --type T")
    target, key = ctx.flags.get("--node", ""), ctx.flags.get("--key", "")
    try:
        _name(task_type, "--type")
        if target:
            _name(target, "--node")
        labels = [_name(label, "--require") for label in ctx.flags.get("--require*", [])]
        needs = routes.requirement(task_type, labels)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if "--key" in ctx.flags and not 0 < len(key) <= submit.MAX_KEY_LEN:
        raise UsageError("--key must be 1 to %d characters" % submit.MAX_KEY_LEN)
    req = {"type": task_type, "target": target, "key": key, "needs": needs,
           "max_attempts": cli.number_flag(ctx, "--max-attempts", int, above=True),
           "timeout_s": cli.number_flag(ctx, "--timeout", above=True, maximum=MAX_TIMEOUT_S),
           "wait_timeout_s": cli.number_flag(ctx, "--wait-timeout", maximum=MAX_TIMEOUT_S),
           "payload": _payload(ctx)}
    if req["wait_timeout_s"] is not None and not ctx.flags.get("--wait"):
        raise UsageError("--wait-timeout goes with --wait")
    if task_type == agent_task.TASK_TYPE:
        req["timeout_s"] = _check_agent_payload(ctx, req["payload"], req["timeout_s"])
    elif task_type not in ctx.cfg["tasks"]["handlers"]:
        ctx.log.warning("task type %r has no handler on this node; only nodes that have one should work it",
                        task_type)
    return req


def _check_agent_payload(ctx, payload: str, timeout_s):
    """Refuse a bad agent payload now (usage error); return the task timeout to use."""
    try:
        request = agent_task.parse_request(payload)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if timeout_s is None:
        return agent_task.task_timeout_s(request)
    if request["timeout_s"] and timeout_s <= request["timeout_s"]:
        ctx.log.warning("--timeout %g is not above the payload's timeout_s %d: the worker will stop the agent "
                        "turn before the CLI's own deadline", timeout_s, request["timeout_s"])
    return timeout_s


def _check_able(ctx, needs: str, target: str) -> None:
    """Warn (or with --strict refuse) when no live node can run a task that needs ``needs`` now."""
    able, live = submit.able_nodes(ctx, needs, target)
    if able:
        return
    who = "node %s is not live or lacks" % target if target else (
        "no live node has" if live else "no node is live with")
    text = "%s %s %s" % (who, "label" if "," not in needs else "labels", needs.replace(",", ", "))
    if ctx.flags.get("--strict"):
        raise TickError("%s: not submitted (--strict)" % text)
    ctx.log.warning("%s: the task stays queued until such a node runs a worker", text)


def _wait(ctx, task_id: str, timeout_s) -> dict:
    """--wait: the outcome as the caller of a function would want it; see the module's help."""
    deadline_s = None if timeout_s is None else time.monotonic() + timeout_s  # fixed once, kept by retries
    try:
        rec = ctx.retried(submit.wait, ctx, task_id, deadline_s, sleep=ctx.sleep)
    except Terminated:  # the task is queued already: say which, so nobody submits it again
        raise Terminated("stopped by SIGTERM while waiting; task %s stays queued: check it with `task_queue.py "
                         "status %s`" % (task_id, task_id)) from None
    if rec is None:
        raise TickError("task %s vanished while waiting (purged?)" % task_id)
    rec.setdefault("id", task_id)
    if rec["state"] == "done":
        rec["reply"] = admin.reply(rec)
        if not ctx.flags.get("--json"):
            text = rec["reply"]
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        if rec.get("result_truncated"):
            ctx.log.warning("task %s: the result was cut at tasks.result_max_bytes", task_id)
        return rec
    if rec["state"] == "dead":
        ctx.exit_code = exits.FAILED  # the task ended dead
        line = "error: task %s is dead after %d attempt(s): %s" % (task_id, rec.get("attempts", 0),
                                                                   rec.get("error", "?"))
    else:
        ctx.exit_code = exits.TIMED_OUT  # still pending or running: it stays queued
        line = "task %s is still %s after --wait-timeout %gs; it stays queued: check it with `task_queue.py " \
               "status %s`" % (task_id, rec["state"], timeout_s, task_id)
    ctx.log.log("WARNING", line, console=False)
    sys.stderr.write("task_queue.py: %s\n" % line)  # the outcome the caller waited for: shown even with --quiet
    return rec


def cmd_status(ctx, _words) -> dict:
    task_id = _one_id(ctx)
    rec = ctx.retried(admin.status, ctx, task_id)
    if rec is None:
        raise TickError("no task %s (never submitted, or purged after tasks.done_ttl_s)" % task_id)
    if not ctx.flags.get("--json"):
        print(format_status(rec))
    return rec


def format_status(rec: dict) -> str:
    """The record as aligned ``name: value`` lines, the result (or the last error) last."""
    node = rec.get("worker") or "-"
    if rec.get("target"):
        node += "  (target: %s)" % rec["target"]
    rows = [("id", rec.get("id", "?")), ("type", rec.get("type", "?")), ("state", rec.get("state", "?")),
            ("attempts", "%d of %d (runs: %d)" % (rec.get("attempts", 0), rec.get("max_attempts", 0),
                                                  rec.get("runs", 0))),
            ("node", node)]
    if rec.get("requires"):
        rows.append(("requires", rec["requires"].replace(",", ", ")))
    rows += [(name[:-3], _when(rec[name])) for name in ("created_at", "started_at", "finished_at", "due_at")
             if rec.get(name)]
    if rec.get("error"):
        rows.append(("error" if rec.get("state") != "done" else "last error", rec["error"]))
    lines = ["%-10s %s" % (name + ":", value) for name, value in rows]
    if rec.get("state") == "done":
        cut = " (truncated to tasks.result_max_bytes)" if rec.get("result_truncated") else ""
        lines.append("result%s:\n%s" % (cut, rec.get("result", "")))
    return "\n".join(lines)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % (seconds % 1 * 1000)


def format_table(tasks: list) -> str:
    rows = [("ID", "STATE", "TYPE", "ATTEMPTS", "NODE", "UPDATED")]
    for t in tasks:
        rows.append((t["id"], t.get("state", "?"), t.get("type", "?"),
                     "%d/%d" % (t.get("attempts", 0), t.get("max_attempts", 0)),
                     t.get("worker") or t.get("target") or "-",
                     _when(t["updated_at"]) if t.get("updated_at") else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_list(ctx, _words) -> dict:
    if len(ctx.args) != 1:
        raise UsageError("list takes no arguments (use --state S)")
    state = ctx.flags.get("--state", "")
    if state and state not in common.STATES:
        raise UsageError("--state must be one of %s, got %r" % (", ".join(common.STATES), state))
    limit = cli.number_flag(ctx, "--limit", int, above=True, default=50)
    tasks = ctx.retried(admin.list_tasks, ctx, state, limit)
    if not ctx.flags.get("--json"):
        print(format_table(tasks))
    return {"tasks": tasks}


def cmd_stats(ctx, _words) -> dict:
    if len(ctx.args) != 1:
        raise UsageError("stats takes no arguments")
    st = ctx.retried(admin.stats, ctx)
    if not ctx.flags.get("--json"):
        age = "%.1fs" % st["oldest_pending_age_s"] if st["oldest_pending_age_s"] is not None else "-"
        print("pending: %d (%d waiting for a retry)  running: %d  done: %d  dead: %d  oldest pending: %s"
              % (st["depth"], st["delayed"], st["running"], st["done"], st["dead"], age))
        for node, count in sorted(st["in_flight_by_node"].items()):
            print("in flight on %s: %d" % (node, count))
    return st


def cmd_retry(ctx, _words) -> dict:
    task_id = _one_id(ctx)
    outcome = ctx.retried(admin.retry, ctx, task_id, ctx.operation())
    if outcome == "missing":
        raise TickError("no task %s (never submitted, or purged after tasks.done_ttl_s)" % task_id)
    if outcome != "ok":
        raise TickError("task %s is %s, not dead: only dead tasks can be retried" % (task_id, outcome))
    if not ctx.flags.get("--json"):
        print("task %s is back in the queue" % task_id)
    return {"id": task_id, "retried": True}


def cmd_purge(ctx, _words) -> dict:
    if len(ctx.args) != 1:
        raise UsageError("purge takes no arguments")
    done_s = cli.number_flag(ctx, "--done-older-than")
    dead_s = cli.number_flag(ctx, "--dead-older-than")
    if done_s is None and dead_s is None:
        raise UsageError("purge needs --done-older-than S and/or --dead-older-than S")
    result = {"done": ctx.retried(admin.purge, ctx, "done", done_s) if done_s is not None else 0,
              "dead": ctx.retried(admin.purge, ctx, "dead", dead_s) if dead_s is not None else 0}
    if not ctx.flags.get("--json"):
        print("purged %d done and %d dead task(s)" % (result["done"], result["dead"]))
    return result


SUBMIT_FLAGS = ("--type", "--payload", "--payload-file", "--node", "--key", "--max-attempts", "--timeout", "--require",
                "--strict", "--wait", "--wait-timeout")

COMMANDS = {  # each takes only the flags listed; a command's function checks its own words
    "submit": Command(cmd_submit, "submit --type T ...", SUBMIT_FLAGS),
    "work": Command(usage="work", words=0, job="task_queue"),
    "status": Command(cmd_status, "status ID"),
    "list": Command(cmd_list, "list [--state S] [--limit N]", ("--state", "--limit")),
    "stats": Command(cmd_stats, "stats"),
    "retry": Command(cmd_retry, "retry ID"),
    "purge": Command(cmd_purge, "purge --done-older-than S | --dead-older-than S",
                     ("--done-older-than", "--dead-older-than")),
}


def main(argv=None) -> int:
    return commands.main("task_queue", __doc__, COMMANDS, FLAGS, argv=argv,
                         usage="{%s} [ID] [options]" % ",".join(COMMANDS), more_codes=(exits.TIMED_OUT,))


if __name__ == "__main__":
    sys.exit(main())
