"""The task queue: submit tasks, run them on any node (or one), survive workers that die.

Redis Streams deliver; a hash per task is the truth. Every change of state is
one Lua script (``lua.TASK_*``), so a crash between any two steps of a client
leaves each task in exactly one of the states below, from where the system
moves it on without help.

State machine (``openclaw:tasks:task:<id>``, field ``state``; each state has
its index ``openclaw:tasks:state:<state>``, a sorted set)::

    from     to       by
    (new)    pending  submit
    pending  running  claim by a worker (attempts + 1, runs + 1, new token)
    running  done     finish, handler exited 0
    running  pending  finish failed or reclaimed, attempts left: a new entry now,
                      or the delayed zset until the backoff is over
    running  dead     finish failed or reclaimed, attempts used up
    running  pending  hand back (node leaving): attempts - 1, new entry
    pending  pending  due retry promoted, lost entry replaced, or a delivered but
                      unstarted entry handed back: a new entry each time
    dead     pending  retry (CLI): attempts reset, new entry

- ``pending``: waiting. Either it has a live stream entry (field ``entry``,
  body ``{task: <id>}``) in its stream (see Routing), or it waits for a
  retry in ``openclaw:tasks:delayed`` (score = due time) and gets a new
  entry when due (any worker's tick promotes due retries).
- ``running``: a worker took it (``worker``, ``token`` = ``<runs>@<node>``,
  ``deadline_ms`` = start + timeout; the running index is scored by the
  deadline). The entry stays in the worker's pending entries list (PEL)
  until the outcome is stored.
- ``done``: the result (stdout, capped) is stored; ``dead``: attempts used up,
  the last error is stored and a copy goes to ``openclaw:tasks:dead``.

Transitions, each atomic:
- submit (TASK_SUBMIT): hash + pending index + entry (+ idempotency key).
- claim (TASK_CLAIM, after XREADGROUP in the same round trip): the first
  entry in this worker's PEL whose task is pending -> running; the attempt
  count and the run count go up and a fresh token names the attempt.
- finish (TASK_FINISH): only if the token is still the task's: XACK and
  done, or the retry path (pending + delayed, or dead). A worker that finishes
  an attempt that was reclaimed meanwhile changes nothing ("stale").
- reclaim (TASK_RECLAIM, leader only, fenced): PEL entries of consumers whose
  heartbeat key is gone, and entries idle past timeout + ``reclaim_grace_s``
  on live ones, are XCLAIMed to the leader, XACKed, and their task takes the
  retry path (a started attempt counts as failed). Running tasks past
  deadline + grace are found through the running index even when their entry
  was acked or lost; pending tasks whose entry cannot be delivered any more
  get a new one.
- hand back (TASK_RELEASE): a leaving node's delivered entries go back to the
  queue with new entries; its running attempts are not counted as failed.

Routing: a task's stream is fixed at submit. A task for one node (``--node``)
goes to that node's stream; a task that requires labels (``--require``, and
the ``agent`` capability for ``agent`` tasks) goes to the stream of its
requirement, ``openclaw:tasks:route:<labels sorted, joined by ','>``; any
other task goes to the shared stream. A worker reads its own stream, the
route streams whose every label it offers (``node.labels`` plus detected
capabilities), most specific first, then the shared stream, so it is never
delivered a task it may not run: nothing is handed back, no attempt is
burnt, and a task no node qualifies for waits, undelivered, until one comes.
Route streams are in the stream set like the others, so the leader's
reclaim covers them. The worker learns the routes from TASK_PREPARE and
keeps them in ``<run_dir>/task-routes.<node>.json``, so an idle tick stays
one round trip; a route new to it is read in the same tick it is learnt.

Retries never reuse an entry: the old one is acked and a new one is added, so
a stream entry belongs to one delivery. ``XTRIM`` only ever removes entries
every group has delivered and acknowledged (``lua.TASK_*`` trims from the
head, up to the oldest undelivered or unacknowledged entry), so
``stream_maxlen`` never drops a task that is still on its way; a stream may
hold more while that many tasks are in flight.

Crash windows and what recovers them:
- worker dies, hangs or is cut off after the claim: its entry is in its PEL
  with the task ``running`` under an attempt lease (``keys.task_lease``, TTL
  ``node.heartbeat_ttl``, renewed by the worker while the handler runs, see
  ``attempt_lease``). Once the lease lapsed in Redis, its node's next tick
  (same instance) counts the attempt as failed (TASK_CLAIM), or the leader's
  reclaim does; never earlier, whatever ``hb:<id>`` says. The handler's
  supervisor has killed the handler before then (child.Lease).
- a ``running`` task whose entry was acked or lost: the running index sweep.
- a ``pending`` task whose entry was trimmed or deleted by hand: the pending
  sweep gives it a new one (it checks the oldest pending tasks each tick).
- a reply lost on the wire: submit reuses its task id (a retry finds the
  task and reports it), finish is retried and finds its own stored outcome.

Guarantees: at-least-once execution; every task ends ``done`` or ``dead``
(and stays findable for ``done_ttl_s``); an attempt that lost its claim never
overwrites the current one; a running attempt is moved only once its lease
lapsed, after its handler was killed (README, "A handler never outlives its attempt"). Not guaranteed: exactly-once (a handler may run
twice when a worker dies or hangs after starting it: handlers get TASK_ID and
TASK_ATTEMPT to be idempotent), order across workers, or progress for tasks
targeted at a node that never comes back or requiring labels no node offers
(they wait, pending, and are never lost).
"""

