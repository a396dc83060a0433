"""Small local files a node keeps beside its logs: written atomically, read forgivingly.

``atomic_write`` writes a temp file in the same folder, fsyncs it and renames
it over the target, so a reader (or a crash at any line) sees the old file or
the new one, never half of one.
"""

import json
import os

from distnode.core.errors import InputError  # noqa: F401 - raised here; importers catch local_state.InputError


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, os.strerror(28))  # a short write: the disk filled up
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if exc.filename is None:  # os.write/fsync name no file: name it, for the caller's one line
            raise OSError(exc.errno, exc.strerror, path) from None
        raise


def read_input(source: str, cap: int, where: str = "", refuse_over: bool = True) -> bytes:
    """The bytes of an input file, or of stdin for ``-``: at most ``cap`` (``cap + 1`` when
    ``refuse_over`` is False, for the caller's own message), never a hang or a flood.

    A file is opened without blocking and must be a regular file: a FIFO would wait forever for a
    writer and a device (/dev/zero) never ends. Stdin may be a pipe (read bounded) but not closed.
    Any fault is an InputError naming ``where`` (default: the path, or "stdin").
    """
    import stat
    import sys
    where = where or ("stdin" if source == "-" else source)
    if source == "-":
        stdin = sys.stdin
        if stdin is None:  # started with fd 0 closed (`<&-`)
            raise InputError("stdin is closed" if where == "stdin" else "%s: stdin is closed" % where)
        try:
            data = stdin.buffer.read(cap + 1)
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError("%s: cannot read stdin: %s" % (where, getattr(exc, "strerror", None) or exc)) from None
    else:
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError("%s: cannot read: %s" % (where, exc.strerror or exc)) from None
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise InputError("%s: cannot read: Is a directory" % where)
            if not stat.S_ISREG(mode):
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(
                    mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
                raise InputError("%s: cannot read: not a regular file (%s)" % (where, kind))
            chunks, size = [], 0
            while size <= cap:
                chunk = os.read(fd, min(cap + 1 - size, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        except OSError as exc:
            raise InputError("%s: cannot read: %s" % (where, exc.strerror or exc)) from None
        finally:
            os.close(fd)
    if refuse_over and len(data) > cap:
        raise InputError("%s: over %d bytes (the most this input may be)" % (where, cap))
    return data


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


# Every epoch is below this. Lua numbers are doubles: exact integers only up to 2^53, printed by
# tostring() with 14 significant digits (from 10^14 a term's epoch no longer compares equal to
# its own text) and written by redis.call with %.17g (from 10^17 as '1e+17', which INCR then
# refuses). 10^13 stays clear of all three, and one term a millisecond would take 300 years
# to reach it: a larger value is corrupt (a bad memory file, an operator's typo), never used.
EPOCH_LIMIT = 10 ** 13


def sane_epoch(value) -> bool:
    """Whether ``value`` is an epoch: an int in [0, EPOCH_LIMIT)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < EPOCH_LIMIT


def epoch_memory_path(run_dir: str, node_id: str) -> str:
    """The node's election memory: highest epoch seen (``max_epoch``), last leader, own role."""
    return os.path.join(run_dir, "election.%s.json" % node_id)


def max_epoch_of(memory) -> int:
    """The highest epoch a memory dict records; 0 when it is missing or not a sane epoch (corrupt:
    ignored, and replaced by the next epoch the node sees)."""
    value = memory.get("max_epoch", 0) if isinstance(memory, dict) else 0
    return value if sane_epoch(value) else 0


def corrupt_epoch(memory):
    """The memory's ``max_epoch`` when it is there but no sane epoch (for a warning), else None."""
    value = memory.get("max_epoch") if isinstance(memory, dict) else None
    return None if value is None or sane_epoch(value) else value


def remembered_epoch(run_dir: str, node_id: str, log=None) -> int:
    """What the node remembers; with ``log``, a corrupt value (ignored) is warned about."""
    path = epoch_memory_path(run_dir, node_id)
    memory = read_json(path, None)
    if log is not None and corrupt_epoch(memory) is not None:
        log.warning("ignoring max_epoch %.40r in %s: not an integer in [0, %d)", corrupt_epoch(memory), path,
                    EPOCH_LIMIT)
    return max_epoch_of(memory)


def remember_epoch(run_dir: str, node_id: str, epoch: int) -> None:
    """Raise the remembered epoch to ``epoch`` (never lowers it; never to an insane value)."""
    if not sane_epoch(epoch):
        return

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
