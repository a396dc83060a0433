"""Start every child process the same way: task handlers, agent turns, hooks.

A child is an argv run without a shell, its input on stdin, in an
environment without Redis credentials (``clean_env``), its output bounded,
and its whole process group killed at its deadline, when its owner stops it,
and when its owner dies, whatever killed the owner (SIGKILL included).

How: the owner (``run``) starts a small supervisor, this file run as a
script in a session of its own, and keeps the write end of a pipe whose
read end only the supervisor holds. The supervisor (``supervise``) starts
the child as the leader of a new process group, keeps at most ``max_bytes``
of its stdout (the rest is read and dropped, so the child never blocks) and
the tail of its stderr, and kills the child's whole group:

- when the child exits (whatever it left running in its group goes too);
- at the deadline (SIGTERM first when a grace is given, SIGKILL after it);
- on SIGTERM from the owner (a graceful stop, same sequence as the deadline);
- at once when the pipe reports end-of-file: the owner died.

The deadline is the supervisor's, so a child is stopped on time even while
its owner is frozen (SIGSTOP). On Linux the child's leader also gets
PR_SET_PDEATHSIG, for a supervisor that is itself killed with SIGKILL.
Not covered: a descendant that leaves the group on purpose (setsid,
setpgid), and SIGKILL of the supervisor on macOS.

Costs one more Python start-up per child (the supervisor, ``-I -S``).
"""

import json
import os
import select
import signal
import sys
import time