import json
import os
import time

from distnode.tasks import agent_task
from distnode.core import keys
from distnode.core import local_state
from distnode.lua import scripts as lua
from distnode.cluster import membership
from distnode.redis import client as rc
from distnode.core.config import MAX_NODE_ID_LEN, NODE_ID_CHARS

GROUP = keys.TASK_GROUP
STATES = ("pending", "running", "done", "dead")
NAME_CHARS, MAX_NAME_LEN = NODE_ID_CHARS, MAX_NODE_ID_LEN  # names end up in keys, like node ids
MAX_KEY_LEN = 256
CLAIM_SCAN = 16          # PEL entries a claim examines per stream
PROMOTE_BATCH = 100      # due retries one fetch promotes
RECLAIM_BATCH = 500      # entries or tasks per reclaim step
RECLAIM_CALLS_MAX = 5    # reclaim calls per leader tick when batches are full
PURGE_BATCH = 500
MAX_REQUIRE = 16         # labels one task may require
LIVE_STATES = ("online", "suspect")
WAIT_POLL_FIRST_S = 0.05  # --wait polls the task's state, doubling the pause up to WAIT_POLL_MAX_S
WAIT_POLL_MAX_S = 1.0
FINAL_STATES = ("done", "dead")


class Task:
    """One claimed attempt, as the worker runs it."""

    __slots__ = ("id", "type", "payload", "attempt", "max_attempts", "timeout_s", "token", "stream", "entry",
                 "claimed_at")

    def __init__(self, reply: list, claimed_at: float = None):
        (tid, ttype, self.payload, self.attempt, self.max_attempts, timeout_ms, token, stream, entry) = reply
        self.claimed_at = time.monotonic() if claimed_at is None else claimed_at  # when the claim was SENT
        self.id, self.type, self.token = tid.decode(), ttype.decode(), token.decode()
        self.stream, self.entry = stream.decode(), entry.decode()
        self.timeout_s = int(timeout_ms) / 1000.0


# -- names and checks --------------------------------------------------------

def check_name(value: str, what: str) -> str:
    """Task types (and node ids) end up in key names and environments: [A-Za-z0-9._-]{1,64}."""
    if not value or len(value) > MAX_NAME_LEN or any(ch not in NAME_CHARS for ch in value):
        raise ValueError("%s must be 1 to %d characters of letters, digits, '.', '_' and '-', got %r"
                         % (what, MAX_NAME_LEN, value))
    return value


def new_task_id() -> str:
    """Sortable and unique: milliseconds (local clock, only for ordering ids) + 40 random bits."""
    return "%d-%s" % (int(time.time() * 1000), os.urandom(5).hex())


def requirement(task_type: str, labels=()) -> str:
    """The labels a runner of the task needs, canonical: sorted, unique, joined by ','.

    ``agent`` tasks need the ``agent`` capability (the OpenClaw CLI) besides ``labels``.
    Raises ValueError for a label that is not [A-Za-z0-9._-]{1,64} or too many labels.
    """
    needed = {check_name(label, "label") for label in labels}
    if task_type == agent_task.TASK_TYPE:
        needed.add(agent_task.CAPABILITY)
    if len(needed) > MAX_REQUIRE:
        raise ValueError("a task may require at most %d labels, got %d" % (MAX_REQUIRE, len(needed)))
    return ",".join(sorted(needed))


def offered_labels(ctx) -> list:
    """What this node offers to routed tasks: its ``node.labels`` and detected capabilities."""
    return sorted(set(ctx.cfg["node"]["labels"]) | set(membership.capabilities(ctx.cfg)))


def worker_streams(ctx) -> list:
    """The streams this node's worker reads, in priority order.

    Its own stream, then the route streams of every known requirement whose
    labels this node all offers (more labels first), then the shared stream.
    A route it does not qualify for is never read, so never delivered here.
    """
    offered = set(offered_labels(ctx))
    routes = [r for r in known_routes(ctx) if set(r.split(",")) <= offered]
    routes.sort(key=lambda r: (-r.count(","), r))
    return [keys.task_stream(ctx.node_id)] + [keys.task_route(r) for r in routes] + [keys.task_stream()]


