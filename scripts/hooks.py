"""Run the config's notify hooks (as keepalived runs notify scripts), never blocking a tick.

A hook is an argv list run without a shell, with ``NODE_ID``, ``LEADER_ID``,
``EPOCH`` (and for ``on_node_offline``, ``OFFLINE_NODE_ID``) in its
environment. It is started through a small detached supervisor (this file run
as a script) that kills it at ``hooks.timeout_s`` and appends its outcome to
``logs/hooks.log``; the tick that fired it goes on at once.
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
    env = dict(os.environ, NODE_ID=ctx.node_id, LEADER_ID=leader_id or "", EPOCH=str(epoch), HOOK=name)
    env.update({k: str(v) for k, v in extra_env.items()})
    log_path = os.path.join(ctx.cfg.log_dir, "hooks.log")
    cmd = [sys.executable, os.path.abspath(__file__), str(ctx.cfg["hooks"]["timeout_s"]), log_path, name, "--"]
    _started[:] = [p for p in _started if p.poll() is None]
    try:
        _started.append(subprocess.Popen(cmd + argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True))
    except OSError as exc:
        ctx.log.error("hook %s could not start: %s", name, exc)
        return False
    ctx.log.info("hook %s started: %s", name, " ".join(argv))
    return True


def _supervise(timeout_s: float, log_path: str, name: str, argv: list) -> int:
    import subprocess
    started = time.monotonic()
    try:
        with open(log_path + ".out", "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            try:
                code = proc.wait(timeout=timeout_s)
                outcome = "exit %d" % code
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code, outcome = 124, "killed after %gs" % timeout_s
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


if __name__ == "__main__":
    _timeout, _log, _name, _sep, *_argv = sys.argv[1:]
    sys.exit(_supervise(float(_timeout), _log, _name, _argv))
