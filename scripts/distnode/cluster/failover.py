"""The leader's failover duties, fenced: mark dead members offline, elect on vacancy, reclaim work.

Used by failover_manager.py (one tick) and by the foreground runner. Every
write goes through a Lua script that checks the lease and epoch in Redis.
"""

from distnode import lua
from distnode.cluster import hooks
from distnode.core import defaults
from distnode.core import keys
from distnode.core import local_state
from distnode.core.errors import NodeIdCollision

def sweep(ctx, epoch: str = ""):
    """Run the fenced sweep over all pages; return (outcome, epoch or detail, newly offline ids, round trips).

    Each page is one ``failover_scan`` script that acts only as the process holding the lease in a
    confirmed term at Redis's epoch; from the second page on it also requires the epoch the first page
    saw, so a sweep whose term ended between pages stops (``fenced``) instead of marking more.
    """
    cursor, marked, trips = "0", [], 0
    token = local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)
    while True:
        page = lua.run(ctx.redis, "failover_scan",
                       (keys.leader(), keys.epoch(), keys.nodes(), keys.events(), keys.heartbeat(ctx.node_id),
                        keys.term()),
                       (ctx.node_id, epoch, cursor, defaults.FAILOVER_PAGE_MEMBERS,
                        ctx.cfg["cluster"]["events_maxlen"], token))
        trips += 1
        if page.outcome == "collision":
            raise NodeIdCollision(
                "node id %r is used by another live process (host %s, pid %s) that holds its record; this one "
                "does not act as leader: give this node its own node.id / OPENCLAW_NODE_ID, or stop the other one"
                % (ctx.node_id, page.host, page.pid))
        if page.outcome != "leader":
            return page.outcome, page.leader or page.epoch, marked, trips
        epoch, cursor = page.epoch, page.cursor
        marked += page.marked
        if cursor == "0":
            return "leader", epoch, marked, trips


def reclaim_tasks(ctx, epoch: int) -> int:
    """Hand the work of dead or stuck workers back to the queue (fenced)."""
    from distnode.tasks import reclaim  # only the leader pays for importing the sweep (~2 ms)
    return reclaim.reclaim(ctx, epoch)


def step(ctx) -> dict:
    """One failover tick for this node (see failover_manager.py); returns what it did."""
    outcome, detail, marked, trips = sweep(ctx)
    elected = None
    if outcome == "vacant":
        # deferred for start-up cost: a tick that finds the lease held never elects; the elector
        # module costs ~1.5-3 ms to import on top of this one (python -X importtime, 2 cores)
        from distnode.cluster.elector import Elector
        obs = Elector(ctx).try_acquire_or_renew()
        elected = obs.outcome
        ctx.log.info("lease was vacant: election ran at once: %s (leader %s, epoch %d)",
                     obs.outcome, obs.leader or "none", obs.epoch)
        if obs.is_leader:
            outcome, detail, marked, more = sweep(ctx, str(obs.epoch))
            trips += more
    result = {"node": ctx.node_id, "role": outcome, "offline_marked": marked, "election": elected}
    if outcome != "leader":
        if outcome in ("stale", "fenced"):
            ctx.log.warning("not acting as leader: %s %s", outcome, detail)
        elif outcome == "unconfirmed":
            ctx.log.info("not acting as leader: the term at epoch %s is not confirmed by replicas yet", detail)
        return result
    epoch = int(detail)
    for node_id in marked:
        ctx.log.warning("node %s is offline (heartbeat expired); marked at epoch %d", node_id, epoch)
        hooks.fire(ctx, "on_node_offline", ctx.node_id, epoch, OFFLINE_NODE_ID=node_id)
    result["epoch"] = epoch
    result["tasks_reclaimed"] = reclaim_tasks(ctx, epoch)
    return result
