"""Start every child process the same way: task handlers, agent turns, hooks.

A child is an argv run without a shell, its input on stdin, in an
environment without Redis credentials (``clean_env``), its output bounded,
and its whole process group killed at its deadline, when its owner stops it,
and when its owner dies, whatever killed the owner (SIGKILL included).

How: the owner (``run``) starts a small supervisor, this module (``_BOOT``,
from its bytecode cache) in a session of its own, and keeps the write end of a pipe whose
read end only the supervisor holds. The supervisor (``supervise``) starts
the child as the leader of a new process group, keeps at most ``max_bytes``
of its stdout (the rest is read and dropped, so the child never blocks) and
the tail of its stderr, and kills the child's whole group:

- when the child exits (whatever it left running in its group goes too);
- at the deadline (SIGTERM first when a grace is given, SIGKILL after it);
- on SIGTERM from the owner (a graceful stop, same sequence as the deadline);
- at once when the pipe reports end-of-file: the owner died.

- when a lease (``Lease``) runs out without the owner's extension (a line
  on the same pipe): a frozen or cut-off owner's child dies before the
  lease it runs under lapses elsewhere.

The deadline is the supervisor's, so a child is stopped on time even while
its owner is frozen (SIGSTOP). On Linux the child's leader also gets
PR_SET_PDEATHSIG, for a supervisor that is itself killed with SIGKILL; the
supervisor reports the child's group on the status pipe as it starts it, so
the owner kills the rest of the group when the supervisor ends without a
report, and (``record``, ``kill_leftover``) the owner's successor does when
both were killed: once the group's leader is gone, only the group's processes
whose environment holds the child's random marker (MARK_ENV), never group
0/1 or the caller's own, and never after a reboot (the record's boot id).
Not covered: a descendant that leaves the group on purpose (setsid, setpgid)
or clears its environment, and SIGKILL of the supervisor on macOS (no /proc
start times: leftover groups are not killed there).

The supervisor's arguments and its status pipe are plain text (``_main``):
the line ``pgid <n> <leader start time or ->`` once the child runs, then one
report line, ``exit <code> <out_bytes> <reason or ->`` or ``error <why>``.
It waits on events, not in polling steps: one select on the child's pipes,
the owner's pipe and a wakeup pipe that SIGCHLD and SIGTERM write to, with a
timeout computed from what is due next (deadline, grace, lease, drain).

Costs one more Python start-up per child (the supervisor, ``-I -S``): kept
to the bare interpreter's start plus a few ms by importing only os, sys,
time, select, _signal and _ctypes (no json, signal, ctypes or subprocess),
and by leaving through os._exit.
"""

import os
import select
import sys
import time

try:
    import _signal as signal  # the C module: `signal` imports enum, ~5 ms of every supervisor's start
except ImportError:  # pragma: no cover - an interpreter without it
    import signal

STOP_POLL_S = 0.1       # how often an owner checks its stop request (the supervisor waits on events)
SUPERVISOR_IDLE_S = 1.0  # the longest the supervisor sleeps with no event due (SIGCHLD, SIGTERM wake it)
ERR_TAIL_BYTES = 4096   # stderr kept for the error message
DRAIN_S = 2.0           # reading on after the leader exited and its group was killed
SUPERVISOR_SLACK_S = 10.0  # owner's backstop past deadline + grace, should the supervisor hang
READ_CHUNK = 65536
PR_SET_PDEATHSIG = 1
# Environment variables never passed to a child: the config reads the first two
# (config.ENV_OVERRIDES); redis-cli reads the third.
SECRET_ENV = ("REDIS_PASSWORD", "REDIS_USERNAME", "REDISCLI_AUTH")
SECRET_ENV_WORDS = ("PASS", "AUTH", "SECRET", "TOKEN", "CREDENTIAL")  # in a name with REDIS in it
SECRET_ENV_SUFFIXES = ("URL", "URI")  # a name with REDIS in it ending so: a URL may carry a password
MIN_CONTAINED_SECRET_LEN = 4  # a password this long is looked for inside values (config.MIN_SCRUB_LEN)
# Each child gets a random marker of its own in this variable (``new_mark``), noted in its record:
# once its group's leader is gone, kill_leftover kills only the processes whose environment holds it.
MARK_ENV = "OPENCLAW_CHILD_MARK"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"  # a record from another boot names nothing of ours

