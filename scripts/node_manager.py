#!/usr/bin/env python3
"""Manage this node's membership and look at the cluster.

Commands:
  register             join (or refresh): one heartbeat
  deregister           leave gracefully: hand back this node's pending tasks,
                       release the lease if held, delete hb:<id>, mark it `left`
  status               table of members: state, heartbeat age (Redis clock),
                       leader marker, epoch, host, labels (--json for scripts),
                       and the Redis server in use: address, role, replicas,
                       persistence, Sentinel's view
  health               exit 0 healthy, 1 degraded, 2 Redis unreachable; checks
                       Redis, this node's heartbeat, that a leader exists,
                       the local clock against Redis's, and the server: a
                       replica or too few replicas fail, no replica or no
                       persistence warn
  prune --older-than S forget members offline or left for at least S seconds
  check                preflight for start-node.sh: config valid, Redis reachable,
                       credentials accepted, Redis version at least 5.0
  run                  every tick of this node in one process until SIGTERM, then
                       leave gracefully (start-node.sh --foreground)
"""

import os
import sys
import time

from distnode.core import keys
from distnode.lua import scripts as lua
from distnode.cluster import membership
from distnode.run import runner
from distnode.redis import server_info
from distnode.core.errors import TickError
from distnode.redis.client import RedisConnectionError, RedisError

CLOCK_SKEW_WARN_S = 1.0
COMMANDS = ("register", "deregister", "status", "health", "prune", "check", "run")
MIN_REDIS_VERSION = (5, 0)
JOB_SCRIPTS = ("heartbeat", "leader_election", "failover_manager", "state_sync", "task_queue")  # foreground.jobs
DEREGISTER_LOCK_WAIT_S = 2.0  # a cron tick holding a job lock ends within this; a --loop process does not
FLAGS = [("--older-than", "S", "prune: minimum seconds since the member went offline or left")]


def cmd_register(ctx) -> dict:
    now = membership.beat(ctx)
    ctx.log.info("registered node %s", ctx.node_id)
    return {"node": ctx.node_id, "registered": True, "time": now}


def cmd_deregister(ctx) -> dict:
    held = _hold_job_locks(ctx)  # refuses while a job of this node runs: it would re-register at once
    try:
        return membership.leave(ctx)
    finally:
        for fd in held:
            os.close(fd)


def _hold_job_locks(ctx) -> list:
    """Take every job lock of this node (waiting up to DEREGISTER_LOCK_WAIT_S for a cron tick to end);
    TickError naming the process when one stays held."""
    held, deadline = [], time.monotonic() + DEREGISTER_LOCK_WAIT_S
    try:
        for script in JOB_SCRIPTS:
            while True:
                fd = runner.acquire_lock(ctx.cfg, script)
                if fd is not None:
                    held.append(fd)
                    break
                if time.monotonic() >= deadline:
                    pid = _lock_pid(ctx.cfg, script)
                    raise TickError(
                        "node %s is running in process %s (it holds the %s.py lock: a --foreground or --loop "
                        "process, or a cron tick): leaving now would be undone by its next heartbeat; stop it "
                        "first with kill -TERM %s (a --foreground or --loop process then leaves the cluster "
                        "itself), or remove the cron jobs with ./start-node.sh --uninstall" % (
                            ctx.node_id, pid or "?", script, pid or "<pid>"))
                time.sleep(0.1)
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return held


def _lock_pid(cfg, script: str) -> int:
    try:
        with open(os.path.join(cfg.run_dir, "%s.%s.lock" % (script, cfg.node_id)), "rb") as fh:
            text = fh.read(32).strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def cmd_status(ctx) -> dict:
    snap = membership.snapshot(ctx.redis)
    snap["server"] = server_info.describe(ctx.redis)
    snap["election"] = _own_election(ctx)
    if not ctx.flags.get("--json"):
        print(format_table(snap))
        print("\n".join(server_info.summary_lines(snap["server"], ctx.cfg["election"]["min_replicas_acked"])))
        if snap["election"].get("unconfirmed"):
            print("election: %s" % _unconfirmed_line(snap["election"]))
    return snap


def _own_election(ctx) -> dict:
    """What this node's elector last ran into, from its memory file: {"unconfirmed": reason,
    "unconfirmed_epoch": epoch} while its last term went unconfirmed (``min_replicas_acked``)
    and no leader has been seen since; {} otherwise."""
    from distnode.core import local_state
    state = local_state.read_json(local_state.epoch_memory_path(ctx.cfg.run_dir, ctx.node_id), None)
    note = state.get("unconfirmed") if isinstance(state, dict) else None
    if not isinstance(note, dict) or not ctx.cfg["election"]["min_replicas_acked"]:
        return {}
    return {"unconfirmed": str(note.get("reason", "term not confirmed")), "unconfirmed_epoch": note.get("epoch")}


def _unconfirmed_line(election: dict) -> str:
    return ("%s (epoch %s); no term can be confirmed with fewer replicas than election.min_replicas_acked: "
            "this node waits for a replica instead of starting new terms" % (
                election["unconfirmed"], election.get("unconfirmed_epoch")))


def _joined(values) -> str:
    """A record's list field as ``a,b`` (a foreign record may hold anything there)."""
    return ",".join(str(v) for v in values) if isinstance(values, list) else ""


