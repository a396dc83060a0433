"""Submitting a task, checking it first, and waiting for its outcome (task_queue.py submit).

Guarantees: a payload over tasks.max_payload_bytes or that is not JSON is
refused before anything is sent; the same idempotency key never enqueues
twice while its task is kept; a retried call with the same task id finds
the task instead of adding one; with election.min_replicas_acked > 0, a
submit that returns was confirmed by that many replicas (else TickError:
resubmit with the same key).
"""

import os
import time

from distnode import lua
from distnode.cluster import membership
from distnode.core import config
from distnode.core.defaults import WAIT_POLL_FIRST_S, WAIT_POLL_MAX_S  # --wait's pauses, as state_sync watch's
from distnode.core import keys
from distnode.core.errors import TickError
from distnode.redis.errors import CollisionError, RedisTimeoutError, ResponseError
from distnode.redis.script import request_with_scripts
from distnode.tasks import admin
from distnode.tasks import routes
from distnode.tasks.common import FINAL_STATES, collision, header, ms, raise_errors

MAX_KEY_LEN = 256        # an idempotency key's characters
LIVE_STATES = ("online", "suspect")


def new_task_id() -> str:
    """Sortable and unique: milliseconds (local clock, only for ordering ids) + 40 random bits."""
    return "%d-%s" % (int(time.time() * 1000), os.urandom(5).hex())


def submit(ctx, task_type: str, payload: str, target: str = "", key: str = "", max_attempts: int = 0,
           timeout_s: float = 0, task_id: str = "", requires=()) -> dict:
    """Enqueue a task; return {"id", "created", "target_known", "requires"}.

    The same idempotency ``key`` never enqueues twice while its task is kept
    (``created`` is then False and ``id`` is the first task's). Passing the
    same ``task_id`` again (a retried call) finds the task instead of adding one.
    Only a node with every label in ``requires`` runs the task (plus the
    ``agent`` capability for ``agent`` tasks; see routes.requirement); a task
    with a ``target`` runs on that node alone. Defaults for attempts and
    timeout come from this (the submitting) node's config. A payload over
    tasks.max_payload_bytes is a ValueError, before anything is sent.
    """
    t = ctx.cfg["tasks"]
    check_payload_size(ctx, len(payload.encode("utf-8", "surrogatepass")), "the payload")
    task_id = task_id or new_task_id()
    needs = routes.requirement(task_type, requires)
    ks, args = header(ctx)
    call = (lua.script("task_submit"), ks + (routes.stream_for(target, needs), keys.nodes(), keys.task_routes(),
                                              keys.events()),
            args + (task_id, task_type, payload, target, key, max_attempts or t["default_max_attempts"],
                    max(1, ms(timeout_s or t["default_timeout_s"])), needs, ctx.cfg["cluster"]["events_maxlen"]))
    result = lua.decode("task_submit", _send(ctx, call, key))
    created = result.outcome == "created" or result.task_id == task_id
    if created:
        where = ", for node " + target if target else ", for nodes with " + needs if needs else ""
        ctx.log.info("submitted task %s (type %s%s)", result.task_id, task_type, where)
    else:
        ctx.log.info("idempotency key %r already names task %s: not submitted again", key, result.task_id)
    return {"id": result.task_id, "created": created, "target_known": result.target_known,
            "requires": needs.split(",") if needs else []}


def _send(ctx, call: tuple, key: str):
    """The submit script's raw reply; with election.min_replicas_acked > 0, WAITed for in the same round trip.

    Both go on one connection, so WAIT counts the replicas that received
    everything up to this submit (replication is one ordered stream). Short
    of that within ``election.replica_wait_ms``, a TickError (exit 1): the
    task is queued but may be lost with the master in a failover, so the
    caller must resubmit with the same idempotency key, which finds the task
    instead of adding a second one.
    """
    election = ctx.cfg["election"]
    want, wait_ms = election["min_replicas_acked"], election["replica_wait_ms"]
    replies = request_with_scripts(ctx.redis, [call] + ([("WAIT", want, wait_ms)] if want > 0 else []))
    if isinstance(replies[0], CollisionError):
        raise collision(ctx, replies[0])
    if isinstance(replies[0], Exception):
        raise replies[0]
    if want <= 0:
        return replies[0]
    acked = replies[1]
    if isinstance(acked, int) and acked >= want:
        return replies[0]
    why = ("WAIT failed: %s" % acked if isinstance(acked, Exception)
           else "%s of %d replicas confirmed it within %dms" % (acked, want, wait_ms))
    again = "resubmit with the same --key %s (idempotent)" % key if key else \
        "resubmit with an idempotency key (--key) to retry without a duplicate"
    raise TickError("task %s may not survive a failover (%s): %s" % (replies[0][1].decode(), why, again))


def able_nodes(ctx, needs: str, target: str = "") -> tuple:
    """(live nodes that offer every label of ``needs``, all live nodes), by the heartbeat records.

    With a ``target``, only that node counts. Live means online or suspect;
    a node offers its published ``labels`` and ``capabilities``.
    """
    wanted = set(needs.split(",")) if needs else set()
    live, able = [], []
    for node in membership.snapshot(ctx.redis)["nodes"]:
        if node["state"] not in LIVE_STATES or (target and node["id"] != target):
            continue
        live.append(node["id"])
        rec = node["record"]
        offered = {v for field in ("labels", "capabilities") if isinstance(rec.get(field), list)
                   for v in rec[field] if isinstance(v, str)}
        if wanted <= offered:
            able.append(node["id"])
    return able, live


