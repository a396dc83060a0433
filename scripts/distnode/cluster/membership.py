"""Who is in the cluster and in what state, judged by Redis's TTLs and clock.

States:
- ``online``: the heartbeat key exists and the last beat is recent;
- ``suspect``: the key exists but a beat was missed (older than 1.5 intervals);
- ``offline``: the key has expired (heartbeat_ttl after the last beat);
- ``left``: the node deregistered;
- ``invalid``: the hash holds something that is not our JSON (shown, never trusted).
"""

import json
import os

from distnode.core import keys
from distnode.core import local_state
from distnode.lua import scripts as lua
from distnode.core.config import VERSION
from distnode.core.errors import NodeIdCollision
from distnode.redis.client import WrongTypeError

SUSPECT_AFTER_INTERVALS = 1.5


def node_state(record, hb_pttl_ms: int, now_s: float) -> str:
    """The state of one member from its record, its heartbeat key's PTTL and Redis's time."""
    if not isinstance(record, dict):
        return "invalid"
    if record.get("status") == "left":
        return "left"
    if hb_pttl_ms == -2:
        return "offline"
    interval = record.get("interval")
    last = record.get("last_heartbeat")
    if isinstance(interval, (int, float)) and isinstance(last, (int, float)):
        if now_s - last > interval * SUSPECT_AFTER_INTERVALS:
            return "suspect"
    return "online"


def _decode(raw):
    """A member record as a dict, or None when it is not a JSON object (foreign or malformed)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def snapshot(client) -> dict:
    """Members with their states, the leader and the epoch, in two round trips.

    Returns {"time", "leader", "epoch", "nodes": [{"id", "state", "age_s", "record"}...]}.
    """
    now, leader, epoch, flat = client.request([("TIME",), ("GET", keys.leader()), ("GET", keys.epoch()),
                                                ("HGETALL", keys.nodes())])
    for reply, key, kind in ((now, "", ""), (leader, keys.leader(), "string"), (epoch, keys.epoch(), "string"),
                             (flat, keys.nodes(), "hash")):
        if isinstance(reply, WrongTypeError):
            raise WrongTypeError("WRONGTYPE %s is not a %s: another program wrote there (see the README's key "
                                 "schema)" % (key, kind))
        if isinstance(reply, Exception):
            raise reply
    now_s = int(now[0]) + int(now[1]) / 1e6
    ids = [k.decode("utf-8", "replace") for k in flat[::2]]
    pttls = client.request([("PTTL", keys.heartbeat(i)) for i in ids]) if ids else []
    nodes = []
    for node_id, raw, pttl in zip(ids, flat[1::2], pttls):
        record = _decode(raw)
        last = record.get("last_heartbeat") if record else None
        nodes.append({
            "id": node_id,
            "state": node_state(record, pttl if isinstance(pttl, int) else -2, now_s),
            "age_s": round(now_s - last, 3) if isinstance(last, (int, float)) else None,
            "record": record if record is not None else {"raw": raw.decode("utf-8", "replace")[:200]},
        })
    nodes.sort(key=lambda n: n["id"])
    return {"time": now_s, "leader": leader.decode() if leader else None,
            "epoch": int(epoch) if epoch else 0, "nodes": nodes}


def capabilities(cfg) -> list:
    """What this node can do beyond plain handlers: ``agent`` when the OpenClaw CLI is here."""
    cli = cfg["agent"]["cli"]
    dirs = [""] if os.sep in cli else os.environ.get("PATH", "").split(os.pathsep)
    for folder in dirs:
        path = os.path.join(folder, cli)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return ["agent"]
    return []


def node_fields(ctx) -> str:
    """This node's own part of its record, as compact JSON (the script adds status and times)."""
    cfg = ctx.cfg
    fields = {
        "id": ctx.node_id,
        "host": cfg["node"]["host"],
        "pid": os.getpid(),
        "version": VERSION,
        "labels": cfg["node"]["labels"],
        "capabilities": capabilities(cfg),
        "interval": cfg["node"]["heartbeat_interval"],
        "ttl": cfg["node"]["heartbeat_ttl"],
        "instance": local_state.instance_token(cfg.run_dir, ctx.node_id),
    }
    return json.dumps(fields, separators=(",", ":"))