def _routes_path(ctx) -> str:
    return os.path.join(ctx.cfg.run_dir, "task-routes.%s.json" % ctx.node_id)


def known_routes(ctx) -> list:
    """The requirements this node's worker last learnt from TASK_PREPARE (kept on disk between ticks)."""
    routes = getattr(ctx, "task_routes", None)
    if routes is None:
        from distnode.core import local_state
        saved = local_state.read_json(_routes_path(ctx), [])
        routes = ctx.task_routes = [r for r in saved if isinstance(r, str)] if isinstance(saved, list) else []
    return routes


def _learn_routes(ctx, routes: list) -> bool:
    """Remember the routes TASK_PREPARE named; True if they changed (the caller reads again)."""
    if routes == known_routes(ctx):
        return False
    ctx.task_routes = routes
    from distnode.core import local_state
    try:
        local_state.atomic_write_json(_routes_path(ctx), routes)
    except OSError as exc:  # only costs a round trip per tick: the next run learns them again
        ctx.log.warning("cannot save the task routes to %s: %s", _routes_path(ctx), exc.strerror or exc)
    return True


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _header(ctx) -> tuple:
    """(KEYS, ARGV) every task script starts with (see the `# -- tasks` block of lua.py)."""
    t = ctx.cfg["tasks"]
    ks = (keys.task_index("pending"), keys.task_index("running"), keys.task_index("done"),
          keys.task_index("dead"), keys.task_delayed(), keys.task_dead(), keys.task_streams())
    args = (ctx.node_id, GROUP, keys.task(""), keys.task_idempotency(""), _ms(t["backoff_base_s"]),
            _ms(t["backoff_max_s"]), max(1, _ms(t["done_ttl_s"])), t["stream_maxlen"])
    return ks, args


def _run(ctx, script, extra_keys=(), extra_args=()):
    ks, args = _header(ctx)
    return script(ctx.redis, ks + tuple(extra_keys), args + tuple(extra_args))


def _request(client, items: list) -> list:
    """Send commands and scripts in one round trip; a script item is (Script, keys, args).

    Scripts go as EVALSHA once this client has run them, else as EVAL; on NOSCRIPT
    (Redis restarted or flushed its cache) the request is sent once more with EVAL.
    """
    known = getattr(client, "_known_scripts", None)
    if known is None:
        known = client._known_scripts = set()
    for _ in range(2):
        cmds = [it[0].args(it[1], it[2], it[0].source in known) if isinstance(it[0], rc.Script) else it
                for it in items]
        replies = client.request(cmds)
        scripts = [(it[0], r) for it, r in zip(items, replies) if isinstance(it[0], rc.Script)]
        if any(isinstance(r, rc.NoScriptError) for _, r in scripts):
            known.difference_update(s.source for s, _ in scripts)
            continue
        known.update(s.source for s, r in scripts if not isinstance(r, rc.ResponseError))
        return replies
    return replies


def _raise_errors(replies: list) -> list:
    for reply in replies:
        if isinstance(reply, rc.ResponseError):
            raise reply
    return replies


# -- submit ------------------------------------------------------------------

def submit(ctx, task_type: str, payload: str, target: str = "", key: str = "", max_attempts: int = 0,
           timeout_s: float = 0, task_id: str = "", requires=()) -> dict:
    """Enqueue a task; return {"id", "created", "target_known", "requires"}.

    The same idempotency ``key`` never enqueues twice while its task is kept
    (``created`` is then False and ``id`` is the first task's). Passing the
    same ``task_id`` again (a retried call) finds the task instead of adding one.
    Only a node with every label in ``requires`` runs the task (plus the
    ``agent`` capability for ``agent`` tasks; see ``requirement``); a task
    with a ``target`` runs on that node alone. Defaults for attempts and
    timeout come from this (the submitting) node's config. A payload over
    tasks.max_payload_bytes is a ValueError, before anything is sent.
    """
    t = ctx.cfg["tasks"]
    check_payload_size(ctx, len(payload.encode("utf-8", "surrogatepass")), "the payload")
    task_id = task_id or new_task_id()
    needs = requirement(task_type, requires)
    stream = keys.task_stream(target) if target or not needs else keys.task_route(needs)
    ks, args = _header(ctx)
    call = (lua.TASK_SUBMIT, ks + (stream, keys.nodes(), keys.task_routes()), args + (
        task_id, task_type, payload, target, key, max_attempts or t["default_max_attempts"],
        max(1, _ms(timeout_s or t["default_timeout_s"])), needs))
    if ctx.cfg["election"]["min_replicas_acked"] > 0:
        outcome, tid, known = _submit_replicated(ctx, call, key)
    else:
        outcome, tid, known = call[0](ctx.redis, call[1], call[2])
    tid = tid.decode()
    created = outcome == b"created" or tid == task_id
    if created:
        where = ", for node " + target if target else ", for nodes with " + needs if needs else ""
        ctx.log.info("submitted task %s (type %s%s)", tid, task_type, where)
    else:
        ctx.log.info("idempotency key %r already names task %s: not submitted again", key, tid)
    return {"id": tid, "created": created, "target_known": bool(known), "requires": needs.split(",") if needs else []}


