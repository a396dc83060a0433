"""The worker: claim a task, run its handler, store the outcome; hand tasks back when leaving.

A worker tick claims and runs tasks one at a time (the state machine is in
tasks/__init__.py). An idle tick costs one round trip: due retries promoted,
one new entry read per stream and a claim, all in one request.

Guarantees: an attempt is stored only under its own token (a reclaimed or
handed-back attempt's late outcome changes nothing: "stale"); an attempt
whose worker stopped it is handed back, not counted as failed; a request
whose reply was lost on the wire is sent again and finds its own result (a
claim its attempt, a finish its stored outcome). A living worker (``WorkerJob``)
blocks between ticks and ticks the moment a task lands; a one-shot tick costs
what it did.
"""

import os
import time

from distnode import lua
from distnode.core import defaults
from distnode.core import keys
from distnode.procs import spawn
from distnode.redis.errors import CollisionError, RedisConnectionError, ResponseError
from distnode.redis.script import request_with_scripts
from distnode.tasks import agent_task
from distnode.tasks import handler
from distnode.tasks import routes
from distnode.tasks.common import GROUP, collision, end_latch, header, instance, ms, outcome_text, run_script

OUTCOMES = ("done", "retry", "dead", "stale", "requeued")


class Task:
    """One claimed attempt, as the worker runs it (from task_claim's ClaimedTask)."""

    __slots__ = ("id", "type", "payload", "attempt", "max_attempts", "timeout_s", "token", "stream", "entry",
                 "claimed_at")

    def __init__(self, claimed, claimed_at: float = None):
        self.id, self.type, self.payload, self.token = claimed.task_id, claimed.type, claimed.payload, claimed.token
        self.attempt, self.max_attempts = claimed.attempt, claimed.max_attempts
        self.stream, self.entry, self.timeout_s = claimed.stream, claimed.entry, claimed.timeout_ms / 1000.0
        self.claimed_at = time.monotonic() if claimed_at is None else claimed_at  # when the claim was SENT


def work_tick(ctx) -> dict:
    """One worker tick: claim and run tasks one at a time, then return.

    Stops after ``tasks.max_per_tick`` tasks (not in loop mode, where the
    next tick follows at once: ``WorkerJob.wait``), when ``tasks.tick_budget_s``
    has passed (a running task is finished first), when the queue is empty,
    or on SIGTERM. An empty queue costs one round trip (two in the tick
    that learns of a new route this node qualifies for).
    """
    cfg = ctx.cfg["tasks"]
    started = time.monotonic()
    handler.kill_leftover_handler(ctx)  # a file read, no round trip: nothing from a killed worker runs beside a claim
    streams = routes.worker_streams(ctx)
    limit = None if ctx.loop else cfg["max_per_tick"]
    counts = dict.fromkeys(("ran",) + OUTCOMES + ("interrupted",), 0)
    waiting = 0
    while not ctx.stopping and (limit is None or counts["ran"] < limit) \
            and time.monotonic() - started < cfg["tick_budget_s"]:
        task, waiting, interrupted = claim(ctx, streams, read_new=waiting == 0)
        counts["interrupted"] += len(interrupted)
        if streams != routes.worker_streams(ctx):  # a route this node qualifies for appeared: read it now
            streams = routes.worker_streams(ctx)
            if task is None:
                continue
        if task is None:
            if interrupted:
                continue  # their retries may be queued already
            break
        counts[execute(ctx, task)] += 1
        counts["ran"] += 1
    released = release(ctx, streams, "unstarted") if waiting else []
    if counts["ran"] or counts["interrupted"]:
        ctx.log.info("worker tick: %d run (%d done, %d to retry, %d dead, %d stale), %d interrupted earlier",
                     counts["ran"], counts["done"], counts["retry"], counts["dead"], counts["stale"],
                     counts["interrupted"])
    return dict(counts, node=ctx.node_id, released=len(released))


