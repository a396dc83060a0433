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
  health               exit 0 healthy, 1 degraded or Redis unreachable; checks
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

from distnode import lua
from distnode.cluster import lifecycle
from distnode.cluster import membership
from distnode.core import defaults
from distnode.core import exits
from distnode.core import keys
from distnode.core.errors import TickError, UsageError
from distnode.redis import server_info
from distnode.redis.errors import RedisConnectionError, RedisError
from distnode.run import commands, flags, jobs, lock
from distnode.run.commands import Command

HEALTH_EXITS = {"healthy": exits.OK, "degraded": exits.FAILED, "unreachable": exits.FAILED}
MIN_REDIS_VERSION = (5, 0)
FLAGS = [("--older-than", "S", "prune: minimum seconds since the member went offline or left")]


def cmd_register(ctx, _words) -> dict:
    return ctx.retried(lifecycle.register, ctx)


def cmd_deregister(ctx, _words) -> dict:
    held = _hold_job_locks(ctx)  # refuses while a job of this node runs: it would re-register at once
    try:
        return ctx.retried(lifecycle.leave, ctx)
    finally:
        for fd in held:
            os.close(fd)


def _hold_job_locks(ctx) -> list:
    """Take every job lock of this node (waiting up to defaults.DEREGISTER_LOCK_WAIT_S for a cron tick to end);
    TickError naming the process when one stays held."""
    held, deadline = [], time.monotonic() + defaults.DEREGISTER_LOCK_WAIT_S
    try:
        for script in jobs.NAMES:
            while True:
                fd = lock.acquire(ctx.cfg, script)
                if fd is not None:
                    held.append(fd)
                    break
                if time.monotonic() >= deadline:
                    pid = lock.holder_pid(ctx.cfg, script)
                    raise TickError(
                        "node %s is running in process %s (it holds the %s.py lock: a --foreground or --loop "
                        "process, or a cron tick): leaving now would be undone by its next heartbeat; stop it "
                        "first with kill -TERM %s (a --foreground or --loop process then leaves the cluster "
                        "itself), or remove the cron jobs with ./start-node.sh --uninstall" % (
                            ctx.node_id, pid or "?", script, pid or "<pid>"))
                time.sleep(defaults.LOCK_POLL_S)
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return held


def cmd_status(ctx, _words) -> dict:
    snap = ctx.retried(_status, ctx)
    if not ctx.flags.get("--json"):
        print(format_table(snap))
        print("\n".join(server_info.summary_lines(snap["server"], ctx.cfg["election"]["min_replicas_acked"])))
        if snap["election"].get("unconfirmed"):
            print("election: %s" % _unconfirmed_line(snap["election"]))
    return snap


def _status(ctx) -> dict:
    snap = membership.snapshot(ctx.redis)
    snap["server"] = server_info.describe(ctx.redis)
    snap["election"] = _own_election(ctx)
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


def cmd_health(ctx, _words) -> dict:
    return ctx.retried(_health, ctx)  # Redis unreachable is an answer (exit 1, "unreachable"), not retried


def _health(ctx) -> dict:
    checks = []
    try:
        t0 = time.time()
        reply = ctx.redis.request([("TIME",), ("PTTL", keys.heartbeat(ctx.node_id)), ("GET", keys.leader())])
        t1 = time.time()
    except RedisConnectionError as exc:
        checks.append(("redis", "fail", str(exc)))
        return _health_result(ctx, checks, "unreachable")
    redis_time, hb_pttl, leader = reply
    checks.append(("redis", "ok", "%s answered in %.1f ms" % (ctx.redis.peer, (t1 - t0) * 1000)))
    if hb_pttl == -2:
        checks.append(("heartbeat", "fail", "hb:%s is missing: is heartbeat.py scheduled?" % ctx.node_id))
    else:
        checks.append(("heartbeat", "ok", "hb:%s expires in %.1fs" % (ctx.node_id, hb_pttl / 1000)))
    if leader is None:
        checks.append(("leader", "fail", "no leader holds the lease: is leader_election.py scheduled?"))
    else:
        checks.append(("leader", "ok", "leader is %s" % leader.decode()))
    skew = (t0 + t1) / 2 - (int(redis_time[0]) + int(redis_time[1]) / 1e6)
    if abs(skew) > defaults.CLOCK_SKEW_WARN_S:
        checks.append(("clock", "warn", "local clock is %+.2fs off Redis's (liveness uses Redis's clock, "
                                        "but logs will disagree; check NTP)" % skew))
    else:
        checks.append(("clock", "ok", "within %.3fs of Redis's" % abs(skew)))
    _server_checks(ctx, checks)
    election = _own_election(ctx)
    if election.get("unconfirmed"):
        checks.append(("election", "fail", _unconfirmed_line(election)))
    return _health_result(ctx, checks, "degraded" if any(v == "fail" for _n, v, _d in checks) else "healthy")