def _submit_replicated(ctx, call: tuple, key: str) -> list:
    """Run the submit script and WAIT for ``election.min_replicas_acked`` replicas, in one round trip.

    Both go on one connection, so WAIT counts the replicas that received
    everything up to this submit (replication is one ordered stream). Short
    of that within ``election.replica_wait_ms``, a TickError (exit 1): the
    task is queued but may be lost with the master in a failover, so the
    caller must resubmit with the same idempotency key, which finds the task
    instead of adding a second one.
    """
    election = ctx.cfg["election"]
    want, wait_ms = election["min_replicas_acked"], election["replica_wait_ms"]
    reply, acked = _request(ctx.redis, [call, ("WAIT", want, wait_ms)])
    if isinstance(reply, rc.ResponseError):
        raise reply
    if isinstance(acked, int) and acked >= want:
        return reply
    from distnode.core.errors import TickError
    why = ("WAIT failed: %s" % acked if isinstance(acked, rc.ResponseError)
           else "%s of %d replicas confirmed it within %dms" % (acked, want, wait_ms))
    again = "resubmit with the same --key %s (idempotent)" % key if key else \
        "resubmit with an idempotency key (--key) to retry without a duplicate"
    raise TickError("task %s may not survive a failover (%s): %s" % (reply[1].decode(), why, again))


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


# -- the worker ----------------------------------------------------------------

def work_tick(ctx) -> dict:
    """One worker tick: claim and run tasks one at a time, then return.

    Stops after ``tasks.max_per_tick`` tasks (not in loop mode, where an idle
    poll waits ``tasks.poll_interval_s`` instead), when ``tasks.tick_budget_s``
    has passed (a running task is finished first), when the queue is empty,
    or on SIGTERM. An empty queue costs one round trip (two in the tick
    that learns of a new route this node qualifies for).
    """
    cfg = ctx.cfg["tasks"]
    started = time.monotonic()
    _kill_leftover_handler(ctx)  # a file read, no round trip: nothing from a killed worker runs beside a claim
    streams = worker_streams(ctx)
    limit = None if ctx.loop else cfg["max_per_tick"]
    counts = {"ran": 0, "done": 0, "retry": 0, "dead": 0, "stale": 0, "requeued": 0, "interrupted": 0}
    waiting = 0
    while not ctx.stopping and (limit is None or counts["ran"] < limit) \
            and time.monotonic() - started < cfg["tick_budget_s"]:
        task, waiting, interrupted = _claim(ctx, streams, read_new=waiting == 0)
        counts["interrupted"] += len(interrupted)
        if streams != worker_streams(ctx):  # a route this node qualifies for appeared: read it now
            streams = worker_streams(ctx)
            if task is None:
                continue
        if task is None:
            if interrupted:
                continue  # their retries may be queued already
            break
        counts[execute(ctx, task)] += 1
        counts["ran"] += 1
    released = _release(ctx, streams, "unstarted") if waiting else []
    result = dict(counts, node=ctx.node_id, released=len(released))
    if counts["ran"] or counts["interrupted"]:
        ctx.log.info("worker tick: %d run (%d done, %d to retry, %d dead, %d stale), %d interrupted earlier",
                     counts["ran"], counts["done"], counts["retry"], counts["dead"], counts["stale"],
                     counts["interrupted"])
    return result


