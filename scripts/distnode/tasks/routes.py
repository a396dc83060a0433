"""Routing: which stream a task goes to, and which streams a worker reads.

A task's stream is fixed at submit. A task for one node (``--node``) goes to
that node's stream; a task that requires labels (``--require``, and the
``agent`` capability for ``agent`` tasks) goes to the stream of its
requirement, ``openclaw:tasks:route:<labels sorted, joined by ','>``; any
other task goes to the shared stream. A worker reads its own stream, the
route streams whose every label it offers (``node.labels`` plus detected
capabilities), most specific first, then the shared stream, so it is never
delivered a task it may not run. The worker learns the routes from
task_prepare and keeps them in ``<run_dir>/task-routes.<node>.json``, so an
idle tick stays one round trip.
"""

import os

from distnode.cluster import membership
from distnode.core import keys
from distnode.core import local_state
from distnode.tasks import agent_task
from distnode.tasks.common import check_name

MAX_REQUIRE = 16  # labels one task may require


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


def stream_for(target: str, needs: str) -> str:
    """The stream a task goes to: its target's, its requirement's, or the shared one."""
    return keys.task_stream(target) if target or not needs else keys.task_route(needs)


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
    """The requirements this node's worker last learnt from task_prepare (kept on disk between ticks)."""
    routes = getattr(ctx, "task_routes", None)
    if routes is None:
        saved = local_state.read_json(_routes_path(ctx), [])
        routes = ctx.task_routes = [r for r in saved if isinstance(r, str)] if isinstance(saved, list) else []
    return routes


def learn_routes(ctx, routes: list) -> bool:
    """Remember the routes task_prepare named; True if they changed (the caller reads again)."""
    if routes == known_routes(ctx):
        return False
    ctx.task_routes = routes
    try:
        local_state.atomic_write_json(_routes_path(ctx), routes)
    except OSError as exc:  # only costs a round trip per tick: the next run learns them again
        ctx.log.warning("cannot save the task routes to %s: %s", _routes_path(ctx), exc.strerror or exc)
    return True
