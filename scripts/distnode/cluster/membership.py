"""Who is in the cluster and in what state, judged by Redis's TTLs and clock.

States:
- ``online``: the heartbeat key exists and the last beat is recent;
- ``suspect``: the key exists but a beat was missed (older than
  ``defaults.SUSPECT_AFTER_INTERVALS`` heartbeat intervals);
- ``offline``: the key has expired (heartbeat_ttl after the last beat);
- ``left``: the node deregistered;
- ``invalid``: the hash holds something that is not our JSON (shown, never trusted).
"""

import json
import os

from distnode.core import keys
from distnode.core import local_state
from distnode import lua
from distnode.core.config import VERSION
from distnode.core.defaults import SUSPECT_AFTER_INTERVALS
from distnode.core.errors import NodeIdCollision
from distnode.core.validate import MAX_NODE_ID_LEN, NODE_ID_CHARS
from distnode.redis.errors import WrongTypeError

SHOWN_BYTES = 32  # of a foreign value: enough to recognise it, never a flood on one line


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


def parse_record(raw):
    """A member record as a dict, or None when it is not a JSON object (foreign or malformed)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def snapshot(client) -> dict:
    """Members with their states, the leader and the epoch, in two round trips.

    Returns {"time", "leader", "epoch", "nodes": [{"id", "state", "age_s", "record"}...], "foreign"}.
    Another program's values never raise: a leader key that is not a node id reads as no leader, an
    epoch key that is not an epoch as 0, a record that is not a JSON object as state ``invalid``;
    ``foreign`` maps each of "leader", "epoch", "records" that holds such a value to one line (the
    value shown safely, and what to do about it).
    """
    now, leader, epoch, flat = client.request([("TIME",), ("GET", keys.leader()), ("GET", keys.epoch()),
                                               ("HGETALL", keys.nodes())])
    for reply, key, kind in ((now, "", ""), (leader, keys.leader(), "string"), (epoch, keys.epoch(), "string"),
                             (flat, keys.nodes(), "hash")):
        if isinstance(reply, WrongTypeError):
            raise WrongTypeError("WRONGTYPE %s is not a %s: another program wrote there (see the key "
                                 "schema, docs/en/schema.md)" % (key, kind))
        if isinstance(reply, Exception):
            raise reply
    now_s = int(now[0]) + int(now[1]) / 1e6
    ids = [k.decode("utf-8", "replace") for k in flat[::2]]
    pttls = client.request([("PTTL", keys.heartbeat(i)) for i in ids]) if ids else []
    nodes = []
    for node_id, raw, pttl in zip(ids, flat[1::2], pttls):
        record = parse_record(raw)
        last = record.get("last_heartbeat") if record else None
        nodes.append({
            "id": node_id,
            "state": node_state(record, pttl if isinstance(pttl, int) else -2, now_s),
            "age_s": round(now_s - last, 3) if isinstance(last, (int, float)) else None,
            "record": record if record is not None else {"raw": raw.decode("utf-8", "replace")[:200]},
        })
    nodes.sort(key=lambda n: n["id"])
    leader_id, leader_fault = read_leader(leader)
    epoch_n, epoch_fault = _read_epoch(epoch)
    foreign = {what: line for what, line in (("leader", leader_fault), ("epoch", epoch_fault),
                                              ("records", _invalid_records(nodes))) if line}
    return {"time": now_s, "leader": leader_id, "epoch": epoch_n, "nodes": nodes, "foreign": foreign}


def shown_bytes(raw: bytes) -> str:
    """A value from Redis as one printable, quoted line: UTF-8 as text, any other byte and every control
    character escaped (\\xNN), cut after SHOWN_BYTES bytes."""
    text = raw[:SHOWN_BYTES].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c)
                   for c in text)
    return '"%s"%s' % (text, "..." if len(raw) > SHOWN_BYTES else "")


def read_leader(raw):
    """(the leader's node id or None, None) from the leader key's value; (None, one line naming the
    value) when it is not a node id (another program wrote there)."""
    if raw is None:
        return None, None
    text = raw.decode("utf-8", "replace")
    if 0 < len(raw) <= MAX_NODE_ID_LEN and all(ch in NODE_ID_CHARS for ch in text):
        return text, None
    return None, ("%s holds %s, not a node id (another program wrote there): delete it and the election "
                  "elects a leader again" % (keys.leader(), shown_bytes(raw)))


def _read_epoch(raw):
    """(the epoch, None); (0, one line naming the value) when the epoch key holds something that is not
    an epoch (the rule elect.lua's epoch_guard applies: a plain integer below 10^13)."""
    if raw is None:
        return 0, None
    if raw == b"0" or (len(raw) <= 13 and raw[:1] in b"123456789" and raw.isdigit()):
        return int(raw), None
    return 0, ("%s holds %s, not an epoch (a plain integer below 10^13): set it to the last epoch the "
               "cluster used, or delete it and let the nodes restore it" % (keys.epoch(), shown_bytes(raw)))


def _invalid_records(nodes: list):
    """One line naming the members whose record is not a JSON object, and how to forget them; or None."""
    bad = [node["id"] for node in nodes if node["state"] == "invalid"]
    if not bad:
        return None
    names = ", ".join(shown_bytes(name.encode("utf-8", "replace")) for name in bad[:10])
    one = len(bad) == 1
    return ("%d member record%s in %s %s (%s%s; another program wrote there): `node_manager.py prune "
            "--invalid` forgets %s (not one whose hb:<id> key exists)" % (
                len(bad), "" if one else "s", keys.nodes(), "is not a JSON object" if one else "are not JSON objects",
                names, ", ..." if len(bad) > 10 else "", "it" if one else "them"))


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
        "interval": cfg.heartbeat_interval_s,
        "ttl": cfg.heartbeat_ttl_s,
        "instance": local_state.instance_token(cfg.run_dir, ctx.node_id),
    }
    return json.dumps(fields, separators=(",", ":"))


def beat(ctx) -> float:
    """Refresh this node's record and heartbeat key; return Redis's time of the beat."""
    ttl_ms = int(ctx.cfg.heartbeat_ttl_s * 1000)
    remembered = local_state.remembered_epoch(ctx.cfg.run_dir, ctx.node_id, ctx.log)
    bootstrap_wait_ms = int(ctx.cfg.heartbeat_interval_s * 1000)  # one round, as the elector's
    result = lua.run(ctx.redis, "heartbeat",
                     (keys.nodes(), keys.heartbeat(ctx.node_id), keys.epoch(), keys.bootstrap()),
                     (ctx.node_id, ttl_ms, node_fields(ctx), remembered, bootstrap_wait_ms))
    if result.outcome == "collision":
        other = parse_record(result.other) or {}
        raise NodeIdCollision(
            "node id %r is already used by another live process (host %s, pid %s); give this node its own "
            "node.id / OPENCLAW_NODE_ID, or stop the other one" % (ctx.node_id, other.get("host", "?"),
                                                                   other.get("pid", "?")))
    if result.epoch > remembered:
        local_state.remember_epoch(ctx.cfg.run_dir, ctx.node_id, result.epoch)
    return result.now_s


def tick(ctx) -> dict:
    """The heartbeat job's tick (``run/jobs.py``): one beat, logged."""
    now_s = beat(ctx)
    ctx.log.info("heartbeat ok (ttl %gs)", ctx.cfg.heartbeat_ttl_s)
    return {"node": ctx.node_id, "ok": True, "time": now_s}