def _claim(ctx, streams: list, read_new: bool):
    """Claim one task: (Task or None, entries still waiting here, interrupted attempts).

    With ``read_new``: promote due retries, XREADGROUP one new entry per stream,
    and claim, in one round trip. Without: only claim among entries already delivered.
    """
    ks, args = _header(ctx)
    items = []
    if read_new:
        items.append((lua.TASK_PREPARE, ks + (keys.task_routes(),) + tuple(streams),
                      args + (PROMOTE_BATCH,) + tuple(offered_labels(ctx))))
        items.append(("XREADGROUP", "GROUP", GROUP, ctx.node_id, "COUNT", 1, "STREAMS")
                     + tuple(streams) + (">",) * len(streams))
    items.append((lua.TASK_CLAIM, ks + (keys.nodes(), keys.events()) + tuple(streams),
                  args + (CLAIM_SCAN, _instance(ctx), keys.task_lease(""), _ms(_lease_ttl_s(ctx)),
                          ctx.cfg["cluster"]["events_maxlen"])))
    sent_at = time.monotonic()  # the attempt lease runs from no earlier than this
    replies = _request(ctx.redis, items)
    if isinstance(replies[-1], rc.ResponseError):
        _collision(ctx, replies[-1])
    if read_new and isinstance(replies[1], rc.ResponseError) and not str(replies[1]).startswith("NOGROUP"):
        raise replies[1]  # NOGROUP: a group deleted by hand; TASK_PREPARE recreates it next time
    if isinstance(replies[0], rc.ResponseError):
        raise replies[0]
    if read_new:
        _learn_routes(ctx, [r.decode() for r in replies[0][1]])
    claimed, waiting, interrupted = replies[-1]
    for i in range(0, len(interrupted), 2):
        ctx.log.warning("task %s: an earlier attempt on this node was interrupted; %s",
                        interrupted[i].decode(), _outcome_text(interrupted[i + 1].decode()))
    return (Task(claimed, sent_at) if claimed else None), waiting, interrupted[::2]


# -- the attempt lease ---------------------------------------------------------------

LEASE_RENEW_EVERY = 1 / 3.0  # of the lease's ttl: a renewal every third of it
LEASE_MARGIN = 0.2           # of the ttl: the supervisor kills the handler this much before Redis would let the lease go


def _lease_ttl_s(ctx) -> float:
    """An attempt lease lasts node.heartbeat_ttl unrenewed: a crashed worker's task is moved that soon."""
    return float(ctx.cfg["node"]["heartbeat_ttl"])


def attempt_lease(ctx, task: Task):
    """The child.Lease of a claimed attempt: local end ``claimed_at + ttl - margin``, renewed
    (TASK_RENEW, one round trip) every ttl/3 while the handler runs.

    Each renewal's new local end is counted from when its request was SENT, so the handler's
    supervisor always kills it at least ``margin`` before Redis lets the lease lapse (when
    the leader's reclaim or a claim may move the attempt).
    """
    from distnode.procs import child
    ttl_s = _lease_ttl_s(ctx)
    local_s = ttl_s * (1 - LEASE_MARGIN)
    key, value = keys.task_lease(task.id), "%s %s" % (task.token, _instance(ctx))

    def renew():
        sent_at = time.monotonic()
        try:
            held = lua.TASK_RENEW(ctx.redis, (key, keys.task(task.id), keys.events()),
                                  (value, _ms(ttl_s), ctx.cfg["cluster"]["events_maxlen"], ctx.node_id))
        except rc.RedisError as exc:
            ctx.log.warning("task %s: renewing the attempt lease failed: %s", task.id, exc)
            return None
        if held != 1:
            ctx.log.warning("task %s attempt %d: the attempt lease was lost (reclaimed, handed back or lapsed): "
                            "killing the handler", task.id, task.attempt)
            return 0
        return sent_at + local_s
    return child.Lease(task.claimed_at + local_s, ttl_s * LEASE_RENEW_EVERY, renew)


def _handler_record(ctx) -> str:
    """Where the worker notes its running handler's process group (child.run ``record``)."""
    return os.path.join(ctx.cfg.run_dir, "task-handler.%s.json" % ctx.node_id)


def _kill_leftover_handler(ctx) -> None:
    """Kill the process group of a handler an earlier worker of this node left (it and its
    supervisor were killed), before anything new is claimed here."""
    from distnode.procs import child
    left = child.kill_leftover(_handler_record(ctx))
    if left:
        ctx.log.warning("killed the process group %s a killed worker's handler left running", left)


def _release(ctx, streams: list, mode: str) -> list:
    try:
        handed = [h.decode() for h in _run(ctx, lua.TASK_RELEASE, (keys.nodes(),) + tuple(streams),
                                           (mode, _instance(ctx)))]
    except rc.ResponseError as exc:
        _collision(ctx, exc)
    if handed:
        ctx.log.info("handed %d task(s) back to the queue: %s", len(handed), ", ".join(handed[:20]))
    return handed


