"""Run the config's notify hooks (as keepalived runs notify scripts), never blocking a tick.

A hook is an argv list run without a shell, with ``NODE_ID``, ``LEADER_ID``,
``EPOCH`` (and for ``on_node_offline``, ``OFFLINE_NODE_ID``) in its
environment (without Redis credentials: child.clean_env). It is started
through a small detached supervisor (this file run as a script) that runs it
with child.supervise: its whole process group is killed at
``hooks.timeout_s`` (and if the supervisor dies, on Linux); the outcome goes
to ``logs/hooks.log``, at most ``tasks.max_output_bytes`` of its output to
``logs/hooks.log.out``, which rotates like the logs (``logging.max_bytes``,
``logging.backup_count``). The tick that fired it goes on at once.

A hook supervisor killed with SIGKILL takes the hook's leader with it
(PR_SET_PDEATHSIG, Linux), but not what the hook started in its group: the
supervisor notes the group in ``<run_dir>/hook-child.<node>.<pid>.json``,
and the next hook this node fires first kills what is left of any group whose
supervisor is gone (child.kill_leftover; Linux, where /proc tells a reused pid
apart): once the hook's leader is gone, only the processes carrying the hook's
own marker (child.MARK_ENV, random per hook) in their environment.
"""

import os
import sys
import time

HOOK_NAMES = ("on_become_leader", "on_lose_leadership", "on_leader_change", "on_node_offline")
_started = []  # supervisors of this process, reaped as they finish (loop mode would collect zombies)


def fire(ctx, name: str, leader_id: str, epoch, **extra_env) -> bool:
    """Start hook ``name`` if configured; return whether it was started."""
    argv = ctx.cfg["hooks"][name]
    if not argv:
        return False
    import subprocess  # here, not at the top: most ticks fire no hook, and the import costs a tick ~3 ms
    from distnode.procs import child
    env = child.clean_env(ctx.cfg, dict(NODE_ID=ctx.node_id, LEADER_ID=leader_id or "", EPOCH=str(epoch), HOOK=name))
    env.update({k: str(v) for k, v in extra_env.items()})
    env[child.MARK_ENV] = child.new_mark()  # the supervisor notes it in its record; the hook inherits it
    log_path = os.path.join(ctx.cfg.log_dir, "hooks.log")
    logging = ctx.cfg["logging"]
    limits = "%d,%d,%d" % (ctx.cfg["tasks"]["max_output_bytes"], logging["max_bytes"], logging["backup_count"])
    record = os.path.join(ctx.cfg.run_dir, "hook-child.%s." % ctx.node_id)
    cmd = [sys.executable, os.path.abspath(__file__), str(ctx.cfg["hooks"]["timeout_s"]), log_path, name, limits,
           record, "--"]
    _started[:] = [p for p in _started if p.poll() is None]
    _kill_leftovers(ctx, record)
    try:
        _started.append(subprocess.Popen(cmd + argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True))
    except OSError as exc:
        ctx.log.error("hook %s could not start: %s", name, exc)
        return False
    ctx.log.info("hook %s started: %s", name, " ".join(argv))
    return True


def _kill_leftovers(ctx, record: str) -> None:
    """Kill the process group of every hook of this node whose supervisor was killed (see above)."""
    from distnode.procs import child
    folder, prefix = os.path.split(record)
    try:
        names = {n.split(".tmp.", 1)[0] for n in os.listdir(folder) if n.startswith(prefix)}
    except OSError:
        return
    for name in sorted(n for n in names if n.endswith(".json")):  # a killed writer's .tmp.<pid> goes too
        left = child.kill_leftover(os.path.join(folder, name))
        if left:
            ctx.log.warning("killed the process group %s a killed hook supervisor left running", left)


def _supervise(timeout_s: float, log_path: str, name: str, limits: str, argv: list, record: str = "") -> int:
    import tempfile
    from distnode.procs import child
    keep_bytes, rotate_bytes, backups = (int(v) for v in limits.split(","))
    started = time.monotonic()
    record = "%s%d.json" % (record, os.getpid()) if record else ""

    def note(pgid, start):  # this process is the record's owner: kill_leftover spares it while it runs
        child._write_record(record, (pgid, start), os.environ.get(child.MARK_ENV))
    try:
        with tempfile.TemporaryFile() as out, open(os.devnull, "rb") as nothing:
            try:
                status = child.supervise(argv, timeout_s, 0, keep_bytes, out.fileno(), out.fileno(),
                                         stdin=nothing.fileno(), on_start=note if record else None)
            finally:
                if record:
                    child._remove(record)
            out.seek(0)
            _append_rotating(log_path + ".out", out.read(), rotate_bytes, backups)
        if status.get("error"):
            code, outcome = 127, "failed to start: %s" % status["error"].split(": ", 1)[-1]
        elif status["reason"] == "timeout":
            code, outcome = 124, "killed after %gs" % timeout_s
        else:
            code = status["code"]
            outcome = "exit %d" % code if code >= 0 else "killed by signal %d" % -code
            code = code if code >= 0 else 128 - code
        if status.get("out_bytes", 0) > keep_bytes:
            outcome += ", %d output bytes dropped" % (status["out_bytes"] - keep_bytes)
    except OSError as exc:
        code, outcome = 127, "failed to start: %s" % (exc.strerror or exc)
    level = "INFO" if code == 0 else "ERROR"
    line = "%s %s node=%s hooks: %s %s (%s, %.2fs)\n" % (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), level, os.environ.get("NODE_ID", "?"),
        name, " ".join(argv), outcome, time.monotonic() - started)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return code


def _append_rotating(path: str, data: bytes, max_bytes: int, backups: int) -> None:
    """Append ``data`` to ``path``, first rotating it (path.1, path.2, ...) once it holds ``max_bytes``."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if max_bytes > 0 and size and size + len(data) > max_bytes:
        for i in range(backups - 1, 0, -1):
            if os.path.exists("%s.%d" % (path, i)):
                os.replace("%s.%d" % (path, i), "%s.%d" % (path, i + 1))
        if backups > 0:
            os.replace(path, path + ".1")
        else:
            os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data[:max_bytes] if max_bytes > 0 else data)
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    _timeout, _log, _name, _limits, _record, _sep, *_argv = sys.argv[1:]
    sys.exit(_supervise(float(_timeout), _log, _name, _limits, _argv, _record))
