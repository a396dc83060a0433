"""A node joins the cluster and leaves it: register, and leave with its tasks handed back.

Leaving lives here, not in membership.py, because it needs the task queue
(the tasks delivered to this node go back first) while membership is read by
every heartbeat tick, which must not import the queue. Nothing here is
imported by a tick.

Guarantee: only the process that owns this node id's record (its instance
token) leaves as that node; another process with the same id (a copied
config) raises NodeIdCollision and changes nothing, tasks included.
"""

from distnode import lua
from distnode.cluster import membership
from distnode.core import keys
from distnode.core import local_state
from distnode.core.errors import NodeIdCollision
from distnode.redis.errors import WrongTypeError
from distnode.tasks import worker


def register(ctx) -> dict:
    """Join (or refresh): one heartbeat; {"node", "registered", "time" (Redis's time of the beat)}."""
    now_s = membership.beat(ctx)
    ctx.log.info("registered node %s", ctx.node_id)
    return {"node": ctx.node_id, "registered": True, "time": now_s}


def leave(ctx, handed_back_before: int = 0) -> dict:
    """Leave gracefully: hand back pending tasks, release the lease, delete hb, mark ``left``.

    ``handed_back_before``: tasks this process already gave back while stopping (a ``--foreground``
    worker whose running handler it killed); the count reported is theirs plus those handed back here.

    Only as the process that owns this node id's record (its instance token):
    a second process with the same id (a copied config) that stops or
    deregisters raises NodeIdCollision and changes nothing, tasks included.
    With no record at all (pruned, or deleted by an operator) nothing proves
    the id is this process's: no task is handed back and the heartbeat key is
    left alone (leave.lua deletes it only with a record); the lease goes only if
    its term is this process's. The leader's sweep reclaims the id's tasks
    once its heartbeat lapses.
    """
    other = _other_instance(ctx)  # before handing back: the tasks delivered to this id are the owner's
    if other:
        raise _not_mine(ctx, other)
    if other is False:
        ctx.log.warning("node %s has no record in the cluster (pruned or deleted): no task handed back, its "
                        "heartbeat key left to lapse", ctx.node_id)
    handed_back = handed_back_before + (0 if other is False else worker.hand_back(ctx))
    result = lua.run(ctx.redis, "leave", (keys.leader(), keys.epoch(), keys.heartbeat(ctx.node_id), keys.nodes(),
                                          keys.events(), keys.term()),
                     (ctx.node_id, ctx.cfg["cluster"]["events_maxlen"],
                      local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)))
    if result.outcome == "collision":  # the record changed hands since the check above
        raise _not_mine(ctx, {"host": result.host, "pid": result.pid})
    ctx.log.info("left the cluster (lease released: %s, tasks handed back: %d)", result.released, handed_back)
    return {"node": ctx.node_id, "left": result.had_record, "released_lease": result.released,
            "tasks_handed_back": handed_back}


def _other_instance(ctx):
    """The record of this node id if it names another instance token (a second process with this
    id owns it), else None; False when there is no record (nothing proves the id is this process's)."""
    try:
        raw = ctx.redis.execute("HGET", keys.nodes(), ctx.node_id)
    except WrongTypeError:
        return None  # leave.lua's own check names the key
    if raw is None:
        return False
    record = membership.parse_record(raw)
    token = local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)
    if record and isinstance(record.get("instance"), str) and record["instance"] != token:
        return record
    return None


def _not_mine(ctx, other: dict) -> NodeIdCollision:
    return NodeIdCollision(
        "node id %r belongs to another process (host %s, pid %s): this one did not leave and changed "
        "nothing (a copied config? give this node its own node.id / OPENCLAW_NODE_ID)"
        % (ctx.node_id, other.get("host", "?"), other.get("pid", "?")))
