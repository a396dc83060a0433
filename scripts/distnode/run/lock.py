"""The per-node, per-job lock that keeps two runs of one job from overlapping.

``<run_dir>/<job>.<node id>.lock`` held with a non-blocking ``flock``: the
kernel drops it when its holder exits, however it exits (kill -9 included),
so a lock is never left behind. A cron tick, a ``--loop`` process and a
``--foreground`` node all take the same lock for the same job.
"""

import fcntl
import os


def path(cfg, job: str) -> str:
    return os.path.join(cfg.run_dir, "%s.%s.lock" % (job, cfg.node_id))


def acquire(cfg, job: str, long_lived: bool = False):
    """Hold ``job``'s lock for this node: its fd, or None if another run holds it.

    ``long_lived`` (--loop, --foreground): the file then names our pid, for ``node_manager.py
    deregister`` to say which process to stop; a one-shot run leaves it empty (it writes only
    to clear a pid a finished loop left)."""
    os.makedirs(cfg.run_dir, exist_ok=True)
    fd = os.open(path(cfg, job), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        if long_lived:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        elif os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    except OSError:
        pass
    return fd


def holder_pid(cfg, job: str) -> int:
    """The pid a long-lived holder of ``job``'s lock wrote; 0 when none is named (a cron tick holds it)."""
    try:
        with open(path(cfg, job), "rb") as fh:
            text = fh.read(32).strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