class WorkerJob:
    """The task_queue job's tick (``run/jobs.py``): ``work_tick``, and between two ticks of a living
    process (``--loop``, ``--foreground``) a wait that ends as soon as there may be a task to claim.

    With ``redis.blocking_reads`` false, and always for a one-shot tick (which never loads
    run/wake.py), it sleeps what is left of ``tasks.poll_interval_s``. Otherwise it blocks
    (``run/wake.py``: XREAD BLOCK on a connection of its own, never the tick's) on the streams this
    worker reads and on the cluster events, and the next tick comes:
    - at once after a tick that ran a task: it may have stopped at ``tasks.tick_budget_s`` with
      more queued (one round trip first, to read where each stream ends);
    - when an entry lands on one of its task streams, or a ``route_added`` event names a route
      whose labels this node all offers (task_submit.lua: a stream it does not read yet);
    - when the earliest delayed retry comes due (task_prepare.lua's ``next_due_ms``, by Redis's clock);
    - at the latest max(``tasks.poll_interval_s``, ``node.heartbeat_interval``) after the last tick:
      a safety net for what no stream announces (an attempt of this node whose lease lapsed, which
      the next claim counts as interrupted) and for a Redis that lost what was written to it.

    Round trips an idle worker makes, at the defaults (poll 1 s, heartbeat 10 s, socket timeout
    5 s): a block lasts at most max(socket_timeout / 2, poll_interval) = 2.5 s, so each 10 s safety
    period is 4 XREADs and one idle tick (one round trip): 30 a minute, where polling every
    poll_interval_s made 60. In general 60 / max(socket_timeout / 2, poll_interval) + 60 /
    max(poll_interval, heartbeat_interval) a minute: never more than twice polling's 60 /
    poll_interval, and less whenever socket_timeout / 2 is over the poll period. A Redis gone silent
    is noticed within the block plus half the socket timeout.
    """

    def __init__(self, ctx):
        self.watch = None  # run/wake.StreamWatch, made at the first blocking wait
        self.ran = False  # the last tick ran a task

    def __call__(self, ctx) -> dict:
        result = work_tick(ctx)
        self.ran = result["ran"] > 0
        return result

    def wait(self, ctx, seconds: float) -> str:
        """Until the next tick (see the class docstring); ``seconds``: what is left of the poll period.
        Why it returned: "slept" (no blocking reads), or ``wake.wait``'s reason."""
        refused = self.watch is not None and not self.watch.usable  # Redis refused a read: sleep for a while
        if not (ctx.loop and ctx.cfg["redis"]["blocking_reads"]) or refused:
            ctx.sleep(seconds)
            return "slept"
        from distnode.run import wake  # deferred: a one-shot tick never waits (~0.3 ms to load)
        if self.watch is None:
            # a block never shorter than the poll period: blocking never costs more reads than polling
            self.watch = wake.StreamWatch(ctx, block_max_s=max(ctx.cfg.socket_timeout_s / 2,
                                                               ctx.cfg["tasks"]["poll_interval_s"]))
        if self.ran:
            # the tick read past a backlog: the old positions would wake a tick per hundred entries it
            # already handled, so read where each stream ends instead (wake.wait then returns "primed")
            self.ran = False  # once: a tick the foreground skips (no heartbeat) runs nothing
            self.watch.forget()
        until_s = time.monotonic() + max(ctx.cfg["tasks"]["poll_interval_s"], ctx.cfg.heartbeat_interval_s)
        due_s = getattr(ctx, "next_retry_s", None)
        if due_s is not None:
            until_s = min(until_s, due_s)
            ctx.next_retry_s = None  # used once: the next tick reads it anew (a skipped one must not spin)
        events, offered = keys.events(), set(routes.offered_labels(ctx))

        def wakes(entry) -> bool:
            if entry.stream != events:
                return True  # a task stream: every entry is a task to claim (or already claimed)
            return entry.fields.get("type") == "route_added" and \
                set(entry.fields.get("detail", "").split(",")) <= offered
        why = "stopping" if ctx.stopping else wake.wait(ctx, self.watch, routes.worker_streams(ctx) + [events],
                                                        until_s, wakes)
        if ctx.stopping:
            self.stop(ctx)
        return why

    def stop(self, ctx) -> None:
        """Close the blocking connection (the loop ended)."""
        if self.watch is not None:
            self.watch.close()