_running = set()  # supervisors this process started and has not reaped (stop_all)


class Outcome:
    """What a child did: ``ok`` (exit 0), ``output`` (kept stdout), ``error`` (why not ok),
    ``out_bytes`` (all stdout it wrote, kept or not), ``stopped`` (ended by its owner's stop)."""

    __slots__ = ("ok", "output", "error", "out_bytes", "stopped")

    def __init__(self, ok: bool, output: bytes, error: str, out_bytes: int = 0, stopped: bool = False):
        self.ok, self.output, self.error, self.out_bytes, self.stopped = ok, output, error, out_bytes, stopped

    @property
    def dropped_bytes(self) -> int:
        return max(0, self.out_bytes - len(self.output))


# -- the environment -------------------------------------------------------------

def config_secrets(cfg) -> list:
    """Every password the config holds (Redis, Sentinel, Redlock instances): no child sees them."""
    r = cfg["redis"]
    values = [r.get("password"), r.get("sentinel_password")]
    values += [i.get("password") for i in r.get("instances") or [] if isinstance(i, dict)]
    return [v for v in values if isinstance(v, str) and v]


def clean_env(cfg=None, extra: dict = None, base=None) -> dict:
    """``base`` (this process's environment) without Redis credentials, plus ``extra``.

    Dropped: SECRET_ENV, any name with REDIS and one of SECRET_ENV_WORDS in it
    or ending in one of SECRET_ENV_SUFFIXES, any variable whose value contains
    one of the config's passwords (MIN_CONTAINED_SECRET_LEN or longer; a
    shorter one only when it is the whole value). Not a defence against a
    child running as the same OS user: it can read its owner's
    /proc/<pid>/environ and config/secrets.json.
    """
    secrets = set(config_secrets(cfg)) if cfg is not None else set()
    long_secrets = [s for s in secrets if len(s) >= MIN_CONTAINED_SECRET_LEN]
    env = {}
    for name, value in (os.environ if base is None else base).items():
        upper = name.upper()
        if upper in SECRET_ENV or value in secrets or any(s in value for s in long_secrets) or (
                "REDIS" in upper and (any(word in upper for word in SECRET_ENV_WORDS)
                                      or upper.endswith(SECRET_ENV_SUFFIXES))):
            continue
        env[name] = value
    env.update(extra or {})
    return env


# -- the owner's side ------------------------------------------------------------

class Lease:
    """A lease the child runs under (a task attempt's): the supervisor kills the child's group
    once ``until`` (time.monotonic()) passes without an extension. ``renew()`` is called every
    ``period_s`` while the child runs and returns the new ``until`` (sent to the supervisor),
    0 when the lease is lost (the group is killed at once), or None when this renewal failed
    (tried again sooner; the old ``until`` stands)."""

    __slots__ = ("until", "period_s", "renew")

    def __init__(self, until: float, period_s: float, renew):
        self.until, self.period_s, self.renew = until, period_s, renew


