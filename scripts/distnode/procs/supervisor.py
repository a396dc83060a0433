"""The supervisor process: runs one child and kills its whole process group on time.

``spawn.run`` starts this file as ``python -I -S -c BOOT <this file> <args>``
in a session of its own. The supervisor starts the child (fork + exec, no
shell) as the leader of a new process group, with this process's stdin,
keeps at most ``max_bytes`` of its stdout (the rest is read and dropped, so
the child never blocks) and the tail of its stderr, and kills the child's
whole group:

- when the child exits (whatever it left running in its group goes too);
- at the deadline (SIGTERM first when a grace is given, SIGKILL after it);
- on SIGTERM from the owner (a graceful stop, same sequence as the deadline);
- at once when the owner's pipe reports end-of-file: the owner died;
- when a lease runs out without the owner's extension (a line on the same
  pipe): a frozen or cut-off owner's child dies before the lease it runs
  under lapses elsewhere.

The deadline is the supervisor's, so a child is stopped on time even while
its owner is frozen (SIGSTOP). On Linux the child's leader also gets
PR_SET_PDEATHSIG, for a supervisor that is itself killed with SIGKILL.

The protocol is plain text (no json here: its import costs ~10 ms). Arguments:
``timeout_s grace_s max_bytes watch_fd status_fd lease_until|- -- argv...``.
On ``status_fd``: the line ``pgid <n> <leader start time or ->`` once the child
runs (``started_line``), then one report line (``report_line``): ``exit <code>
<out_bytes> <reason or ->`` or ``error <why>``. It waits on events, not in
polling steps: one select on the child's pipes, the owner's pipe and a wakeup
pipe that SIGCHLD and SIGTERM write to, with a timeout computed from what is
due next (deadline, grace, lease, drain).

Start cost: the bare interpreter's start plus a few ms (``spawn.run`` of
``true``: 17-20 ms where a bare ``python3 -I -S`` takes 11-14 ms; importing this
module from its cache: ~1.5 ms, as before it was split out of the spawning code), kept so by
importing only os, sys, time, select, _signal and _ctypes (no json, signal,
ctypes or subprocess), by loading this module from its bytecode cache (BOOT),
and by leaving through os._exit. Nothing here imports the rest of the package.
"""

import os
import select
import sys
import time

try:
    import _signal as signal  # the C module: `signal` imports enum, ~5 ms of every supervisor's start
except ImportError:  # pragma: no cover - an interpreter without it
    import signal

SUPERVISOR_IDLE_S = 1.0  # the longest the supervisor sleeps with no event due (SIGCHLD, SIGTERM wake it)
ERR_TAIL_BYTES = 4096   # stderr kept for the error message
DRAIN_S = 2.0           # reading on after the leader exited and its group was killed
READ_CHUNK_BYTES = 65536  # defaults.READ_CHUNK_BYTES: a copy, as this module imports nothing of the package
PR_SET_PDEATHSIG = 1
START_POLL_FIRST_S = 0.0005  # _Child.wait's first pause, doubling up to START_POLL_MAX_S
START_POLL_MAX_S = 0.02

# The supervisor's command (``python -I -S -c BOOT <this file> <args>``): this module comes from its
# bytecode cache (__pycache__), where running the file as a script would compile it at every start.
# It ends with os._exit: nothing is buffered, and the interpreter's clean-up would cost every child ~3 ms.
BOOT = ("import sys; sys.path.append(sys.argv[1].rpartition('/')[0]); import supervisor; "
        "supervisor.os._exit(supervisor.main(sys.argv[2:]))")


# -- the status pipe's protocol (both sides) -------------------------------------------

def started_line(pgid: int, start) -> bytes:
    """The first line on the status pipe: the child's group and its leader's start time."""
    return ("pgid %d %s\n" % (pgid, start or "-")).encode("ascii")