def claim(ctx, streams: list, read_new: bool):
    """Claim one task: (Task or None, entries still waiting here, ids of interrupted attempts).

    With ``read_new``: promote due retries, XREADGROUP one new entry per stream,
    and claim, in one round trip. Without: only claim among entries already delivered.

    A claim whose reply was lost (the connection failed after the request went
    out) is not lost with it: its nonce stays on ``ctx`` until a reply comes,
    and the next claim of this process (the tick's retry, or the loop's next
    tick) sends it again, so task_claim returns the attempt the lost reply
    named, its lease renewed, instead of leaving it to lapse unrun.
    """
    ks, args = header(ctx)
    nonce = getattr(ctx, "claim_nonce", None)
    if nonce is None:
        nonce = ctx.claim_nonce = os.urandom(8).hex()
    items = []
    if read_new:
        items.append((lua.script("task_prepare"), ks + (keys.task_routes(),) + tuple(streams),
                      args + (defaults.TASK_PROMOTE_MAX_TASKS,) + tuple(routes.offered_labels(ctx))))
        items.append(("XREADGROUP", "GROUP", GROUP, ctx.node_id, "COUNT", 1, "STREAMS")
                     + tuple(streams) + (">",) * len(streams))
    items.append((lua.script("task_claim"), ks + (keys.nodes(), keys.events()) + tuple(streams),
                  args + (defaults.TASK_CLAIM_SCAN_ENTRIES, instance(ctx), keys.task_lease(""),
                          ms(handler.lease_ttl_s(ctx)), ctx.cfg["cluster"]["events_maxlen"], nonce) + end_latch()))
    sent_at = time.monotonic()  # the attempt lease runs from no earlier than this
    replies = request_with_scripts(ctx.redis, items)
    ctx.claim_nonce = None  # answered: the next claim is a new one
    _raise_claim_errors(ctx, replies, read_new)
    if read_new:
        prepared = lua.decode("task_prepare", replies[0])
        routes.learn_routes(ctx, prepared.routes)
        # measured from the reply's arrival, after Redis read its clock: waking then is never early
        ctx.next_retry_s = None if prepared.next_due_ms is None else time.monotonic() + prepared.next_due_ms / 1000.0
    result = lua.decode("task_claim", replies[-1])
    for task_id, outcome in result.interrupted:
        ctx.log.warning("task %s: an earlier attempt on this node was interrupted; %s", task_id,
                        outcome_text(outcome))
    task = Task(result.task, sent_at) if result.task else None
    return task, result.waiting, [task_id for task_id, _ in result.interrupted]


def _raise_claim_errors(ctx, replies: list, read_new: bool) -> None:
    if isinstance(replies[-1], CollisionError):
        raise collision(ctx, replies[-1])
    if isinstance(replies[-1], ResponseError):
        raise replies[-1]
    if read_new and isinstance(replies[1], ResponseError) and not str(replies[1]).startswith("NOGROUP"):
        raise replies[1]  # NOGROUP: a group deleted by hand; task_prepare recreates it next time
    if isinstance(replies[0], ResponseError):
        raise replies[0]