def wait(ctx, task_id: str, deadline_s: float = None, sleep=time.sleep, clock=time.monotonic):
    """Until the task is done or dead, or ``clock()`` passes ``deadline_s`` (None: no limit).

    Returns the task's record (admin.status); its state is still pending or
    running if the deadline passed first, and it stays queued. None if there
    is no such task (never submitted, or purged).

    With ``redis.blocking_reads`` (the default) it wakes when the task ends,
    not on a poll: after one HGET of the state, each request blocks on the
    task's end latch (``keys.task_ended``) and reads the state again, in one
    round trip (the block first, the state read after it). The latch gets its element in the same script that ends the
    task, and BRPOPLPUSH pushes it back onto the same list, so an end at any
    moment after the first HGET wakes this waiter and every other one. A block
    lasts whole seconds (Redis 5 takes no fraction), at most half of
    ``redis.socket_timeout`` (its reply is due within it) and never past the
    deadline. It runs on the command's own connection (``ctx.redis``): a
    command is no tick, nothing of this process queues behind it. With under
    a second left, or blocking_reads false, or once Redis refused the block
    (an ACL without BRPOPLPUSH, a demoted master, a latch of another type) or
    held it past its due time, it polls: one HGET per poll, the pause doubling
    from WAIT_POLL_FIRST_S to WAIT_POLL_MAX_S.
    """
    max_block_s = int(ctx.cfg.socket_timeout_s / 2) if ctx.cfg["redis"]["blocking_reads"] else 0
    pause_s = WAIT_POLL_FIRST_S
    state = _look(ctx, task_id)  # alone: a task that ended longer ago than its latch lives must not block
    while True:
        if state is None or state in FINAL_STATES:
            return admin.status(ctx, task_id)
        left_s = None if deadline_s is None else deadline_s - clock()
        block_s = max_block_s if left_s is None else min(max_block_s, int(max(left_s, 0)))
        if block_s:
            try:
                state, ended = _block(ctx, task_id, block_s)
            except (ResponseError, RedisTimeoutError) as exc:
                # refused (an ACL without BRPOPLPUSH, a demoted master, a latch of another type) or held
                # past its reply's due time (CLIENT PAUSE): poll for the rest of this wait, as before
                ctx.log.warning("waiting for task %s by polling: blocking on %s failed: %s", task_id,
                                keys.task_ended(task_id), exc)
                max_block_s, state, ended = 0, _look(ctx, task_id), False
            if not ended:
                continue  # the state was read after the block: an end without a latch is seen now
            rec = admin.status(ctx, task_id)
            if rec is None or rec["state"] in FINAL_STATES:
                return rec
            # woken, yet not ended: retried and ended again in between, or a latch nothing deleted: poll once
        if left_s is not None and left_s <= 0:
            return admin.status(ctx, task_id)
        sleep(pause_s if left_s is None else min(pause_s, left_s))
        pause_s = min(pause_s * 2, WAIT_POLL_MAX_S)
        state = _look(ctx, task_id)


def _look(ctx, task_id: str):
    """The task's state, or None without a record."""
    state = ctx.redis.execute("HGET", keys.task(task_id), "state")
    return state.decode() if state is not None else None


def _block(ctx, task_id: str, block_s: int) -> tuple:
    """Block up to ``block_s`` whole seconds on the task's end latch, then read its state, in one round
    trip: (the state after the block, True if the latch woke it). An end since the caller last read the
    state left the latch's element, so the block returns at once; an end that wrote no latch (a node of
    an older release) is in the state read after it."""
    latch = keys.task_ended(task_id)
    woken, state = ctx.redis.request([("BRPOPLPUSH", latch, latch, block_s), ("HGET", keys.task(task_id), "state")])
    if isinstance(woken, ResponseError):
        raise woken
    raise_errors([state])
    return (state.decode() if state is not None else None), woken is not None


def check_payload_size(ctx, size: int, where: str, exact: bool = True) -> None:
    """ValueError (one line naming ``where``) when ``size`` bytes is over tasks.max_payload_bytes."""
    limit = ctx.cfg["tasks"]["max_payload_bytes"]
    if size > limit:
        raise ValueError("%s is %s%d bytes, over tasks.max_payload_bytes (%d): pass large data by reference "
                         "(a path or URL in the payload)" % (where, "" if exact else "more than ", size if exact
                                                             else limit, limit))


def parse_payload(text: str, where: str) -> str:
    """Payloads are JSON; return it unchanged if it parses, else ValueError naming ``where``.

    JSON as every reader takes it: no NaN or Infinity (nor 1e999), no key given twice, no integer
    of more than 20 digits, no lone surrogate in a string, nesting at most JSON_DATA_MAX_DEPTH deep
    (``config.parse_data``, which the kv store's values go through too)."""
    config.parse_data(text, where)
    return text
