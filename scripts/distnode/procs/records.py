"""What a child left behind when its owner and its supervisor were both killed, and killing it.

While a child runs, its owner notes the child's process group in a record
file (``write_record``: group, leader start time, marker, boot id, owner).
Should the owner and the supervisor both die (SIGKILL of every Python
process), the child's leader goes with the supervisor (PR_SET_PDEATHSIG,
Linux) but the rest of its group stays; the owner's successor (the node's
next worker tick, the next hook fired) reads the record and kills what is
left (``kill_leftover``) before it starts anything new.

Guarantee: never group 0 or 1, nor the caller's own; never after a reboot
(the boot id); once the group's leader is gone (its id may name another
group by now), only the processes whose environment holds the child's own
random marker (MARK_ENV). Not covered: a descendant that leaves the group on
purpose (setsid, setpgid) or clears its environment, and macOS (no /proc
start times: nothing is killed there).
"""

import json
import os
import signal

from distnode.procs.supervisor import proc_stat, start_time

# Each child gets a random marker of its own in this variable (``new_mark``), noted in its record:
# once its group's leader is gone, kill_leftover kills only the processes whose environment holds it.
MARK_ENV = "OPENCLAW_CHILD_MARK"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"  # a record from another boot names nothing of ours


def new_mark() -> str:
    """A fresh random marker for one child (MARK_ENV)."""
    return os.urandom(12).hex()


def boot_id():
    """This boot's id (Linux), or None."""
    try:
        with open(BOOT_ID_PATH) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def write_record(path: str, started, mark=None) -> None:
    """Note the running child's group (``started``: pgid, leader start time), its marker, this boot
    and its owner (this process), atomically; best effort (a writer killed mid-way leaves
    ``<path>.tmp.<pid>``: kill_leftover reads it as the record, then removes it)."""
    doc = {"pgid": started[0], "start": started[1], "owner": os.getpid(), "owner_start": start_time(os.getpid()),
           "boot": boot_id(), "mark": mark}
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError:
        remove(tmp)


def remove(path: str) -> None:
    """Delete ``path`` if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass


def kill_leftover(path: str):
    """Kill what is left of the process group a record names if its owner is dead (see
    kill_recorded); return the group id, if anything was killed, else None. The record is
    removed unless its owner still runs; so is a ``<path>.tmp.<pid>`` a killed writer left
    (read as the record first). A record from another boot (boot id) kills nothing."""
    folder, base = os.path.split(path)
    prefix = base + ".tmp."
    try:
        names = [n for n in os.listdir(folder or ".") if n.startswith(prefix) and n[len(prefix):].isdigit()]
    except OSError:
        names = []
    killed = None
    for name in names:
        writer = int(name[len(prefix):])
        stat = proc_stat(writer)
        if writer != os.getpid() and (stat is None or stat[0] == "Z"):  # the writer is gone: it never renamed it
            killed = _kill_leftover_one(os.path.join(folder, name), True) or killed
    return _kill_leftover_one(path, False) or killed


def kill_leftovers(path_prefix: str) -> list:
    """kill_leftover for every record whose path starts with ``path_prefix`` (one per child of an
    owner that runs several, e.g. ``<run_dir>/hook-child.<node>.``); the groups killed."""
    folder, prefix = os.path.split(path_prefix)
    try:
        names = {n.split(".tmp.", 1)[0] for n in os.listdir(folder) if n.startswith(prefix)}
    except OSError:
        return []
    killed = []
    for name in sorted(n for n in names if n.endswith(".json")):  # a killed writer's .tmp.<pid> goes too
        left = kill_leftover(os.path.join(folder, name))
        if left:
            killed.append(left)
    return killed


def _kill_leftover_one(path: str, orphan: bool):
    try:
        with open(path) as fh:
            rec = json.load(fh)
        pgid, start = int(rec["pgid"]), rec.get("start")
        owner, owner_start = int(rec.get("owner") or 0), rec.get("owner_start")
        boot, mark = rec.get("boot"), rec.get("mark")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        remove(path)
        return None
    stat = proc_stat(owner) if owner else None
    if not orphan and stat is not None and stat[0] != "Z" and (owner_start is None or stat[1] == owner_start):
        return None  # its owner runs it still (a zombie owner is dead)
    killed = False
    if boot is not None and boot == boot_id():
        killed = kill_recorded(pgid, start, mark if isinstance(mark, str) else None)
    remove(path)
    return pgid if killed else None


def kill_recorded(pgid: int, start, mark=None) -> bool:
    """SIGKILL what is left of the child's process group ``pgid`` (its leader started at ``start``);
    True if anything was signalled.

    Never group 0 or 1 (``killpg(0)`` is the caller's own group) nor the caller's own group.
    While the leader runs (same pid, same start time: the same process) the whole group is
    killed. Once the leader is gone the group id may name another group (a daemon's whose
    leader exited, after the pid was reused): then only the group's processes whose
    environment holds the child's marker (``mark``, MARK_ENV) are killed, one by one; none
    without a marker. Without /proc (no start time) nothing is killed.
    """
    try:
        own = os.getpgid(0)
    except OSError:
        own = None
    if start is None or pgid <= 1 or pgid == own:
        return False
    stat = proc_stat(pgid)
    if stat is not None:
        if stat[1] != start:
            return False
        try:
            os.killpg(pgid, signal.SIGKILL)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    killed = False
    for pid in _marked_members(pgid, mark) if mark else ():
        try:
            os.kill(pid, signal.SIGKILL)
            killed = True
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def _marked_members(pgid: int, mark: str) -> list:
    """The pids of group ``pgid`` whose environment holds ``MARK_ENV=mark`` (/proc); [] without /proc."""
    want = ("%s=%s" % (MARK_ENV, mark)).encode()
    found = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as fh:
                if int(fh.read().rsplit(") ", 1)[1].split()[2]) != pgid:
                    continue
            with open("/proc/%d/environ" % pid, "rb") as fh:
                if want in fh.read().split(b"\0"):
                    found.append(pid)
        except (OSError, IndexError, ValueError):
            continue
    return found
