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
  prune --older-than S forget members offline or left for at least S seconds;
                       --invalid: also records that are not JSON objects (another
                       program wrote them; status names them), unless hb:<id> exists
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
from distnode.core import local_state
from distnode.core.errors import TickError, UsageError
from distnode.redis import server_info
from distnode.redis.errors import RedisConnectionError, RedisError
from distnode.run import cli, commands, jobs, lock
from distnode.run.commands import Command
from distnode.tasks import handler  # loaded already: lifecycle hands tasks back through the worker

HEALTH_EXITS = {"healthy": exits.OK, "degraded": exits.FAILED, "unreachable": exits.FAILED}
MIN_REDIS_VERSION = (5, 0)
FLAGS = [("--older-than", "S", "prune: minimum seconds since the member went offline or left"),
         ("--invalid", None, "prune: also forget records that are not JSON objects (foreign values)")]


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
    """Take every job lock of this node (``_take_lock``); TickError naming the process when one stays held."""
    held = []
    try:
        for job in jobs.JOBS:
            held.append(_take_lock(ctx, job))
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return held


def _take_lock(ctx, job: jobs.Job) -> int:
    """``job``'s lock for this node: at once, or once the run holding it ends. A cron tick ends by itself
    (waited for up to ``job.run_max_s``: the worker's finishes its task first); a --loop or --foreground
    process does not (waited for DEREGISTER_LOCK_WAIT_S, in case it is on its way out)."""
    started, said = time.monotonic(), False
    while True:
        fd = lock.acquire(ctx.cfg, job.name)
        if fd is not None:
            return fd
        waited_s, pid = time.monotonic() - started, lock.holder_pid(ctx.cfg, job.name)
        pid = pid if pid and _alive(pid) else None  # a pid a --loop process that ended left: a cron tick holds it
        if pid and waited_s >= defaults.DEREGISTER_LOCK_WAIT_S:
            raise TickError(
                "node %s is running in process %d (it holds the %s lock: a --foreground or --loop process): "
                "leaving now would be undone by its next heartbeat; stop it with kill -TERM %d (it then leaves "
                "the cluster itself)" % (ctx.node_id, pid, job.argv[0], pid))
        if not pid and waited_s >= job.run_max_s(ctx.cfg):
            raise TickError(_cron_tick_overdue(ctx, job, waited_s))
        if not pid and not said:
            ctx.log.info("waiting up to %.0fs for the %s cron tick of node %s to end", job.run_max_s(ctx.cfg),
                         job.argv[0], ctx.node_id)
            said = True
        time.sleep(defaults.LOCK_POLL_S)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        pass
    return True


def _cron_tick_overdue(ctx, job: jobs.Job, waited_s: float) -> str:
    """The one line for a cron tick that still holds ``job``'s lock past ``job.run_max_s``."""
    if job.name != "task_queue":
        return ("node %s's %s cron tick still holds its lock after %.0fs, longer than a tick takes (each Redis "
                "request at its timeout, with retries): nothing was changed; run this command again once it "
                "ended (find it with: pgrep -f %s)" % (ctx.node_id, job.argv[0], waited_s, job.argv[0]))
    record = local_state.read_json(handler.handler_record(ctx), None)
    owner = record.get("owner") if isinstance(record, dict) else None
    pid = owner if type(owner) is int and owner > 1 and _alive(owner) else None  # the file may be anyone's
    return ("node %s's task_queue.py work cron tick%s still runs a task after %.0fs, longer than tasks.tick_budget_s "
            "+ tasks.default_timeout_s (a task submitted with a longer --timeout): nothing was changed; run this "
            "command again once the task ends%s" % (
                ctx.node_id, " (process %d)" % pid if pid else "", waited_s,
                ", or stop the tick now with kill -TERM %d (the task is then retried)" % pid if pid else ""))


def cmd_status(ctx, _words) -> dict:
    snap = ctx.retried(_status, ctx)
    if not ctx.flags.get("--json"):
        print(format_table(snap))
        print("\n".join(server_info.summary_lines(snap["server"], ctx.cfg["election"]["min_replicas_acked"])))
        for line in snap["foreign"].values():
            print("warning: %s" % line)
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


def _cell(text: str) -> str:
    """A table cell from a value another program may have written: control characters escaped."""
    return text if text.isprintable() else membership.shown_bytes(text.encode("utf-8", "replace"))[1:-1]


def format_table(snap: dict) -> str:
    rows = [("NODE", "STATE", "LAST BEAT", "LEADER", "HOST", "LABELS", "CAPABILITIES")]
    for node in snap["nodes"]:
        rec = node["record"]
        age = "%.1fs ago" % node["age_s"] if node["age_s"] is not None else "-"
        rows.append((_cell(node["id"]), node["state"], age, "*" if node["id"] == snap["leader"] else "",
                     _cell(str(rec.get("host", ""))), _cell(_joined(rec.get("labels"))),
                     _cell(_joined(rec.get("capabilities")))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    counts = {}
    for node in snap["nodes"]:
        counts[node["state"]] = counts.get(node["state"], 0) + 1
    summary = ", ".join("%d %s" % (n, s) for s, n in sorted(counts.items())) or "no members"
    lines.append("")
    foreign = snap.get("foreign", {})  # a value another program wrote: "?" here, its line after the table
    lines.append("leader: %s  epoch: %s  members: %s" % ("?" if "leader" in foreign else snap["leader"] or "none",
                                                       "?" if "epoch" in foreign else snap["epoch"], summary))
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
    leader, foreign = membership.read_leader(leader)
    if foreign:
        checks.append(("leader", "fail", foreign))
    elif leader is None:
        checks.append(("leader", "fail", "no leader holds the lease: is leader_election.py scheduled?"))
    else:
        checks.append(("leader", "ok", "leader is %s" % leader))
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
    invalid = bool(ctx.flags.get("--invalid"))
    if ctx.flags.get("--older-than") is None and not invalid:
        raise UsageError("prune needs --older-than SECONDS (a number), or --invalid")
    older_than_s = cli.number_flag(ctx, "--older-than")  # finite, 0 to a year: nan/inf/1e300 prune nothing
    pruned = ctx.retried(lua.run, ctx.redis, "prune", (keys.nodes(),),
                         ("" if older_than_s is None else older_than_s, "1" if invalid else ""))
    names = ", ".join(_cell(name) for name in pruned) or "none"
    ctx.log.info("pruned %d member(s): %s", len(pruned), names)
    if not ctx.flags.get("--json"):
        print("pruned: %s" % names)
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
    "prune": Command(cmd_prune, "prune --older-than S [--invalid]", ("--older-than", "--invalid"), words=0),
    "check": Command(cmd_check, "check", words=0),
    "run": Command(cmd_run, "run", words=0),
}


def main(argv=None) -> int:
    return commands.main("node_manager", __doc__, COMMANDS, FLAGS, argv=argv, common_flags=cli.without("--loop"),
                         usage="{%s} [options]" % ",".join(COMMANDS))


if __name__ == "__main__":
    sys.exit(main())
