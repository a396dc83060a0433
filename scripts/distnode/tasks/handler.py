"""Running one claimed attempt's handler: the argv or agent turn, its environment, its lease.

The one place task types are dispatched: the built-in ``agent`` type (an
OpenClaw agent turn, agent_task.py; a ``tasks.handlers`` entry of that name
is not used), else the ``tasks.handlers`` argv. Either runs through
procs.spawn: no shell, payload on stdin, an environment without Redis
credentials, output bounded, its process group killed at the task's
timeout, on this worker's stop, when this worker dies, and when the attempt
lease is not renewed (so it never runs beside the attempt that replaces it).
"""

import os
import time

from distnode import lua
from distnode.core import defaults
from distnode.core import keys
from distnode.procs import env as child_env
from distnode.procs import records
from distnode.procs import spawn
from distnode.redis.errors import RedisError
from distnode.tasks import agent_task
from distnode.tasks.common import instance, ms



def run_handler(ctx, task) -> spawn.Outcome:
    """Run the task's handler (see the module docstring); a spawn.Outcome.

    Output is read up to ``result_max_bytes`` + 1 bytes (so the caller can
    tell it was cut; the rest is read and dropped). Its environment holds
    TASK_ID, TASK_TYPE, TASK_ATTEMPT, TASK_MAX_ATTEMPTS and NODE_ID.
    """
    if task.type == agent_task.TASK_TYPE:
        return agent_task.run(ctx, task, handler_env(ctx, task), lease=attempt_lease(ctx, task),
                              record=handler_record(ctx))
    argv = ctx.cfg["tasks"]["handlers"].get(task.type)
    if not argv:
        return spawn.Outcome(False, b"", "no handler for task type %r on node %s (add it to tasks.handlers)" % (
            task.type, ctx.node_id))
    keep = min(ctx.cfg["tasks"]["result_max_bytes"] + 1, ctx.cfg["tasks"]["max_output_bytes"])
    return spawn.run(argv, task.payload, handler_env(ctx, task), task.timeout_s, keep,
                     lease=attempt_lease(ctx, task), record=handler_record(ctx),
                     should_stop=lambda: ctx.stopping)


def handler_env(ctx, task) -> dict:
    """This process's environment without Redis credentials (procs.env.clean_env), plus TASK_ID,
    TASK_TYPE, TASK_ATTEMPT, TASK_MAX_ATTEMPTS and NODE_ID."""
    return child_env.clean_env(ctx.cfg, dict(TASK_ID=task.id, TASK_TYPE=task.type, TASK_ATTEMPT=str(task.attempt),
                                             TASK_MAX_ATTEMPTS=str(task.max_attempts), NODE_ID=ctx.node_id))


def lease_ttl_s(ctx) -> float:
    """An attempt lease lasts node.heartbeat_ttl unrenewed: a crashed worker's task is moved that soon."""
    return float(ctx.cfg.heartbeat_ttl_s)


def attempt_lease(ctx, task) -> spawn.Lease:
    """The spawn.Lease of a claimed attempt: local end ``claimed_at + ttl - margin``, renewed
    (task_renew, one round trip) every ttl/3 while the handler runs.

    Each renewal's new local end is counted from when its request was SENT, so the handler's
    supervisor always kills it at least ``margin`` before Redis lets the lease lapse (when
    the leader's reclaim or a claim may move the attempt).
    """
    ttl_s = lease_ttl_s(ctx)
    local_s = ttl_s * (1 - defaults.TASK_LEASE_MARGIN_FRACTION)
    key, value = keys.task_lease(task.id), "%s %s" % (task.token, instance(ctx))

    def renew():
        sent_at = time.monotonic()
        try:
            held = lua.run(ctx.redis, "task_renew", (key, keys.task(task.id), keys.events()),
                           (value, ms(ttl_s), ctx.cfg["cluster"]["events_maxlen"], ctx.node_id))
        except RedisError as exc:
            ctx.log.warning("task %s: renewing the attempt lease failed: %s", task.id, exc)
            return None
        if not held:
            ctx.log.warning("task %s attempt %d: the attempt lease was lost (reclaimed, handed back or lapsed): "
                            "killing the handler", task.id, task.attempt)
            return 0
        return sent_at + local_s
    return spawn.Lease(task.claimed_at + local_s, ttl_s * defaults.TASK_LEASE_RENEW_FRACTION, renew)


def handler_record(ctx) -> str:
    """Where the worker notes its running handler's process group (spawn.run ``record``)."""
    return os.path.join(ctx.cfg.run_dir, "task-handler.%s.json" % ctx.node_id)


def kill_leftover_handler(ctx) -> None:
    """Kill the process group of a handler an earlier worker of this node left (it and its
    supervisor were killed), before anything new is claimed here."""
    left = records.kill_leftover(handler_record(ctx))
    if left:
        ctx.log.warning("killed the process group %s a killed worker's handler left running", left)