def run(argv: list, payload: bytes, env: dict, timeout_s: float, max_bytes: int, term_grace_s: float = 0,
        should_stop=None, lease: Lease = None, record: str = None) -> Outcome:
    """Run ``argv`` under a supervisor and wait for it (see the module docstring).

    ``should_stop`` (polled every STOP_POLL_S) asks for a graceful stop: the
    child's group gets SIGTERM, then SIGKILL ``term_grace_s`` later, and the
    Outcome is ``stopped``. In a one-shot process SIGTERM does the same
    through SystemExit; whatever ends this call early, the child's group is
    killed before it returns or raises. ``lease``: the child's group is also
    killed when the lease runs out (see Lease). ``record``: a file noting the
    child's process group while it runs, for ``kill_leftover`` should this
    process and the supervisor both be killed. A supervisor that ends without
    a report (killed) has the child's group killed here before this returns.
    """
    import subprocess
    import tempfile
    mark = new_mark()
    env = dict(os.environ if env is None else env, **{MARK_ENV: mark})  # the supervisor's child inherits it
    watch_r, watch_w = os.pipe()
    status_r, status_w = os.pipe()
    spec = [repr(float(timeout_s)), repr(float(term_grace_s)), str(int(max_bytes)), str(watch_r), str(status_w),
            repr(float(lease.until)) if lease is not None else "-", "--"] + [str(a) for a in argv]
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin.write(payload)
        stdin.seek(0)
        try:
            try:
                proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, os.path.abspath(__file__)] + spec,
                                        stdin=stdin, stdout=out, stderr=err, env=env, pass_fds=(watch_r, status_w),
                                        start_new_session=True)
            finally:
                os.close(watch_r)
                os.close(status_w)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv
            os.close(watch_w)
            os.close(status_r)
            why = getattr(exc, "strerror", None) or exc
            return Outcome(False, b"", "cannot start the child supervisor: %s" % why)
        _running.add(proc)
        raw = b""
        try:
            raw = _wait(proc, watch_w, status_r, should_stop, timeout_s + term_grace_s + SUPERVISOR_SLACK_S,
                        lease, record, mark)
        finally:
            if watch_w is not None and proc.poll() is None:
                os.close(watch_w)  # the supervisor kills the child's group at once
                watch_w = None
                proc.wait()
            for fd in (watch_w, status_r):
                if fd is not None:
                    os.close(fd)
            _running.discard(proc)
        started, raw = _split_started(raw)
        if started is not None and not _reported(raw):  # the supervisor was killed: its child's group goes too
            _kill_recorded(started[0], started[1], mark)
        if record and started is not None:
            _remove(record)
        return _outcome(raw, proc.returncode, out, err, timeout_s)


def _wait(proc, watch_w: int, status_r: int, should_stop, backstop_s: float, lease, record, mark) -> bytes:
    """Until the supervisor closes the status pipe (it ended, or was killed): its report, read as it
    comes. Meanwhile: the stop request, the backstop, the lease's renewals, the record."""
    restore = _raise_on_sigterm()
    stop_sent, give_up = False, time.monotonic() + backstop_s
    raw, recorded = b"", False
    next_renew = None if lease is None else time.monotonic() + lease.period_s
    try:
        while True:
            if select.select([status_r], [], [], STOP_POLL_S)[0]:
                data = os.read(status_r, READ_CHUNK)
                if not data:
                    proc.wait()
                    return raw
                raw += data
                if record and not recorded and b"\n" in raw:
                    recorded = True
                    started = _split_started(raw)[0]
                    if started is not None:
                        _write_record(record, started, mark)
            if not stop_sent and should_stop is not None and should_stop():
                proc.send_signal(signal.SIGTERM)
                stop_sent = True
            if time.monotonic() > give_up:
                proc.kill()  # a hung supervisor: its child's leader dies with it (Linux)
            if next_renew is not None and time.monotonic() >= next_renew:
                until = lease.renew()
                if until is None:
                    next_renew = time.monotonic() + lease.period_s / 4
                    continue
                try:
                    os.write(watch_w, b"%.6f\n" % until)
                except OSError:
                    pass  # the supervisor ended: its report comes next
                next_renew = time.monotonic() + lease.period_s if until else None
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


# -- a child's process group, after its supervisor ---------------------------------

