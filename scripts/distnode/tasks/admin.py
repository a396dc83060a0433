"""Looking at tasks and tending them: status, list, stats, retry, purge (task_queue.py's commands).

Every read here is bounded (a record's payload only up to this node's
tasks.max_payload_bytes; lists and purges in batches) and none changes a
task's state but ``retry`` (a dead task back to pending, attempts reset) and
``purge`` (done or dead tasks deleted).
"""

from distnode import lua
from distnode.core import defaults
from distnode.core import keys
from distnode.tasks import agent_task
from distnode.tasks.common import GROUP, STATES, end_latch, ms, raise_errors, run_script

INT_FIELDS = ("attempts", "runs", "max_attempts", "output_bytes", "payload_bytes")
TIME_FIELDS = ("created_ms", "updated_ms", "started_ms", "finished_ms", "due_ms", "deadline_ms")


def status(ctx, task_id: str):
    """The task's record as a dict (times in seconds since the epoch, Redis's clock), or None.

    ``payload_bytes`` is the payload's size; ``payload`` itself is left out when it is larger
    than this node's tasks.max_payload_bytes (a record written elsewhere or by hand), so the
    reply stays bounded. One round trip.
    """
    raw = lua.run(ctx.redis, "task_record", (keys.task(task_id),), (ctx.cfg["tasks"]["max_payload_bytes"],))
    return describe(raw) if raw else None


def describe(raw: dict) -> dict:
    """A task hash's raw fields as a record: numbers as int, ``*_ms`` times as ``*_at`` seconds, text as str."""
    out = {}
    for name, value in raw.items():
        if name in INT_FIELDS:
            out[name] = int(value)
        elif name in TIME_FIELDS:
            out[name[:-3] + "_at"] = int(value) / 1000.0 if value else None
        elif name == "timeout_ms":
            out["timeout_s"] = int(value) / 1000.0
        elif name == "result_truncated":
            out[name] = value == b"1"
        else:
            out[name] = value.decode("utf-8", "replace")
    return out


def list_tasks(ctx, state: str = "", limit: int = 100) -> list:
    """The most recently changed tasks (of one state, or all), newest first, in two round trips."""
    states = [state] if state else list(STATES)
    replies = raise_errors(ctx.redis.request([("ZREVRANGE", keys.task_index(s), 0, limit - 1) for s in states]))
    ids = [tid.decode() for reply in replies for tid in reply]
    fields = ("state", "type", "attempts", "max_attempts", "worker", "target", "updated_ms")
    rows = raise_errors(ctx.redis.request([("HMGET", keys.task(tid)) + fields for tid in ids])) if ids else []
    out = []
    for tid, row in zip(ids, rows):
        if row[0] is None:
            continue  # its record expired
        rec = describe({k: v for k, v in zip(fields, row) if v is not None})
        rec["id"] = tid
        out.append(rec)
    out.sort(key=lambda r: (r.get("updated_at") or 0, r["id"]), reverse=True)
    return out[:limit]


def stats(ctx) -> dict:
    """Queue depth, running, done, dead, oldest pending age, entries in flight per node; two round trips."""
    replies = raise_errors(ctx.redis.request([
        ("TIME",), ("SMEMBERS", keys.task_streams()), ("ZCARD", keys.task_index("pending")),
        ("ZCARD", keys.task_delayed()), ("ZCARD", keys.task_index("running")), ("ZCARD", keys.task_index("done")),
        ("ZCARD", keys.task_index("dead")), ("ZRANGE", keys.task_index("pending"), 0, 0, "WITHSCORES"),
        ("XLEN", keys.task_dead())]))
    now, streams, depth, delayed, running, done, dead, oldest, dead_letters = replies
    now_s = int(now[0]) + int(now[1]) / 1e6
    in_flight, streams_out = _streams(ctx, sorted(s.decode() for s in streams))
    return {"depth": depth, "delayed": delayed, "running": running, "done": done, "dead": dead,
            "dead_letters": dead_letters, "oldest_pending_age_s": round(now_s - float(oldest[1]) / 1000, 3)
            if oldest else None, "in_flight_by_node": in_flight, "streams": streams_out}


def _streams(ctx, names: list) -> tuple:
    """({node: entries in flight}, {stream: {"length", "in_flight"}}) in one round trip."""
    per_stream = ctx.redis.request([cmd for s in names for cmd in (("XLEN", s), ("XPENDING", s, GROUP))])
    in_flight, streams_out = {}, {}
    for i, name in enumerate(names):
        length, summary = per_stream[2 * i], per_stream[2 * i + 1]
        pel = summary[0] if isinstance(summary, list) else 0
        streams_out[name] = {"length": length if isinstance(length, int) else 0, "in_flight": pel}
        for consumer, count in (summary[3] or []) if isinstance(summary, list) else []:
            node = consumer.decode()
            in_flight[node] = in_flight.get(node, 0) + int(count)
    return in_flight, streams_out


def reply(rec: dict) -> str:
    """What a done task answered: an ``agent`` task's reply text, any other task's result."""
    if rec.get("type") == agent_task.TASK_TYPE:
        text = agent_task.reply_of(rec.get("result", ""))
        if text is not None:
            return text
    return rec.get("result", "")


def retry(ctx, task_id: str, op) -> str:
    """Put a dead task back in the queue with fresh attempts: 'ok', 'missing' or its state.

    ``op`` (run.context.Operation) names this retry: sent again with the same ``op`` after
    it put the task back (its reply lost), it answers 'ok' again, not the task's new state.
    """
    result = run_script(ctx, "task_retry", (keys.task_op(op.token),), (task_id, op.record_ttl_ms) + end_latch())
    if result.outcome == "ok":
        ctx.log.info("task %s is back in the queue", task_id)
        return "ok"
    return result.state if result.outcome == "not_dead" else result.outcome


def purge(ctx, state: str, older_than_s: float) -> int:
    """Delete ``state`` (done or dead) tasks that ended at least ``older_than_s`` ago; return the count."""
    removed = 0
    while True:
        result = run_script(ctx, "task_purge", (),
                            (state, ms(older_than_s), defaults.TASK_PURGE_BATCH_TASKS) + end_latch())
        removed += result.deleted
        if result.examined < defaults.TASK_PURGE_BATCH_TASKS:
            break
    ctx.log.info("purged %d %s task(s) older than %gs", removed, state, older_than_s)
    return removed