def execute(ctx, task: Task) -> str:
    """Run one claimed attempt and store its outcome: 'done', 'retry', 'dead', 'stale' or 'requeued'.

    An attempt its worker stopped (SIGTERM in loop or foreground mode) has
    had its handler's process group killed; it is handed back to the queue,
    not counted as failed.
    """
    t0 = time.monotonic()
    outcome_of_run = run_handler(ctx, task)
    if outcome_of_run.stopped:
        _release(ctx, [task.stream], "all")
        ctx.log.warning("task %s (%s) attempt %d: stopped with its worker, handler killed; back in the queue",
                        task.id, task.type, task.attempt)
        return "requeued"
    ok, output, error = outcome_of_run.ok, outcome_of_run.output, outcome_of_run.error
    if outcome_of_run.dropped_bytes:
        ctx.log.warning("task %s (%s) wrote %d bytes of output; the first %d were kept (tasks.max_output_bytes)",
                        task.id, task.type, outcome_of_run.out_bytes, len(output))
    outcome = _finish(ctx, task, ok, output, error, outcome_of_run.out_bytes)
    took = time.monotonic() - t0
    if outcome == "done":
        ctx.log.info("task %s (%s) attempt %d done in %.2fs", task.id, task.type, task.attempt, took)
    elif outcome == "stale":
        ctx.log.warning("task %s (%s) attempt %d finished after it was reclaimed or handed back: its outcome "
                        "is dropped (%s)", task.id, task.type, task.attempt, "ok" if ok else error)
    else:
        ctx.log.warning("task %s (%s) attempt %d/%d failed in %.2fs: %s; %s", task.id, task.type, task.attempt,
                        task.max_attempts, took, error, _outcome_text(outcome))
    return outcome


def _outcome_text(outcome: str) -> str:
    return {"retry": "it will be retried", "dead": "attempts used up: moved to the dead letters",
            "requeued": "back in the queue"}.get(outcome, outcome)


def _finish(ctx, task: Task, ok: bool, output: bytes, error: str, out_bytes: int = None) -> str:
    """Store the outcome, retrying on connection faults (a repeat finds its own stored outcome).

    ``out_bytes``: all the output the handler wrote (stored as ``output_bytes``).
    """
    max_bytes = ctx.cfg["tasks"]["result_max_bytes"]
    body = output[:max_bytes] if ok else error.encode("utf-8", "replace")
    out_bytes = len(output) if out_bytes is None else out_bytes
    args = (task.id, task.token, task.entry, "ok" if ok else "fail", body,
            1 if ok and (len(output) > max_bytes or out_bytes > len(output)) else 0, out_bytes, _instance(ctx))
    node = ctx.cfg["node"]
    for attempt in range(node["retry_count"] + 1):
        try:
            reply = _run(ctx, lua.TASK_FINISH, (task.stream, keys.nodes()), args)
            break
        except rc.RedisConnectionError as exc:
            if attempt >= node["retry_count"]:
                raise
            ctx.log.warning("storing the outcome of task %s failed: %s; retrying", task.id, exc)
            time.sleep(node["retry_delay"])
        except rc.ResponseError as exc:
            _collision(ctx, exc)
    outcome = reply[0].decode()
    if outcome == "stale" and attempt > 0 and reply[2].decode() == task.token:
        # our own earlier try got through before its reply was lost
        return {"done": "done", "dead": "dead", "pending": "retry"}.get(reply[1].decode(), outcome)
    return outcome


def _instance(ctx) -> str:
    """This node's instance token (membership.node_fields): the task scripts refuse another one's worker."""
    token = getattr(ctx, "instance_token", None)
    if token is None:
        from distnode.core import local_state
        token = ctx.instance_token = local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)
    return token


def _collision(ctx, exc: Exception) -> None:
    """Raise NodeIdCollision for a task script's COLLISION refusal, else ``exc`` itself."""
    if not str(exc).startswith("COLLISION"):
        raise exc
    from distnode.core.errors import NodeIdCollision
    raise NodeIdCollision("node id %r is already used by another live process (%s): this worker claims, "
                          "finishes and hands back nothing as that node; give this node its own node.id / "
                          "OPENCLAW_NODE_ID, or stop the other one" % (ctx.node_id, str(exc)[len("COLLISION "):]))