def _proc_stat(pid: int):
    """(state, start time in clock ticks since boot) of ``pid`` from /proc, or None (gone, or no /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError, ValueError):
        return None


def _start_time(pid: int):
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _split_started(raw: bytes):
    """((pgid, leader start time or None), rest) from the supervisor's status stream, whose first
    line is ``pgid <n> <start>``; (None, raw) before that line (or if the child never started)."""
    if not raw.startswith(b"pgid ") or b"\n" not in raw:
        return None, raw
    line, rest = raw.split(b"\n", 1)
    parts = line.decode("ascii", "replace").split()
    try:
        return (int(parts[1]), parts[2] if len(parts) > 2 and parts[2] != "-" else None), rest
    except (IndexError, ValueError):
        return None, rest


def _reported(raw: bytes) -> bool:
    return _report(raw) is not None


def _report(raw: bytes):
    """The supervisor's report (after the ``pgid`` line), as ``supervise`` returns it: one line,
    ``exit <code> <out_bytes> <reason or ->`` or ``error <why>``; None when incomplete (killed)."""
    if not raw.endswith(b"\n") or raw.count(b"\n") != 1:
        return None
    text = raw[:-1].decode("utf-8", "replace")
    if text.startswith("error "):
        return {"error": text[len("error "):]}
    parts = text.split(" ", 3)
    if len(parts) != 4 or parts[0] != "exit":
        return None
    try:
        return {"code": int(parts[1]), "out_bytes": int(parts[2]), "reason": None if parts[3] == "-" else parts[3]}
    except ValueError:
        return None


def _report_line(status: dict) -> bytes:
    if status.get("error"):
        return ("error %s\n" % " ".join(str(status["error"]).split())).encode("utf-8", "replace")
    return ("exit %d %d %s\n" % (status["code"], status["out_bytes"], status["reason"] or "-")).encode("utf-8")


def new_mark() -> str:
    """A fresh random marker for one child (MARK_ENV)."""
    return os.urandom(12).hex()


def _boot_id():
    try:
        with open(BOOT_ID_PATH) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


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


def _kill_recorded(pgid: int, start, mark=None) -> bool:
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
    stat = _proc_stat(pgid)
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


def _write_record(path: str, started, mark=None) -> None:
    """Note the running child's group, its marker, this boot and its owner (this process),
    atomically; best effort (a writer killed mid-way leaves ``<path>.tmp.<pid>``: kill_leftover
    reads it as the record, then removes it)."""
    import json
    doc = {"pgid": started[0], "start": started[1], "owner": os.getpid(), "owner_start": _start_time(os.getpid()),
           "boot": _boot_id(), "mark": mark}
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError:
        _remove(tmp)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def kill_leftover(path: str):
    """Kill what is left of the process group a record (``run``'s ``record``) names if its owner
    is dead (see _kill_recorded); return the group id, if anything was killed, else None. The
    record is removed unless its owner still runs; so is a ``<path>.tmp.<pid>`` a killed writer
    left (read as the record first). A record from another boot (boot id) kills nothing."""
    folder, base = os.path.split(path)
    prefix = base + ".tmp."
    try:
        names = [n for n in os.listdir(folder or ".") if n.startswith(prefix) and n[len(prefix):].isdigit()]
    except OSError:
        names = []
    killed = None
    for name in names:
        writer = int(name[len(prefix):])
        stat = _proc_stat(writer)
        if writer != os.getpid() and (stat is None or stat[0] == "Z"):  # the writer is gone: it never renamed it
            killed = _kill_leftover_one(os.path.join(folder, name), True) or killed
    return _kill_leftover_one(path, False) or killed


def _kill_leftover_one(path: str, orphan: bool):
    import json
    try:
        with open(path) as fh:
            rec = json.load(fh)
        pgid, start = int(rec["pgid"]), rec.get("start")
        owner, owner_start = int(rec.get("owner") or 0), rec.get("owner_start")
        boot, mark = rec.get("boot"), rec.get("mark")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        _remove(path)
        return None
    stat = _proc_stat(owner) if owner else None
    if not orphan and stat is not None and stat[0] != "Z" and (owner_start is None or stat[1] == owner_start):
        return None  # its owner runs it still (a zombie owner is dead)
    killed = False
    if boot is not None and boot == _boot_id():
        killed = _kill_recorded(pgid, start, mark if isinstance(mark, str) else None)
    _remove(path)
    return pgid if killed else None


def stop_all(wait_s: float) -> int:
    """Ask every supervisor this process runs to stop its child, and wait up to ``wait_s`` for them."""
    procs = [p for p in list(_running) if p.poll() is None]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + wait_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, end - time.monotonic()))
        except Exception:  # noqa: BLE001 - TimeoutExpired: it gets SIGKILL when this process exits
            pass
    return len(procs)


def _raise_on_sigterm():
    """In a one-shot tick, turn SIGTERM into SystemExit so the child is killed, not orphaned.

    Returns the handler to restore, or None where SIGTERM is already handled
    (loop mode, the foreground runner's threads).
    """
    import threading
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return None

    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    return signal.signal(signal.SIGTERM, stop)


def _outcome(raw: bytes, code: int, out, err, timeout_s: float) -> Outcome:
    out.seek(0)
    output = out.read()
    status = _report(raw)
    if status is None:
        return Outcome(False, output, "the child supervisor ended without a report (%s)" % _exit_text(code))
    out_bytes, reason = status.get("out_bytes", len(output)), status.get("reason")
    if status.get("error"):
        return Outcome(False, b"", status["error"])
    if status.get("code") == 0 and reason is None:
        return Outcome(True, output, "", out_bytes)
    if reason == "timeout":
        text = "timed out after %gs: killed" % timeout_s
    elif reason == "stopped":
        text = "stopped by its owner: killed"
    elif reason == "lease":
        text = "its lease ran out unrenewed (or was lost): killed"
    else:
        text = _exit_text(status.get("code"))
    err.seek(0)
    detail = err.read().decode("utf-8", "replace").strip() or output[-ERR_TAIL_BYTES:].decode(
        "utf-8", "replace").strip()
    return Outcome(False, output, text + (": " + detail if detail else ""), out_bytes, reason == "stopped")


def _exit_text(code) -> str:
    if code is None:
        return "no exit status"
    return "exit %d" % code if code >= 0 else "killed by signal %d" % -code


# -- the supervisor's side ---------------------------------------------------------

def _prctl():
    """libc's prctl on Linux (for PR_SET_PDEATHSIG), else None.

    Bound through _ctypes, the C half of ctypes: importing ctypes itself costs every
    supervisor's start ~3 ms. ctypes is the fallback should _ctypes ever differ.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import _ctypes

        class CInt(_ctypes._SimpleCData):
            _type_ = "i"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = CInt

        class Libc:
            _handle = _ctypes.dlopen(None, os.RTLD_NOW)
        return Function(("prctl", Libc()))
    except Exception:  # noqa: BLE001 - any difference in _ctypes: the public way
        pass
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


class _Child:
    """A started child, by pid (fork + exec here: importing subprocess would cost every start ~20 ms)."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout_s: float = None):
        end = None if timeout_s is None else time.monotonic() + timeout_s
        pause_s = 0.0005
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                return None
            time.sleep(pause_s if end is None else min(pause_s, max(0.0, end - time.monotonic())))
            pause_s = min(pause_s * 2, 0.02)
        return self.returncode


def _start(argv: list, stdin, env, out_w: int, err_w: int) -> _Child:
    """Fork and exec ``argv`` as a new session's (and group's) leader; OSError if it cannot run.

    On Linux the child gets PR_SET_PDEATHSIG (SIGKILL when this process dies),
    and exits at once if this process died before that took effect.
    """
    prctl, parent = _prctl(), os.getpid()
    report_r, report_w = os.pipe()  # close-on-exec: EOF on a successful exec
    pid = os.fork()
    if pid == 0:  # the child: only async-safe steps, then exec
        try:
            os.setsid()
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != parent:
                    os._exit(127)
            for sig in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)):
                if sig is not None:
                    signal.signal(sig, signal.SIG_DFL)  # Python ignores them; a child expects the default
            if stdin is not None:
                os.dup2(stdin, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            _execvpe(argv, os.environ if env is None else env)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
            try:
                os.write(report_w, str(getattr(exc, "strerror", None) or exc).encode("utf-8", "replace"))
            finally:
                os._exit(127)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as fh:
        failure = fh.read()
    if failure:
        os.waitpid(pid, 0)
        raise OSError(failure.decode("utf-8", "replace"))
    return _Child(pid)


def _execvpe(argv: list, env) -> None:
    """os.execvpe without its ``import warnings`` (os.get_exec_path): ~2 ms of every child's start."""
    if os.sep in argv[0]:
        os.execve(argv[0], argv, env)
    first_error, error = None, None
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(folder, argv[0]), argv, env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            error = exc
        except OSError as exc:
            error, first_error = exc, first_error or exc
    raise first_error or error or FileNotFoundError(2, "No such file or directory")


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(argv: list, timeout_s: float, grace_s: float, max_bytes: int, out_fd: int, err_fd: int,
              watch_fd: int = None, stdin=None, env: dict = None, lease_until: float = None,
              on_start=None) -> dict:
    """Run ``argv`` as a new process group's leader until it ends; kill the group as the module says.

    Writes at most ``max_bytes`` of its stdout to ``out_fd`` and the last
    ERR_TAIL_BYTES of its stderr to ``err_fd``. Returns {"code": exit code
    (negative: signal), "reason": None | "timeout" | "stopped" | "owner gone" | "lease",
    "out_bytes": stdout bytes written in all} or {"error": why it could not start}.
    ``lease_until`` (time.monotonic()): the group is killed then, unless the owner sends a
    later one (a line with the new time) on ``watch_fd``; 0 kills it at once.
    ``on_start(pgid, leader start time or None)`` is called once the child runs.
    """
    flags = {"stop": False, "lease": lease_until}
    wake_r, wake_w = os.pipe()  # SIGCHLD and SIGTERM write to it: they end the select at once
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    previous_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    previous_chld = signal.signal(signal.SIGCHLD, lambda *_: None)  # a Python handler: the wakeup fd sees it
    previous = signal.signal(signal.SIGTERM, lambda *_: flags.update(stop=True))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        try:
            if not argv:
                raise OSError("empty argv")
            proc = _start(argv, stdin, env, out_w, err_w)
        except OSError as exc:
            return {"error": "cannot run %s: %s" % (argv[0] if argv else "''", exc.strerror or exc)}
        finally:
            os.close(out_w)
            os.close(err_w)
        if on_start is not None:
            on_start(proc.pid, _start_time(proc.pid))
        return _pump(proc, {out_r: "out", err_r: "err"}, time.monotonic() + timeout_s, grace_s, max_bytes,
                     out_fd, err_fd, watch_fd, wake_r, flags)
    finally:
        os.close(out_r)
        os.close(err_r)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGCHLD, previous_chld)
        signal.set_wakeup_fd(previous_wake)
        os.close(wake_r)
        os.close(wake_w)


