"""Which Redis server a node is using, and whether that server keeps its data.

For ``node_manager.py status`` and ``health``: the address (and how it was
found), the server's role, its replicas, and its persistence. One round trip
to the server, plus one to a sentinel when ``redis.sentinels`` is set.

Hosted Redis often refuses ``CONFIG`` (and sometimes ``INFO``): whatever is
refused is reported as unknown, with the server's reason, and never fails the
command. Nothing here writes.
"""

from distnode.redis.errors import RedisError, ResponseError
from distnode.redis.resp import text

MIN_SENTINELS = 3  # fewer cannot keep a majority through the loss of one


def _info_fields(reply) -> dict:
    """``INFO`` text as {key: value}; {} for an error reply."""
    if isinstance(reply, ResponseError):
        return {}
    fields = {}
    for line in text(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


def _config_value(reply):
    """The value of a one-parameter ``CONFIG GET``; None when refused or unknown."""
    if isinstance(reply, ResponseError) or not isinstance(reply, list) or len(reply) < 2:
        return None
    return text(reply[1])


def _replicas(repl: dict) -> list:
    out = []
    for key, value in sorted(repl.items()):
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        item = dict(part.partition("=")[::2] for part in value.split(","))
        out.append({"address": "%s:%s" % (item.get("ip", "?"), item.get("port", "?")),
                    "state": item.get("state", "?"),
                    "lag_s": int(item["lag"]) if item.get("lag", "").isdigit() else None})
    return out


def _persistence(pers: dict, save, appendfsync, refused: str) -> dict:
    aof = pers.get("aof_enabled") == "1" if pers else None
    rdb = bool(save.strip()) if save is not None else None
    parts = []
    if aof:
        parts.append("AOF" + (" (appendfsync %s)" % appendfsync if appendfsync else ""))
    if rdb:
        parts.append("RDB snapshots (save %s)" % save.strip())
    if aof is False and rdb is False:
        detail = "off"
    elif parts:
        detail = " + ".join(parts)
    else:
        detail = "unknown"
    if refused and (rdb is None or aof is None):
        detail += " (%s)" % refused
    return {"aof": aof, "rdb": rdb, "detail": detail}


def _sentinel_state(client) -> dict:
    resolver = client.sentinel
    info = {"master_name": resolver.master_name, "answered_by": resolver.answered_by}
    try:
        state = resolver.master_state()
    except RedisError as exc:
        info["error"] = str(exc)
        return info
    info["flags"] = state.get("flags", "")
    info["sentinels"] = int(state.get("num-other-sentinels", "0") or 0) + 1
    info["quorum"] = int(state.get("quorum", "0") or 0)
    return info


def describe(client) -> dict:
    """What the client's server is: address, role, replicas, persistence, Sentinel view.

    Returns {"address", "role", "master_of" (a replica's master, else None),
    "replicas": [{"address", "state", "lag_s"}], "replicas_online",
    "persistence": {"aof", "rdb" (True/False/None = unknown), "detail"},
    "refused": [reasons], "sentinel": {...} or None}.
    Raises only what the connection itself raises (the server is unreachable).
    """
    repl_raw, pers_raw, save_raw, fsync_raw = client.request([
        ("INFO", "replication"), ("INFO", "persistence"),
        ("CONFIG", "GET", "save"), ("CONFIG", "GET", "appendfsync")])
    refused = ["%s: %s" % (what, reply) for what, reply in
               (("INFO", repl_raw), ("INFO", pers_raw), ("CONFIG GET", save_raw)) if isinstance(reply, ResponseError)]
    repl, pers = _info_fields(repl_raw), _info_fields(pers_raw)
    role = {"slave": "replica"}.get(repl.get("role"), repl.get("role"))
    replicas = _replicas(repl)
    master_of = "%s:%s" % (repl["master_host"], repl.get("master_port", "?")) if "master_host" in repl else None
    config_refused = "CONFIG GET refused: %s" % save_raw if isinstance(save_raw, ResponseError) else ""
    return {
        "address": client.peer,
        "role": role,
        "master_of": master_of,
        "replicas": replicas,
        "replicas_online": sum(1 for r in replicas if r["state"] == "online") if repl else None,
        "persistence": _persistence(pers, _config_value(save_raw), _config_value(fsync_raw), config_refused),
        "refused": refused,
        "sentinel": _sentinel_state(client) if getattr(client, "sentinel", None) is not None else None,
    }


def checks(server: dict, min_replicas_acked: int = 0) -> list:
    """Verdicts on a ``describe`` result: [(check, "ok"|"warn"|"fail", detail)].

    ``fail`` means the cluster cannot work as configured (the server is a
    replica; fewer replicas than ``election.min_replicas_acked``); ``warn``
    means it works but loses more than it should when Redis fails.
    """
    out = []
    role = server["role"]
    if role == "replica":
        out.append(("role", "fail", "%s is a replica of %s: writes fail (point redis.host at the master, or set "
                                    "redis.sentinels)" % (server["address"], server["master_of"])))
    elif role is None:
        out.append(("role", "warn", "%s did not say its role (%s)" % (server["address"], "; ".join(server["refused"]))))
    else:
        out.append(("role", "ok", "%s is a %s" % (server["address"], role)))
    if role != "replica":  # a replica's own replicas say nothing about the cluster's master
        out.append(_replica_check(server, min_replicas_acked))
    out.append(_persistence_check(server["persistence"]))
    if server["sentinel"] is not None:
        out.append(_sentinel_check(server["sentinel"]))
    return out


def _replica_check(server: dict, min_replicas_acked: int) -> tuple:
    online = server["replicas_online"]
    if online is None:
        return ("replicas", "warn", "unknown (%s)" % "; ".join(server["refused"]))
    listed = ", ".join("%s %s%s" % (r["address"], r["state"], "" if r["lag_s"] is None else " lag %ds" % r["lag_s"])
                       for r in server["replicas"])
    if online < min_replicas_acked:
        return ("replicas", "fail", "%d online but election.min_replicas_acked is %d: no new leader can be confirmed%s"
                % (online, min_replicas_acked, " (%s)" % listed if listed else ""))
    if online == 0:
        return ("replicas", "warn", "none: if this Redis is lost, so are the lease, the epoch and the members "
                                    "(add a replica and Sentinel, see docs/en/production.md)")
    if min_replicas_acked and online == min_replicas_acked:
        # a failover promotes one replica and leaves one fewer; losing one replica does the same
        return ("replicas", "warn", "%d online and election.min_replicas_acked is %d: after a failover (or the loss "
                                    "of one replica) no new leader can be confirmed; run at least %d replicas (%s)"
                % (online, min_replicas_acked, min_replicas_acked + 1, listed))
    return ("replicas", "ok", "%d online (%s)" % (online, listed))


def _persistence_check(pers: dict) -> tuple:
    if pers["aof"] is False and pers["rdb"] is False:
        return ("persistence", "warn", "off: a restart empties Redis; members re-register and epochs still only "
                                       "grow (nodes remember them), but the lease and queued work are lost")
    if pers["aof"] is None and pers["rdb"] is None:
        return ("persistence", "warn", "unknown: %s" % pers["detail"])
    if not pers["aof"] and pers["rdb"] is None:
        return ("persistence", "warn", "AOF off, RDB unknown: %s" % pers["detail"])
    return ("persistence", "ok", pers["detail"])


def _sentinel_check(sentinel: dict) -> tuple:
    asked = "master %r via %s" % (sentinel["master_name"], sentinel["answered_by"] or "?")
    if "error" in sentinel:
        return ("sentinel", "warn", "%s; SENTINEL MASTER failed: %s" % (asked, sentinel["error"]))
    flags = sentinel["flags"]
    if "down" in flags or "failover" in flags:
        return ("sentinel", "warn", "%s: flags %s" % (asked, flags))
    if sentinel["sentinels"] < MIN_SENTINELS:
        return ("sentinel", "warn", "%s: only %d sentinel(s) know this master; run at least %d on separate machines"
                % (asked, sentinel["sentinels"], MIN_SENTINELS))
    return ("sentinel", "ok", "%s: %d sentinels, quorum %d" % (asked, sentinel["sentinels"], sentinel["quorum"]))


def summary_lines(server: dict, min_replicas_acked: int = 0) -> list:
    """Lines for the status table: where the node writes, and any warning about it."""
    replicas = server["replicas_online"]
    head = "redis: %s (%s, %s replica%s online, persistence: %s)" % (
        server["address"], server["role"] or "role unknown", "?" if replicas is None else replicas,
        "" if replicas == 1 else "s", server["persistence"]["detail"])
    lines = [head]
    sentinel = server["sentinel"]
    if sentinel is not None:
        known = "" if "error" in sentinel else ", %d sentinels, quorum %d" % (sentinel["sentinels"], sentinel["quorum"])
        lines.append("       via Sentinel master %r (asked %s%s)" % (
            sentinel["master_name"], sentinel["answered_by"] or "?", known))
    lines += ["warning: %s: %s" % (name, detail) for name, verdict, detail in checks(server, min_replicas_acked)
              if verdict != "ok"]
    return lines