def beat(ctx) -> float:
    """Refresh this node's record and heartbeat key; return Redis's time of the beat."""
    ttl_ms = int(ctx.cfg["node"]["heartbeat_ttl"] * 1000)
    remembered = local_state.remembered_epoch(ctx.cfg.run_dir, ctx.node_id, ctx.log)
    bootstrap_wait_ms = int(ctx.cfg["node"]["heartbeat_interval"] * 1000)  # one round, as the elector's
    status, detail, *rest = lua.HEARTBEAT(ctx.redis, (keys.nodes(), keys.heartbeat(ctx.node_id), keys.epoch(),
                                                      keys.bootstrap()),
                                          (ctx.node_id, ttl_ms, node_fields(ctx), remembered, bootstrap_wait_ms))
    if status == b"collision":
        other = _decode(detail) or {}
        raise NodeIdCollision(
            "node id %r is already used by another live process (host %s, pid %s); give this node its own "
            "node.id / OPENCLAW_NODE_ID, or stop the other one" % (ctx.node_id, other.get("host", "?"),
                                                                    other.get("pid", "?")))
    if int(rest[0]) > remembered:
        local_state.remember_epoch(ctx.cfg.run_dir, ctx.node_id, int(rest[0]))
    return float(detail)


def _other_instance(ctx):
    """The record of this node id if it names another instance token (a second process with this
    id owns it), else None; False when there is no record (nothing proves the id is this process's)."""
    try:
        raw = ctx.redis.execute("HGET", keys.nodes(), ctx.node_id)
    except WrongTypeError:
        return None  # LEAVE's own check names the key
    if raw is None:
        return False
    record = _decode(raw)
    token = local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)
    if record and isinstance(record.get("instance"), str) and record["instance"] != token:
        return record
    return None


def _not_mine(ctx, other: dict) -> NodeIdCollision:
    return NodeIdCollision(
        "node id %r belongs to another process (host %s, pid %s): this one did not leave and changed "
        "nothing (a copied config? give this node its own node.id / OPENCLAW_NODE_ID)"
        % (ctx.node_id, other.get("host", "?"), other.get("pid", "?")))


def leave(ctx) -> dict:
    """Leave gracefully: hand back pending tasks, release the lease, delete hb, mark ``left``.

    Only as the process that owns this node id's record (its instance token):
    a second process with the same id (a copied config) that stops or
    deregisters raises NodeIdCollision and changes nothing, tasks included.
    With no record at all (pruned, or deleted by an operator) nothing proves
    the id is this process's: no task is handed back and the heartbeat key is
    left alone (LEAVE deletes it only with a record); the lease goes only if
    its term is this process's. The leader's sweep reclaims the id's tasks
    once its heartbeat lapses.
    """
    from distnode.tasks import queue as taskq  # membership is imported by every heartbeat tick; the queue only when leaving
    other = _other_instance(ctx)  # before handing back: the tasks delivered to this id are the owner's
    if other:
        raise _not_mine(ctx, other)
    if other is False:
        ctx.log.warning("node %s has no record in the cluster (pruned or deleted): no task handed back, its "
                        "heartbeat key left to lapse", ctx.node_id)
    handed_back = 0 if other is False else taskq.hand_back(ctx)
    reply = lua.LEAVE(ctx.redis, (keys.leader(), keys.epoch(), keys.heartbeat(ctx.node_id), keys.nodes(),
                                  keys.events(), keys.term()),
                      (ctx.node_id, ctx.cfg["cluster"]["events_maxlen"],
                       local_state.instance_token(ctx.cfg.run_dir, ctx.node_id)))
    if reply[0] == b"collision":  # the record changed hands since the check above
        raise _not_mine(ctx, {"host": reply[1].decode("utf-8", "replace"), "pid": reply[2].decode("utf-8", "replace")})
    released, had_record = reply[1], reply[2]
    ctx.log.info("left the cluster (lease released: %s, tasks handed back: %d)", bool(released), handed_back)
    return {"node": ctx.node_id, "left": bool(had_record), "released_lease": bool(released),
            "tasks_handed_back": handed_back}