def run_handler(ctx, task: Task):
    """Run the task's handler; a child.Outcome.

    The one place task types are dispatched: the built-in ``agent`` type (an
    OpenClaw agent turn, see agent_task.py; a ``tasks.handlers`` entry of that
    name is not used), else a configured ``tasks.handlers`` argv, started
    through child.run: no shell, payload on stdin, TASK_ID, TASK_TYPE,
    TASK_ATTEMPT, TASK_MAX_ATTEMPTS and NODE_ID in an environment without
    Redis credentials, output read up to ``result_max_bytes`` + 1 bytes (so
    the caller can tell it was cut; the rest is read and dropped), its process
    group killed at the task's timeout, on this worker's stop, or when this
    worker dies.
    """
    from distnode.procs import child
    if task.type == agent_task.TASK_TYPE:
        return agent_task.run(ctx, task, handler_env(ctx, task), lease=attempt_lease(ctx, task),
                              record=_handler_record(ctx))
    argv = ctx.cfg["tasks"]["handlers"].get(task.type)
    if not argv:
        return child.Outcome(False, b"", "no handler for task type %r on node %s (add it to tasks.handlers)" % (
            task.type, ctx.node_id))
    keep = min(ctx.cfg["tasks"]["result_max_bytes"] + 1, ctx.cfg["tasks"]["max_output_bytes"])
    return child.run(argv, task.payload, handler_env(ctx, task), task.timeout_s, keep,
                     lease=attempt_lease(ctx, task), record=_handler_record(ctx),
                     should_stop=lambda: ctx.stopping)


def handler_env(ctx, task: Task) -> dict:
    """This process's environment without Redis credentials (child.clean_env), plus TASK_ID,
    TASK_TYPE, TASK_ATTEMPT, TASK_MAX_ATTEMPTS and NODE_ID."""
    from distnode.procs import child
    return child.clean_env(ctx.cfg, dict(TASK_ID=task.id, TASK_TYPE=task.type, TASK_ATTEMPT=str(task.attempt),
                                         TASK_MAX_ATTEMPTS=str(task.max_attempts), NODE_ID=ctx.node_id))


# -- the leader and leaving ----------------------------------------------------

def reclaim(ctx, epoch: int) -> int:
    """The leader's fenced sweep (see TASK_RECLAIM); returns how many tasks it moved.

    One script call, repeated only while a batch came back full (at most
    ``RECLAIM_CALLS_MAX``): round trips do not grow with the number of nodes.
    A lease lost meanwhile (FENCED) stops it with nothing changed.
    """
    grace_ms = _ms(ctx.cfg["tasks"]["reclaim_grace_s"])
    moved = 0
    for _ in range(RECLAIM_CALLS_MAX):
        ks, args = _header(ctx)
        try:
            more, notes = lua.TASK_RECLAIM(ctx.redis, (keys.leader(), keys.epoch(), keys.term()) + ks
                                           + (keys.task_sweep(), keys.events()),
                                           (ctx.node_id, str(epoch), local_state.instance_token(ctx.cfg.run_dir,
                                                                                                ctx.node_id))
                                           + args + (grace_ms, RECLAIM_BATCH, keys.heartbeat(""),
                                                     keys.task_lease(""), ctx.cfg["cluster"]["events_maxlen"]))
        except rc.ResponseError as exc:
            if not str(exc).startswith("FENCED"):
                raise
            ctx.log.warning("task reclaim refused: %s", exc)
            return moved
        for i in range(0, len(notes), 3):
            ctx.log.warning("reclaimed task %s: %s; %s", notes[i].decode(), notes[i + 2].decode("utf-8", "replace"),
                            _outcome_text(notes[i + 1].decode()))
        moved += len(notes) // 3
        if not more:
            break
    return moved


def hand_back(ctx) -> int:
    """Give every task delivered to this node back to the queue (before it leaves).

    Attempts running here are not counted as failed. A handler this process
    still runs (a worker thread that did not stop in time) is stopped first,
    its process group killed, so it never runs beside the next attempt. Tasks
    targeted at this node stay queued for its return.
    """
    from distnode.procs import child
    child.stop_all(agent_task.TERM_GRACE_S + 1)
    return len(_release(ctx, worker_streams(ctx), "all"))


# -- looking at tasks ------------------------------------------------------------

INT_FIELDS = ("attempts", "runs", "max_attempts", "output_bytes", "payload_bytes")
TIME_FIELDS = ("created_ms", "updated_ms", "started_ms", "finished_ms", "due_ms", "deadline_ms")


def status(ctx, task_id: str):
    """The task's record as a dict (times in seconds since the epoch, Redis's clock), or None.

    ``payload_bytes`` is the payload's size; ``payload`` itself is left out when it is larger
    than this node's tasks.max_payload_bytes (a record written elsewhere or by hand), so the
    reply stays bounded. One round trip.
    """
    flat = lua.TASK_RECORD(ctx.redis, (keys.task(task_id),), (ctx.cfg["tasks"]["max_payload_bytes"],))
    if not flat:
        return None
    raw = {k.decode(): v for k, v in zip(flat[::2], flat[1::2])}
    return describe(raw)