def execute(ctx, task: Task) -> str:
    """Run one claimed attempt and store its outcome: 'done', 'retry', 'dead', 'stale' or 'requeued'.

    An attempt its worker stopped (SIGTERM in loop or foreground mode) has
    had its handler's process group killed; it is handed back to the queue,
    not counted as failed.
    """
    t0 = time.monotonic()
    ran = handler.run_handler(ctx, task)
    if ran.stopped:
        release(ctx, [task.stream], "all")
        ctx.log.warning("task %s (%s) attempt %d: stopped with its worker, handler killed; back in the queue",
                        task.id, task.type, task.attempt)
        return "requeued"
    if ran.dropped_bytes:
        ctx.log.warning("task %s (%s) wrote %d bytes of output; %s", task.id, task.type, ran.out_bytes,
                        _output_cut(ctx, task, len(ran.output)))
    outcome = finish(ctx, task, ran.ok, ran.output, ran.error, ran.out_bytes)
    took_s = time.monotonic() - t0
    if outcome == "done":
        ctx.log.info("task %s (%s) attempt %d done in %.2fs", task.id, task.type, task.attempt, took_s)
    elif outcome == "stale":
        ctx.log.warning("task %s (%s) attempt %d finished after it was reclaimed or handed back: its outcome "
                        "is dropped (%s)", task.id, task.type, task.attempt, "ok" if ran.ok else ran.error)
    else:
        ctx.log.warning("task %s (%s) attempt %d/%d failed in %.2fs: %s; %s", task.id, task.type, task.attempt,
                        task.max_attempts, took_s, ran.error, outcome_text(outcome))
    return outcome


def _output_cut(ctx, task: Task, read_bytes: int) -> str:
    """How much of a handler's output was kept, and the setting that cut it, for the log.

    An argv handler's output is read up to the smaller of result_max_bytes + 1 and
    max_output_bytes (handler.run_handler), and at most result_max_bytes of it stored;
    an agent turn's CLI output is read up to max_output_bytes (agent_task.run).
    """
    t = ctx.cfg["tasks"]
    if task.type == agent_task.TASK_TYPE:
        return "the first %d were read (tasks.max_output_bytes)" % t["max_output_bytes"]
    by = "tasks.result_max_bytes" if t["result_max_bytes"] + 1 <= t["max_output_bytes"] else "tasks.max_output_bytes"
    return "the first %d were kept (%s)" % (min(read_bytes, t["result_max_bytes"]), by)


def finish(ctx, task: Task, ok: bool, output: bytes, error: str, out_bytes: int = None) -> str:
    """Store the outcome, retrying on connection faults (a repeat finds its own stored outcome).

    ``out_bytes``: all the output the handler wrote (stored as ``output_bytes``).
    """
    max_bytes = ctx.cfg["tasks"]["result_max_bytes"]
    body = output[:max_bytes] if ok else error.encode("utf-8", "replace")
    out_bytes = len(output) if out_bytes is None else out_bytes
    args = (task.id, task.token, task.entry, "ok" if ok else "fail", body,
            1 if ok and (len(output) > max_bytes or out_bytes > len(output)) else 0, out_bytes,
            instance(ctx)) + end_latch()
    retries = ctx.cfg["node"]["retry_count"]
    for attempt in range(retries + 1):
        try:
            result = run_script(ctx, "task_finish", (task.stream, keys.nodes()), args)
            break
        except RedisConnectionError as exc:
            if attempt >= retries:
                raise
            ctx.log.warning("storing the outcome of task %s failed: %s; retrying", task.id, exc)
            time.sleep(ctx.cfg.retry_delay_s)
    if result.outcome == "stale" and attempt > 0 and result.token == task.token:
        # our own earlier try got through before its reply was lost
        return {"done": "done", "dead": "dead", "pending": "retry"}.get(result.state, result.outcome)
    return result.outcome


def release(ctx, streams: list, mode: str) -> list:
    """Hand this node's delivered entries on ``streams`` back to the queue ('unstarted' or 'all');
    the task ids handed back."""
    handed = run_script(ctx, "task_release", (keys.nodes(),) + tuple(streams), (mode, instance(ctx)))
    if handed:
        ctx.log.info("handed %d task(s) back to the queue: %s", len(handed), ", ".join(handed[:20]))
    return handed


def hand_back(ctx) -> int:
    """Give every task delivered to this node back to the queue (before it leaves).

    Attempts running here are not counted as failed. A handler this process
    still runs (a worker thread that did not stop in time) is stopped first,
    its process group killed, so it never runs beside the next attempt. Tasks
    targeted at this node stay queued for its return.
    """
    spawn.stop_all(agent_task.TERM_GRACE_S + 1)
    return len(release(ctx, routes.worker_streams(ctx), "all"))