def parse_started(raw: bytes):
    """((pgid, leader start time or None), rest) from the status stream, whose first line is
    ``started_line``; (None, raw) before that line (or if the child never started)."""
    if not raw.startswith(b"pgid ") or b"\n" not in raw:
        return None, raw
    line, rest = raw.split(b"\n", 1)
    parts = line.decode("ascii", "replace").split()
    try:
        return (int(parts[1]), parts[2] if len(parts) > 2 and parts[2] != "-" else None), rest
    except (IndexError, ValueError):
        return None, rest


def report_line(status: dict) -> bytes:
    """``supervise``'s result as the report line."""
    if status.get("error"):
        return ("error %s\n" % " ".join(str(status["error"]).split())).encode("utf-8", "replace")
    return ("exit %d %d %s\n" % (status["code"], status["out_bytes"], status["reason"] or "-")).encode("utf-8")


def parse_report(raw: bytes):
    """The report (after the ``pgid`` line) as ``supervise`` returned it; None when incomplete
    (the supervisor was killed mid-way)."""
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


def proc_stat(pid: int):
    """(state, start time in clock ticks since boot) of ``pid`` from /proc, or None (gone, or no /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid: int):
    """``pid``'s start time (with its pid it names one process for good), or None."""
    stat = proc_stat(pid)
    return stat[1] if stat else None


# -- starting the child -----------------------------------------------------------------

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

    def wait(self):
        pause_s = START_POLL_FIRST_S
        while self.poll() is None:
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, START_POLL_MAX_S)
        return self.returncode


def _start(argv: list, out_w: int, err_w: int) -> _Child:
    """Fork and exec ``argv`` as a new session's (and group's) leader, with this process's stdin
    and environment; OSError if it cannot run.

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
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            _execvpe(argv, os.environ)
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


# -- watching it --------------------------------------------------------------------------

def supervise(argv: list, timeout_s: float, grace_s: float, max_bytes: int, out_fd: int, err_fd: int,
              watch_fd: int = None, lease_until: float = None, on_start=None) -> dict:
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
            proc = _start(argv, out_w, err_w)
        except OSError as exc:
            return {"error": "cannot run %s: %s" % (argv[0] if argv else "''", exc.strerror or exc)}
        finally:
            os.close(out_w)
            os.close(err_w)
        if on_start is not None:
            on_start(proc.pid, start_time(proc.pid))
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
                    os.read(fd, READ_CHUNK_BYTES)
                except BlockingIOError:
                    pass
                continue
            if fd == watch_fd:  # a lease extension (a line), or end-of-file: the owner died
                data = os.read(fd, READ_CHUNK_BYTES)
                if data:
                    watch_buf = _read_extensions(watch_buf + data, flags)
                    continue
                reason, watch_fd = "owner gone", None
                _kill_group(proc.pid, signal.SIGKILL)
                continue
            data = os.read(fd, READ_CHUNK_BYTES)
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


def _read_extensions(buf: bytes, flags: dict) -> bytes:
    """Take every whole line of ``buf`` as the lease's new end; return the unfinished rest."""
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        try:
            flags["lease"] = float(line)
        except ValueError:
            pass
    return buf


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def main(args: list) -> int:
    """The supervisor process. ``args`` (``spawn.run`` builds them): timeout_s grace_s max_bytes watch_fd
    status_fd lease_until (or -) ``--`` argv... The child's stdin, stdout and stderr are this
    process's. Writes ``started_line`` then ``report_line`` on ``status_fd``."""
    timeout_s, grace_s, max_bytes, watch_fd, status_fd, lease_until = args[:6]
    argv = args[7:] if args[6:7] == ["--"] else []
    watch_fd, status_fd = int(watch_fd), int(status_fd)
    for fd in (watch_fd, status_fd):
        os.set_inheritable(fd, False)  # the child must not hold them

    def started(pgid, start):  # first on the status pipe: the owner kills this group should this process die
        _write_all(status_fd, started_line(pgid, start))
    status = supervise(argv, float(timeout_s), float(grace_s), int(max_bytes), 1, 2, watch_fd=watch_fd,
                       lease_until=None if lease_until == "-" else float(lease_until), on_start=started)
    _write_all(status_fd, report_line(status))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
