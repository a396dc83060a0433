"""The cluster snapshot: published by the leader (fenced), mirrored to a local file on every node.

The mirror lets an agent read the cluster without Redis. It is rewritten
(temp file, fsync, rename) only when the leader published a new version, and
never with an epoch below one this node has seen. A follower's tick is one
round trip; the leader's three (two to gather the members, one to publish).
"""

import json
import os

from distnode.core import keys
from distnode.core import local_state
from distnode import lua
from distnode.cluster import membership
from distnode.core.errors import TickError
from distnode.redis.errors import FencedError, StaleError

SNAPSHOT_FORMAT = 1
NODE_FIELDS = ("host", "labels", "capabilities", "version", "started_at", "offline_at", "left_at")


def mirror_path(cfg) -> str:
    """``cluster.mirror_file`` (a relative path is in the log folder), or <run_dir>/cluster-<id>.json."""
    path = cfg["cluster"]["mirror_file"]
    if not path:
        return os.path.abspath(os.path.join(cfg.run_dir, "cluster-%s.json" % cfg.node_id))
    return os.path.abspath(os.path.join(cfg.log_dir, os.path.expanduser(path)))


def snapshot_content(snap: dict) -> str:
    """What the leader publishes of a membership snapshot: only what stays put while the
    cluster does (no heartbeat ages, no pids), so an unchanged cluster is an unchanged text."""
    nodes = []
    for node in snap["nodes"]:
        entry = {"id": node["id"], "state": node["state"]}
        if node["state"] != "invalid":
            entry.update((k, node["record"][k]) for k in NODE_FIELDS if k in node["record"])
        nodes.append(entry)
    content = {"epoch": snap["epoch"], "format": SNAPSHOT_FORMAT, "leader": snap["leader"], "nodes": nodes}
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def publish(ctx, known: tuple) -> tuple:
    """Leader: gather the members (2 round trips), publish fenced (1). Returns (role, PublishState or None).

    The epoch it writes at is the one Redis showed with this node holding the lease;
    if the lease moved since, the script refuses (role ``fenced``) and nothing changes.
    """
    snap = membership.snapshot(ctx.redis)
    if snap["leader"] != ctx.node_id:
        return "follower", None
    try:
        reply = lua.run(ctx.redis, "publish_state", (keys.leader(), keys.epoch(), keys.term(), keys.state()),
                        (ctx.node_id, snap["epoch"], local_state.instance_token(ctx.cfg.run_dir, ctx.node_id),
                         snapshot_content(snap)) + known)
    except (FencedError, StaleError) as exc:
        ctx.log.warning("snapshot not published: %s", exc)
        return "fenced", None
    return "leader", reply


def exchange(ctx, known: tuple, thinks_leader: bool) -> tuple:
    """(role, reply): the leader publishes, anyone else reads (1 round trip).

    reply is a PublishState (role ``leader``) or a StateRead (lua/results.py): both carry
    epoch, version and doc (None: the mirror is current).
    """
    role = "follower"
    if thinks_leader:
        role, reply = publish(ctx, known)
        if reply is not None:
            return role, reply
    reply = lua.run(ctx.redis, "state_read", (keys.leader(), keys.state()), known)
    if not thinks_leader and reply.leader == ctx.node_id:
        role, published = publish(ctx, known)  # this node leads but its elector's memory lags
        reply = published or reply
    return role, reply


def mirror(ctx, path: str, raw: bytes, floor_epoch: int) -> bool:
    """Write the snapshot to the mirror file, unless its epoch is below one this node has seen."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("epoch"), int):
        raise TickError("the snapshot in %s is not the JSON the leader writes; not mirrored" % keys.state())
    if doc["epoch"] < floor_epoch:
        ctx.log.warning("not mirroring snapshot version %s of epoch %d: this node has seen epoch %d "
                        "(Redis lost data? the next election moves the epoch past it)",
                        doc.get("version"), doc["epoch"], floor_epoch)
        return False
    try:
        local_state.atomic_write_json(path, doc)
    except OSError as exc:
        raise TickError("cannot write the mirror %s: %s (check cluster.mirror_file and the folder's "
                        "permissions)" % (path, exc.strerror or exc)) from None
    if doc["epoch"] > floor_epoch:
        local_state.remember_epoch(ctx.cfg.run_dir, ctx.node_id, doc["epoch"])
    return True


def _election_memory(cfg) -> tuple:
    """(believes it leads, highest epoch seen) from the elector's file on this node."""
    memory = local_state.read_json(local_state.epoch_memory_path(cfg.run_dir, cfg.node_id), None)
    if not isinstance(memory, dict):
        return False, 0
    return memory.get("is_leader") is True, local_state.max_epoch_of(memory)


def _mirrored_version(path: str) -> tuple:
    """(epoch, version) of the mirror file; (0, 0) when it is missing or unreadable."""
    doc = local_state.read_json(path, None)
    if isinstance(doc, dict) and isinstance(doc.get("epoch"), int) and isinstance(doc.get("version"), int):
        return doc["epoch"], doc["version"]
    return 0, 0


def sync(ctx) -> dict:
    """One snapshot tick: the leader publishes (fenced), every node mirrors what changed."""
    path = mirror_path(ctx.cfg)
    thinks_leader, floor_epoch = _election_memory(ctx.cfg)
    trips = ctx.redis.round_trips
    role, reply = exchange(ctx, _mirrored_version(path), thinks_leader)
    epoch, version, doc = reply.epoch, reply.version, reply.doc
    result = {"node": ctx.node_id, "role": role, "epoch": epoch, "version": version,
              "mirror_file": path, "mirrored": False}
    if role == "leader":
        result["published"] = reply.outcome == "published"
        if result["published"]:
            ctx.log.info("published cluster snapshot version %d (epoch %d)", version, epoch)
    if doc is not None:
        result["mirrored"] = mirror(ctx, path, doc, floor_epoch)
        if result["mirrored"]:
            ctx.log.info("mirrored snapshot version %d (epoch %d) to %s", version, epoch, path)
    elif version == 0:
        ctx.log.debug("no snapshot published yet (is a leader running state_sync.py?)")
    result["round_trips"] = ctx.redis.round_trips - trips
    return result