def describe(raw: dict) -> dict:
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
    replies = _raise_errors(ctx.redis.request([("ZREVRANGE", keys.task_index(s), 0, limit - 1) for s in states]))
    ids = [tid.decode() for reply in replies for tid in reply]
    fields = ("state", "type", "attempts", "max_attempts", "worker", "target", "updated_ms")
    rows = _raise_errors(ctx.redis.request([("HMGET", keys.task(tid)) + fields for tid in ids])) if ids else []
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
    replies = _raise_errors(ctx.redis.request([
        ("TIME",), ("SMEMBERS", keys.task_streams()), ("ZCARD", keys.task_index("pending")),
        ("ZCARD", keys.task_delayed()), ("ZCARD", keys.task_index("running")), ("ZCARD", keys.task_index("done")),
        ("ZCARD", keys.task_index("dead")), ("ZRANGE", keys.task_index("pending"), 0, 0, "WITHSCORES"),
        ("XLEN", keys.task_dead())]))
    now, streams, depth, delayed, running, done, dead, oldest, dead_letters = replies
    now_s = int(now[0]) + int(now[1]) / 1e6
    names = sorted(s.decode() for s in streams)
    per_stream = ctx.redis.request([cmd for s in names for cmd in (("XLEN", s), ("XPENDING", s, GROUP))])
    in_flight, streams_out = {}, {}
    for i, name in enumerate(names):
        length, summary = per_stream[2 * i], per_stream[2 * i + 1]
        pel = summary[0] if isinstance(summary, list) else 0
        streams_out[name] = {"length": length if isinstance(length, int) else 0, "in_flight": pel}
        for consumer, count in (summary[3] or []) if isinstance(summary, list) else []:
            node = consumer.decode()
            in_flight[node] = in_flight.get(node, 0) + int(count)
    return {"depth": depth, "delayed": delayed, "running": running, "done": done, "dead": dead,
            "dead_letters": dead_letters, "oldest_pending_age_s": round(now_s - float(oldest[1]) / 1000, 3)
            if oldest else None, "in_flight_by_node": in_flight, "streams": streams_out}


def wait(ctx, task_id: str, deadline_s: float = None, sleep=time.sleep, clock=time.monotonic):
    """Poll until the task is done or dead, or ``clock()`` passes ``deadline_s`` (None: no limit).

    Returns the task's record (``status``); its state is still pending or
    running if the deadline passed first, and it stays queued. None if there
    is no such task (never submitted, or purged). One HGET per poll; the
    pause doubles from WAIT_POLL_FIRST_S to WAIT_POLL_MAX_S.
    """
    pause_s = WAIT_POLL_FIRST_S
    while True:
        state = ctx.redis.execute("HGET", keys.task(task_id), "state")
        if state is None or state.decode() in FINAL_STATES:
            return status(ctx, task_id)
        left_s = None if deadline_s is None else deadline_s - clock()
        if left_s is not None and left_s <= 0:
            return status(ctx, task_id)
        sleep(pause_s if left_s is None else min(pause_s, left_s))
        pause_s = min(pause_s * 2, WAIT_POLL_MAX_S)


def reply(rec: dict) -> str:
    """What a done task answered: an ``agent`` task's reply text, any other task's result."""
    if rec.get("type") == agent_task.TASK_TYPE:
        text = agent_task.reply_of(rec.get("result", ""))
        if text is not None:
            return text
    return rec.get("result", "")


def retry(ctx, task_id: str) -> str:
    """Put a dead task back in the queue with fresh attempts: 'ok', 'missing' or its state."""
    reply = _run(ctx, lua.TASK_RETRY, (), (task_id,))
    outcome = reply[0].decode()
    if outcome == "ok":
        ctx.log.info("task %s is back in the queue", task_id)
        return "ok"
    return reply[1].decode() if outcome == "not_dead" else outcome


def purge(ctx, state: str, older_than_s: float) -> int:
    """Delete ``state`` (done or dead) tasks that ended at least ``older_than_s`` ago; return the count."""
    removed = 0
    while True:
        deleted, examined = _run(ctx, lua.TASK_PURGE, (), (state, _ms(older_than_s), PURGE_BATCH))
        removed += deleted
        if examined < PURGE_BATCH:
            break
    ctx.log.info("purged %d %s task(s) older than %gs", removed, state, older_than_s)
    return removed


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
    of more than 20 digits, nesting at most 100 deep (config.parse_json, ``finite_only``)."""
    from distnode.core import config
    try:
        config.parse_json(text, "", max_depth=100, finite_only=True)
    except config.ConfigError as exc:  # ":LINE:COL: invalid JSON: why", or ": why"
        head, _sep, why = str(exc).partition(": invalid JSON: ") if ": invalid JSON: " in str(exc) else (
            "", "", str(exc)[2:])
        at = " (line %s, column %s)" % tuple(head.split(":")[1:3]) if head.count(":") == 2 else ""
        raise ValueError("%s is not valid JSON: %s%s" % (where, why, at)) from None
    return text