STOP_POLL_S = 0.1       # how often an owner checks its stop request, and the supervisor its flags
ERR_TAIL_BYTES = 4096   # stderr kept for the error message
DRAIN_S = 2.0           # reading on after the leader exited and its group was killed
SUPERVISOR_SLACK_S = 10.0  # owner's backstop past deadline + grace, should the supervisor hang
READ_CHUNK = 65536
PR_SET_PDEATHSIG = 1
# Environment variables never passed to a child: the config reads the first two
# (config.ENV_OVERRIDES); redis-cli reads the third.
SECRET_ENV = ("REDIS_PASSWORD", "REDIS_USERNAME", "REDISCLI_AUTH")
SECRET_ENV_WORDS = ("PASS", "AUTH", "SECRET", "TOKEN", "CREDENTIAL")  # in a name with REDIS in it

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

    Dropped: SECRET_ENV, any name with REDIS and one of SECRET_ENV_WORDS in it,
    and any variable whose value is one of the config's passwords.
    """
    secrets = set(config_secrets(cfg)) if cfg is not None else set()
    env = {}
    for name, value in (os.environ if base is None else base).items():
        upper = name.upper()
        if upper in SECRET_ENV or value in secrets or (
                "REDIS" in upper and any(word in upper for word in SECRET_ENV_WORDS)):
            continue
        env[name] = value
    env.update(extra or {})
    return env


# -- the owner's side ------------------------------------------------------------

def run(argv: list, payload: bytes, env: dict, timeout_s: float, max_bytes: int, term_grace_s: float = 0,
        should_stop=None) -> Outcome:
    """Run ``argv`` under a supervisor and wait for it (see the module docstring).

    ``should_stop`` (polled every STOP_POLL_S) asks for a graceful stop: the
    child's group gets SIGTERM, then SIGKILL ``term_grace_s`` later, and the
    Outcome is ``stopped``. In a one-shot process SIGTERM does the same
    through SystemExit; whatever ends this call early, the child's group is
    killed before it returns or raises.
    """
    import subprocess
    import tempfile
    watch_r, watch_w = os.pipe()
    status_r, status_w = os.pipe()
    spec = json.dumps({"argv": list(argv), "timeout_s": timeout_s, "grace_s": term_grace_s,
                       "max_bytes": max_bytes, "watch_fd": watch_r, "status_fd": status_w})
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin.write(payload)
        stdin.seek(0)
        try:
            try:
                proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), spec], stdin=stdin,
                                        stdout=out, stderr=err, env=env, pass_fds=(watch_r, status_w),
                                        start_new_session=True)
            finally:
                os.close(watch_r)
                os.close(status_w)
        except OSError as exc:
            os.close(watch_w)
            os.close(status_r)
            return Outcome(False, b"", "cannot start the child supervisor: %s" % (exc.strerror or exc))
        _running.add(proc)
        try:
            _wait(proc, watch_w, should_stop, timeout_s + term_grace_s + SUPERVISOR_SLACK_S)
            with os.fdopen(status_r, "rb") as fh:
                status_r = None
                raw = fh.read()
        finally:
            if watch_w is not None and proc.poll() is None:
                os.close(watch_w)  # the supervisor kills the child's group at once
                watch_w = None
                proc.wait()
            for fd in (watch_w, status_r):
                if fd is not None:
                    os.close(fd)
            _running.discard(proc)
        return _outcome(raw, proc.returncode, out, err, timeout_s)


def _wait(proc, watch_w: int, should_stop, backstop_s: float) -> None:
    import subprocess
    restore = _raise_on_sigterm()
    stop_sent, give_up = False, time.monotonic() + backstop_s
    try:
        while True:
            try:
                proc.wait(timeout=STOP_POLL_S)
                return
            except subprocess.TimeoutExpired:
                pass
            if not stop_sent and should_stop is not None and should_stop():
                proc.send_signal(signal.SIGTERM)
                stop_sent = True
            if time.monotonic() > give_up:
                proc.kill()  # a hung supervisor: its child's leader dies with it (Linux)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


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
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    return signal.signal(signal.SIGTERM, stop)


def _outcome(raw: bytes, code: int, out, err, timeout_s: float) -> Outcome:
    out.seek(0)
    output = out.read()
    try:
        status = json.loads(raw.decode("utf-8"))
    except ValueError:
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

def _libc():
    """libc through ctypes on Linux (for PR_SET_PDEATHSIG), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
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
    libc, parent = _libc(), os.getpid()
    report_r, report_w = os.pipe()  # close-on-exec: EOF on a successful exec
    pid = os.fork()
    if pid == 0:  # the child: only async-safe steps, then exec
        try:
            os.setsid()
            if libc is not None:
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != parent:
                    os._exit(127)
            for sig in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)):
                if sig is not None:
                    signal.signal(sig, signal.SIG_DFL)  # Python ignores them; a child expects the default
            if stdin is not None:
                os.dup2(stdin, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.execvpe(argv[0], argv, os.environ if env is None else env)
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


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(argv: list, timeout_s: float, grace_s: float, max_bytes: int, out_fd: int, err_fd: int,
              watch_fd: int = None, stdin=None, env: dict = None) -> dict:
    """Run ``argv`` as a new process group's leader until it ends; kill the group as the module says.

    Writes at most ``max_bytes`` of its stdout to ``out_fd`` and the last
    ERR_TAIL_BYTES of its stderr to ``err_fd``. Returns {"code": exit code
    (negative: signal), "reason": None | "timeout" | "stopped" | "owner gone",
    "out_bytes": stdout bytes written in all} or {"error": why it could not start}.
    """
    flags = {"stop": False}
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
        return _pump(proc, {out_r: "out", err_r: "err"}, time.monotonic() + timeout_s, grace_s, max_bytes,
                     out_fd, err_fd, watch_fd, flags)
    finally:
        os.close(out_r)
        os.close(err_r)
        signal.signal(signal.SIGTERM, previous)


def _pump(proc, pipes: dict, deadline: float, grace_s: float, max_bytes: int, out_fd: int, err_fd: int, watch_fd,
          flags) -> dict:
    kept = total = 0
    err_tail = b""
    reason, kill_at, leader_done_at = None, None, None
    while pipes or proc.poll() is None:
        now = time.monotonic()
        if reason is None and (flags["stop"] or now >= deadline):
            reason = "stopped" if flags["stop"] else "timeout"
            if grace_s > 0:
                _kill_group(proc.pid, signal.SIGTERM)
            kill_at = now + grace_s
        if kill_at is not None and now >= kill_at:
            _kill_group(proc.pid, signal.SIGKILL)
            kill_at = float("inf")
        if leader_done_at is None and proc.poll() is not None:
            _kill_group(proc.pid, signal.SIGKILL)  # what the leader left behind in its group
            leader_done_at = now
        if leader_done_at is not None and now - leader_done_at > DRAIN_S:
            break  # a descendant that left the group holds the pipes: stop reading
        if not pipes:  # the child closed its output: wait for its exit, a deadline or the owner's death
            proc.wait(STOP_POLL_S)
        watched = list(pipes) + ([watch_fd] if watch_fd is not None else [])
        ready = select.select(watched, [], [], STOP_POLL_S if pipes else 0)[0] if watched else []
        for fd in ready:
            if fd == watch_fd:  # only end-of-file makes it readable: the owner died
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


def _main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    for fd in (spec["watch_fd"], spec["status_fd"]):
        os.set_inheritable(fd, False)  # the child must not hold them
    status = supervise(spec["argv"], spec["timeout_s"], spec["grace_s"], spec["max_bytes"], 1, 2,
                       watch_fd=spec["watch_fd"], stdin=0)
    _write_all(spec["status_fd"], json.dumps(status).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
