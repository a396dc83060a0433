"""Small local files a node keeps beside its logs: written atomically, read forgivingly.

``atomic_write`` writes a temp file in the same folder, fsyncs it and renames
it over the target, so a reader (or a crash at any line) sees the old file or
the new one, never half of one.
"""

import json
import os


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj, mode: int = 0o644) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"), mode)


def read_json(path: str, default=None):
    """The JSON in ``path``, or ``default`` when it is missing or unreadable."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError):
        return default


def update_json(path: str, change) -> dict:
    """Read-modify-write a JSON object file under an flock, so a node's processes take turns.

    ``change(state)`` mutates the dict in place; the file is rewritten (atomically)
    only when the content changed. Returns the state before the change.
    """
    import fcntl
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    lock_fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        before = read_json(path, None)
        if not isinstance(before, dict):
            before = {}
        state = dict(before)
        change(state)
        if state != before:
            atomic_write_json(path, state)
        return before
    finally:
        os.close(lock_fd)


def epoch_memory_path(run_dir: str, node_id: str) -> str:
    """The node's election memory: highest epoch seen (``max_epoch``), last leader, own role."""
    return os.path.join(run_dir, "election.%s.json" % node_id)


def max_epoch_of(memory) -> int:
    """The highest epoch a memory dict records; 0 when it is missing or not a sane number."""
    value = memory.get("max_epoch", 0) if isinstance(memory, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def remembered_epoch(run_dir: str, node_id: str) -> int:
    return max_epoch_of(read_json(epoch_memory_path(run_dir, node_id), None))


def remember_epoch(run_dir: str, node_id: str, epoch: int) -> None:
    """Raise the remembered epoch to ``epoch`` (never lowers it)."""
    def change(state):
        if epoch > max_epoch_of(state):
            state["max_epoch"] = epoch
    update_json(epoch_memory_path(run_dir, node_id), change)


def instance_token(run_dir: str, node_id: str) -> str:
    """A random token that stays the same for this node id on this machine.

    It tells this node's processes apart from another machine that claims the
    same node id (a copied config): the heartbeat refuses to overwrite a live
    record that carries a different token.
    """
    path = os.path.join(run_dir, node_id + ".instance")
    try:
        with open(path) as fh:
            token = fh.read().strip()
        if token:
            return token
    except OSError:
        pass
    token = os.urandom(8).hex()
    tmp = "%s.tmp.%d.%s" % (path, os.getpid(), token)  # unique per call: threads of one process race too
    atomic_write(tmp, token.encode("ascii"), 0o600)
    try:
        os.link(tmp, path)  # first writer wins; a racing process or thread reads the winner's token
    except FileExistsError:
        with open(path) as fh:
            token = fh.read().strip()
    finally:
        os.unlink(tmp)
    return token
