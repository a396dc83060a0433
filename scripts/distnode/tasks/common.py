"""What every part of the task queue shares: names, the task scripts' common header, refusals.

Every task script (lua/task_*.lua, but task_renew and task_record) starts
with the same KEYS (the state indexes, the delayed set, the dead letters, the
stream set) and ARGV (this node, the group, key prefixes, backoff, retention,
stream length): ``header`` builds them once, from this node's config.
"""

from distnode import lua
from distnode.core import defaults
from distnode.core import keys
from distnode.core import local_state
from distnode.core.errors import NodeIdCollision
from distnode.core.validate import MAX_NODE_ID_LEN, NODE_ID_CHARS
from distnode.redis.errors import CollisionError, ResponseError

GROUP = keys.TASK_GROUP
STATES = ("pending", "running", "done", "dead")
FINAL_STATES = ("done", "dead")
NAME_CHARS, MAX_NAME_LEN = NODE_ID_CHARS, MAX_NODE_ID_LEN  # names end up in keys, like node ids


def check_name(value: str, what: str) -> str:
    """Task types (and node ids, labels) end up in key names and environments: [A-Za-z0-9._-]{1,64}."""
    if not value or len(value) > MAX_NAME_LEN or any(ch not in NAME_CHARS for ch in value):
        raise ValueError("%s must be 1 to %d characters of letters, digits, '.', '_' and '-', got %r"
                         % (what, MAX_NAME_LEN, value))
    return value


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds, as the scripts take durations."""
    return int(round(seconds * 1000))


def header(ctx) -> tuple:
    """(KEYS, ARGV) every task script starts with (see the header of lua/task_submit.lua)."""
    t = ctx.cfg["tasks"]
    ks = (keys.task_index("pending"), keys.task_index("running"), keys.task_index("done"),
          keys.task_index("dead"), keys.task_delayed(), keys.task_dead(), keys.task_streams())
    args = (ctx.node_id, GROUP, keys.task(""), keys.task_idempotency(""), ms(t["backoff_base_s"]),
            ms(t["backoff_max_s"]), max(1, ms(t["done_ttl_s"])), t["stream_maxlen"])
    return ks, args


def end_latch() -> tuple:
    """The ARGV a script that may end a task, or take an ended one back or away, passes last
    (``end_latch`` in lua/include/task_lib.lua): the latch key prefix and the latch's ttl ms."""
    return keys.task_ended(""), defaults.TASK_END_LATCH_TTL_MS


def run_script(ctx, name: str, extra_keys=(), extra_args=()):
    """Run task script ``name`` with the common header and its own keys and args; its decoded result.

    A CollisionError (this node id is another live process's) is raised as NodeIdCollision.
    """
    ks, args = header(ctx)
    try:
        return lua.run(ctx.redis, name, ks + tuple(extra_keys), args + tuple(extra_args))
    except CollisionError as exc:
        raise collision(ctx, exc) from None


def instance(ctx) -> str:
    """This node's instance token (membership.node_fields): the task scripts refuse another one's worker."""
    token = getattr(ctx, "instance_token", None)
    if token is None:
        token = ctx.instance_token = local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)
    return token


def collision(ctx, exc: CollisionError) -> NodeIdCollision:
    """The NodeIdCollision to raise for a task script's COLLISION refusal."""
    detail = str(exc).partition("COLLISION ")[2] or str(exc)
    return NodeIdCollision("node id %r is already used by another live process (%s): this worker claims, "
                           "finishes and hands back nothing as that node; give this node its own node.id / "
                           "OPENCLAW_NODE_ID, or stop the other one" % (ctx.node_id, detail))


def raise_errors(replies: list) -> list:
    """``replies`` of a plain batch, the first error reply among them raised."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


def outcome_text(outcome: str) -> str:
    """What happens next to a task after an attempt's outcome, in words for the log."""
    return {"retry": "it will be retried", "dead": "attempts used up: moved to the dead letters",
            "requeued": "back in the queue"}.get(outcome, outcome)
