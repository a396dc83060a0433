"""The leader's sweep: move the tasks of workers that died, hung or left, and repair lost entries.

One fenced script call (task_reclaim), repeated only while a batch came back
full, so round trips do not grow with the number of nodes. What it moves (see
tasks/__init__.py): PEL entries of consumers whose heartbeat is gone and
entries idle past timeout + ``reclaim_grace_s``; running tasks whose attempt
lease lapsed in Redis (never earlier, whatever a heartbeat says); pending
tasks whose entry cannot be delivered any more get a new one.

Guarantee: only the leader of ``epoch`` with a confirmed term moves
anything; a lease lost meanwhile (FencedError) stops the sweep with nothing
changed.
"""

from distnode import lua
from distnode.core import defaults
from distnode.core import keys
from distnode.redis.errors import FencedError
from distnode.tasks.common import end_latch, header, instance, ms, outcome_text



def reclaim(ctx, epoch: int) -> int:
    """The leader's fenced sweep; returns how many tasks it moved."""
    grace_ms = ms(ctx.cfg["tasks"]["reclaim_grace_s"])
    moved = 0
    for _ in range(defaults.TASK_RECLAIM_MAX_CALLS):
        ks, args = header(ctx)
        try:
            result = lua.run(ctx.redis, "task_reclaim",
                             (keys.leader(), keys.epoch(), keys.term()) + ks + (keys.task_sweep(), keys.events()),
                             (ctx.node_id, str(epoch), instance(ctx)) + args
                             + (grace_ms, defaults.TASK_RECLAIM_BATCH_ITEMS, keys.heartbeat(""), keys.task_lease(""),
                                ctx.cfg["cluster"]["events_maxlen"]) + end_latch())
        except FencedError as exc:
            ctx.log.warning("task reclaim refused: %s", exc)
            return moved
        for note in result.notes:
            ctx.log.warning("reclaimed task %s: %s; %s", note.task_id, note.reason, outcome_text(note.outcome))
        moved += len(result.notes)
        if not result.more:
            break
    return moved
