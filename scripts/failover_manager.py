#!/usr/bin/env python3
"""Failover: the leader marks dead nodes offline and hands their work to live ones.

Runs on every node each tick; only the leader acts, and every write it makes
is fenced (a Lua script checks, in Redis, that it still holds the lease at
its epoch). One tick:
  1. sweep the members page by page (HSCAN inside one script per page, no
     per-node round trips): a member whose ``hb:<id>`` key has expired is
     marked ``offline`` once, with an event on ``openclaw:cluster:events``,
     and the ``on_node_offline`` hook runs;
  2. if the lease is vacant, run the election at once instead of waiting
     for this node's leader_election tick;
  3. reclaim tasks held by offline or departed nodes, and tasks stuck
     longer than their timeout plus a grace on live ones.
A follower's tick is one round trip.
"""

import sys

import hooks
import keys
import lua
import runner

PAGE_SIZE = 2000


def sweep(ctx, epoch: str = ""):
    """Run the fenced sweep over all pages; return (outcome, epoch, newly offline ids, round trips)."""
    cursor, marked, trips = "0", [], 0
    while True:
        reply = lua.FAILOVER_SCAN(ctx.redis, (keys.leader(), keys.epoch(), keys.nodes(), keys.events(),
                                              keys.heartbeat(ctx.node_id)),
                                  (ctx.node_id, epoch, cursor, PAGE_SIZE, ctx.cfg["cluster"]["events_maxlen"]))
        trips += 1
        outcome = reply[0].decode()
        if outcome != "leader":
            detail = reply[1].decode() if len(reply) > 1 else ""
            return outcome, detail, marked, trips
        epoch, cursor = reply[1].decode(), reply[2].decode()
        marked += [m.decode() for m in reply[3]]
        if cursor == "0":
            return "leader", epoch, marked, trips


def reclaim_tasks(ctx, epoch: int) -> int:
    """Hand the work of dead or stuck workers back to the queue (fenced); 0 without tasks."""
    try:
        import taskq
    except ImportError:
        return 0
    return taskq.reclaim(ctx, epoch)


def tick(ctx) -> dict:
    outcome, detail, marked, trips = sweep(ctx)
    elected = None
    if outcome == "vacant":
        from elector import Elector
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
        return result
    epoch = int(detail)
    for node_id in marked:
        ctx.log.warning("node %s is offline (heartbeat expired); marked at epoch %d", node_id, epoch)
        hooks.fire(ctx, "on_node_offline", ctx.node_id, epoch, OFFLINE_NODE_ID=node_id)
    result["epoch"] = epoch
    result["tasks_reclaimed"] = reclaim_tasks(ctx, epoch)
    return result


def main(argv=None) -> int:
    return runner.main("failover_manager", tick, __doc__, argv=argv,
                       interval_s=lambda cfg: cfg["node"]["heartbeat_interval"])


if __name__ == "__main__":
    sys.exit(main())