def format_table(snap: dict) -> str:
    rows = [("NODE", "STATE", "LAST BEAT", "LEADER", "HOST", "LABELS", "CAPABILITIES")]
    for node in snap["nodes"]:
        rec = node["record"]
        age = "%.1fs ago" % node["age_s"] if node["age_s"] is not None else "-"
        rows.append((node["id"], node["state"], age, "*" if node["id"] == snap["leader"] else "",
                     str(rec.get("host", "")), _joined(rec.get("labels")), _joined(rec.get("capabilities"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    counts = {}
    for node in snap["nodes"]:
        counts[node["state"]] = counts.get(node["state"], 0) + 1
    summary = ", ".join("%d %s" % (n, s) for s, n in sorted(counts.items())) or "no members"
    lines.append("")
    lines.append("leader: %s  epoch: %d  members: %s" % (snap["leader"] or "none", snap["epoch"], summary))
    return "\n".join(lines)


def cmd_health(ctx) -> dict:
    checks, code = [], runner.EXIT_OK
    try:
        t0 = time.time()
        reply = ctx.redis.request([("TIME",), ("PTTL", keys.heartbeat(ctx.node_id)), ("GET", keys.leader())])
        t1 = time.time()
    except RedisConnectionError as exc:
        checks.append(("redis", "fail", str(exc)))
        return _health_result(ctx, checks, 2)
    redis_time, hb_pttl, leader = reply
    checks.append(("redis", "ok", "%s answered in %.1f ms" % (ctx.redis.peer, (t1 - t0) * 1000)))
    if hb_pttl == -2:
        checks.append(("heartbeat", "fail", "hb:%s is missing: is heartbeat.py scheduled?" % ctx.node_id))
        code = 1
    else:
        checks.append(("heartbeat", "ok", "hb:%s expires in %.1fs" % (ctx.node_id, hb_pttl / 1000)))
    if leader is None:
        checks.append(("leader", "fail", "no leader holds the lease: is leader_election.py scheduled?"))
        code = 1
    else:
        checks.append(("leader", "ok", "leader is %s" % leader.decode()))
    skew = (t0 + t1) / 2 - (int(redis_time[0]) + int(redis_time[1]) / 1e6)
    if abs(skew) > CLOCK_SKEW_WARN_S:
        checks.append(("clock", "warn", "local clock is %+.2fs off Redis's (liveness uses Redis's clock, "
                                        "but logs will disagree; check NTP)" % skew))
    else:
        checks.append(("clock", "ok", "within %.3fs of Redis's" % abs(skew)))
    if _server_checks(ctx, checks):
        code = 1
    election = _own_election(ctx)
    if election.get("unconfirmed"):
        checks.append(("election", "fail", _unconfirmed_line(election)))
        code = 1
    return _health_result(ctx, checks, code)


def _server_checks(ctx, checks: list) -> bool:
    """Add the server's role, replica, persistence and Sentinel verdicts; True if one failed."""
    try:
        server = server_info.describe(ctx.redis)
    except RedisError as exc:
        checks.append(("server", "warn", "could not describe %s: %s" % (ctx.redis.peer, exc)))
        return False
    found = server_info.checks(server, ctx.cfg["election"]["min_replicas_acked"])
    checks.extend(found)
    return any(verdict == "fail" for _name, verdict, _detail in found)


def _health_result(ctx, checks, code: int) -> dict:
    ctx.exit_code = code
    if not ctx.flags.get("--json"):
        for name, verdict, detail in checks:
            print("%-10s %-5s %s" % (name, verdict, detail))
        print({0: "healthy", 1: "degraded", 2: "unreachable"}[code])
    return {"node": ctx.node_id, "status": {0: "healthy", 1: "degraded", 2: "unreachable"}[code],
            "checks": [{"check": n, "result": v, "detail": d} for n, v, d in checks]}


def cmd_prune(ctx) -> dict:
    if ctx.flags.get("--older-than") is None:
        raise runner.UsageError("prune needs --older-than SECONDS (a number)")
    older_than_s = runner.number_flag(ctx, "--older-than")  # finite, 0 to a year: nan/inf/1e300 prune nothing
    pruned = [p.decode() for p in lua.PRUNE(ctx.redis, (keys.nodes(),), (older_than_s,))]
    ctx.log.info("pruned %d member(s): %s", len(pruned), ", ".join(pruned) or "none")
    if not ctx.flags.get("--json"):
        print("pruned: %s" % (", ".join(pruned) or "none"))
    return {"pruned": pruned}


def cmd_check(ctx) -> dict:
    ctx.cfg.check_log_dir(probe=True)
    info = ctx.redis.execute("INFO", "server").decode("utf-8", "replace")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    version = fields.get("redis_version", "0").strip()
    parsed = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parsed < MIN_REDIS_VERSION:
        raise TickError("Redis at %s is version %s; this skill needs 5.0 or newer (Streams)" % (ctx.redis.peer, version))
    if not ctx.flags.get("--json"):
        print("config ok: node %s, config dir %s" % (ctx.node_id, ctx.cfg.config_dir))
        print("redis ok: %s answers, credentials accepted, version %s" % (ctx.redis.peer, version))
    return {"node": ctx.node_id, "redis": ctx.redis.peer, "redis_version": version, "ok": True}


def cmd_run(ctx) -> dict:
    from distnode.run import foreground
    return foreground.run(ctx)


def tick(ctx) -> dict:
    if len(ctx.args) != 1 or ctx.args[0] not in COMMANDS:
        raise runner.UsageError("expected one command: %s (see --help)" % ", ".join(COMMANDS))
    return globals()["cmd_" + ctx.args[0]](ctx)


def main(argv=None) -> int:
    common = [f for f in runner.COMMON_FLAGS if f[0] != "--loop"]
    return runner.main("node_manager", tick, __doc__, extra_flags=FLAGS, argv=argv, locked=False,
                       usage="{%s} [options]" % ",".join(COMMANDS), common_flags=common)


if __name__ == "__main__":
    sys.exit(main())