def _server_checks(ctx, checks: list) -> None:
    """Add the server's role, replica, persistence and Sentinel verdicts."""
    try:
        server = server_info.describe(ctx.redis)
    except RedisError as exc:
        checks.append(("server", "warn", "could not describe %s: %s" % (ctx.redis.peer, exc)))
        return
    checks.extend(server_info.checks(server, ctx.cfg["election"]["min_replicas_acked"]))


def _health_result(ctx, checks, status: str) -> dict:
    """Print (or return, with --json) the checks and ``status``; exit as HEALTH_EXITS says."""
    ctx.exit_code = HEALTH_EXITS[status]
    if not ctx.flags.get("--json"):
        for name, verdict, detail in checks:
            print("%-10s %-5s %s" % (name, verdict, detail))
        print(status)
    return {"node": ctx.node_id, "status": status,
            "checks": [{"check": n, "result": v, "detail": d} for n, v, d in checks]}


def cmd_prune(ctx, _words) -> dict:
    if ctx.flags.get("--older-than") is None:
        raise UsageError("prune needs --older-than SECONDS (a number)")
    older_than_s = flags.number_flag(ctx, "--older-than")  # finite, 0 to a year: nan/inf/1e300 prune nothing
    pruned = ctx.retried(lua.run, ctx.redis, "prune", (keys.nodes(),), (older_than_s,))
    ctx.log.info("pruned %d member(s): %s", len(pruned), ", ".join(pruned) or "none")
    if not ctx.flags.get("--json"):
        print("pruned: %s" % (", ".join(pruned) or "none"))
    return {"pruned": pruned}


def cmd_check(ctx, _words) -> dict:
    ctx.cfg.check_log_dir(probe=True)
    info = ctx.retried(ctx.redis.execute, "INFO", "server").decode("utf-8", "replace")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    version = fields.get("redis_version", "0").strip()
    parsed = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parsed < MIN_REDIS_VERSION:
        raise TickError("Redis at %s is version %s; this skill needs 5.0 or newer (Streams)" % (ctx.redis.peer, version))
    if not ctx.flags.get("--json"):
        print("config ok: node %s, config dir %s" % (ctx.node_id, ctx.cfg.config_dir))
        print("redis ok: %s answers, credentials accepted, version %s" % (ctx.redis.peer, version))
    return {"node": ctx.node_id, "redis": ctx.redis.peer, "redis_version": version, "ok": True}


def cmd_run(ctx, _words) -> dict:
    from distnode.run import foreground  # deferred: every job's modules, which only `run` needs
    return foreground.run(ctx)


COMMANDS = {
    "register": Command(cmd_register, "register", words=0),
    "deregister": Command(cmd_deregister, "deregister", words=0),
    "status": Command(cmd_status, "status", words=0),
    "health": Command(cmd_health, "health", words=0),
    "prune": Command(cmd_prune, "prune --older-than S", ("--older-than",), words=0),
    "check": Command(cmd_check, "check", words=0),
    "run": Command(cmd_run, "run", words=0),
}


def main(argv=None) -> int:
    return commands.main("node_manager", __doc__, COMMANDS, FLAGS, argv=argv, common_flags=flags.without("--loop"),
                         usage="{%s} [options]" % ",".join(COMMANDS))


if __name__ == "__main__":
    sys.exit(main())