def _pump(proc, pipes: dict, deadline: float, grace_s: float, max_bytes: int, out_fd: int, err_fd: int, watch_fd,
          wake_fd: int, flags) -> dict:
    """Read the child's pipes until its leader exited and they closed (or DRAIN_S passed), killing
    its group on time. Waits in one select on the pipes, ``watch_fd`` and ``wake_fd`` (SIGCHLD,
    SIGTERM), up to the next thing due (deadline, grace, lease, drain) or SUPERVISOR_IDLE_S."""
    kept = total = 0
    err_tail = b""
    reason, kill_at, drain_until = None, None, None
    watch_buf = b""
    while True:
        now = time.monotonic()
        if reason is None and flags["lease"] is not None and now >= flags["lease"]:
            reason, kill_at = "lease", float("inf")  # no time for a grace: the lease is the owner's right to run it
            _kill_group(proc.pid, signal.SIGKILL)
        if reason is None and (flags["stop"] or now >= deadline):
            reason = "stopped" if flags["stop"] else "timeout"
            if grace_s > 0:
                _kill_group(proc.pid, signal.SIGTERM)
            kill_at = now + grace_s
        if kill_at is not None and now >= kill_at:
            _kill_group(proc.pid, signal.SIGKILL)
            kill_at = float("inf")
        if drain_until is None and proc.poll() is not None:
            _kill_group(proc.pid, signal.SIGKILL)  # what the leader left behind in its group
            drain_until = now + DRAIN_S
        if drain_until is not None and (not pipes or now >= drain_until):
            break  # done; or a descendant that left the group holds the pipes: stop reading
        due = [t for t in (kill_at, drain_until) if t is not None]
        if reason is None:
            due += [deadline] if flags["lease"] is None else [deadline, flags["lease"]]
        timeout_s = max(0.0, min([SUPERVISOR_IDLE_S] + [t - now for t in due]))
        watched = list(pipes) + [wake_fd] + ([watch_fd] if watch_fd is not None else [])
        for fd in select.select(watched, [], [], timeout_s)[0]:
            if fd == wake_fd:  # a signal arrived: the loop's checks see what it changed
                try:
                    os.read(fd, READ_CHUNK)
                except BlockingIOError:
                    pass
                continue
            if fd == watch_fd:  # a lease extension (a line), or end-of-file: the owner died
                data = os.read(fd, READ_CHUNK)
                if data:
                    watch_buf += data
                    while b"\n" in watch_buf:
                        line, watch_buf = watch_buf.split(b"\n", 1)
                        try:
                            flags["lease"] = float(line)
                        except ValueError:
                            pass
                    continue
                reason, watch_fd = "owner gone", None
                _kill_group(proc.pid, signal.SIGKILL)
                continue
            data = os.read(fd, READ_CHUNK)
            if not data:
                del pipes[fd]
            elif pipes[fd] == "out":
                total += len(data)
                if kept < max_bytes:
                    part = data[:max_bytes - kept]
                    _write_all(out_fd, part)
                    kept += len(part)
            else:
                err_tail = (err_tail + data)[-ERR_TAIL_BYTES:]
    _write_all(err_fd, err_tail)
    return {"code": proc.wait(), "reason": reason, "out_bytes": total}


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _main(args: list) -> int:
    """The supervisor process. ``args`` (``run`` builds them): timeout_s grace_s max_bytes watch_fd
    status_fd lease_until (or -) ``--`` argv... The child's stdin, stdout and stderr are this
    process's. On ``status_fd``: the line ``pgid <n> <leader start or ->`` once the child runs,
    then the report, one line (``_report_line``); no json here (its import costs ~10 ms)."""
    timeout_s, grace_s, max_bytes, watch_fd, status_fd, lease_until = args[:6]
    argv = args[7:] if args[6:7] == ["--"] else []
    watch_fd, status_fd = int(watch_fd), int(status_fd)
    for fd in (watch_fd, status_fd):
        os.set_inheritable(fd, False)  # the child must not hold them

    def started(pgid, start):  # first on the status pipe: the owner kills this group should this process die
        _write_all(status_fd, ("pgid %d %s\n" % (pgid, start or "-")).encode("ascii"))
    status = supervise(argv, float(timeout_s), float(grace_s), int(max_bytes), 1, 2, watch_fd=watch_fd, stdin=0,
                       lease_until=None if lease_until == "-" else float(lease_until), on_start=started)
    _write_all(status_fd, _report_line(status))
    return 0


# The supervisor's command (``python -I -S -c _BOOT <this file> <args>``): this module comes from its
# bytecode cache (__pycache__), where running the file as a script would compile it at every start.
# It ends with os._exit: nothing is buffered, and the interpreter's clean-up would cost every child ~3 ms.
_BOOT = ("import sys; sys.path.append(sys.argv[1].rpartition('/')[0]); import child; "
         "child.os._exit(child._main(sys.argv[2:]))")

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
