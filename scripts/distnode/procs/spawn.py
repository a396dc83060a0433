"""Start every child process the same way: task handlers, agent turns, hooks.

A child is an argv run without a shell, its input on stdin, in an
environment without Redis credentials (``env.clean_env``), its output
bounded, and its whole process group killed at its deadline, when its owner
stops it, when its lease runs out, and when its owner dies, whatever killed
the owner (SIGKILL included).

How: the owner (``run``) starts a small supervisor (supervisor.py) in a
session of its own and keeps the write end of a pipe whose read end only the
supervisor holds: end-of-file there means the owner died. The supervisor
reports the child's group on a status pipe as it starts it, so the owner
kills the rest of the group when the supervisor ends without a report, and
(``record``, records.kill_leftover) the owner's successor does when both
were killed.

``run`` waits for the child (a worker's handler, an agent turn);
``start_detached`` returns at once and leaves the waiting to a detached
owner process (detached.py) that runs ``run`` and logs the outcome (hooks:
a tick never waits for them).
"""

import os
import select
import signal
import sys
import threading
import time

from distnode.core import defaults
from distnode.core.errors import Terminated
from distnode.procs import records
from distnode.procs import supervisor

SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The detached owner's command (``python -I -S -c DETACHED_BOOT <scripts dir> <args>``).
DETACHED_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from distnode.procs import detached; " \
                "sys.exit(detached.main(sys.argv[2:]))"

_running = set()  # supervisors this process started and has not reaped (stop_all)


class Outcome:
    """What a child did: ``ok`` (exit 0), ``output`` (kept stdout), ``error`` (why not ok),
    ``out_bytes`` (all stdout it wrote, kept or not), ``reason`` (None, or what ended it: "timeout",
    "stopped", "lease", "owner gone", "start" when it could not start, "no report" when its
    supervisor died), ``code`` (exit code, negative: signal; None if unknown), ``err_tail``
    (the end of its stderr)."""

    __slots__ = ("ok", "output", "error", "out_bytes", "reason", "code", "err_tail")

    def __init__(self, ok: bool, output: bytes, error: str, out_bytes: int = 0, reason: str = None,
                 code: int = None, err_tail: bytes = b""):
        self.ok, self.output, self.error, self.out_bytes = ok, output, error, out_bytes
        self.reason, self.code, self.err_tail = reason, code, err_tail

    @property
    def stopped(self) -> bool:
        """Ended by its owner's stop request (the task goes back to the queue, not counted as failed)."""
        return self.reason == "stopped"

    @property
    def dropped_bytes(self) -> int:
        return max(0, self.out_bytes - len(self.output))


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

    ``env`` None: this process's environment (callers pass env.clean_env's).
    ``should_stop`` (polled every defaults.CHILD_STOP_POLL_S) asks for a graceful stop: the
    child's group gets SIGTERM, then SIGKILL ``term_grace_s`` later, and the
    Outcome is ``stopped``. In a one-shot process SIGTERM does the same
    through ``errors.Terminated`` (exit 143); whatever ends this call early, the child's group is
    killed before it returns or raises. ``lease``: the child's group is also
    killed when the lease runs out (see Lease). ``record``: a file noting the
    child's process group while it runs, for records.kill_leftover should this
    process and the supervisor both be killed. A supervisor that ends without
    a report (killed) has the child's group killed here before this returns.
    """
    import subprocess  # deferred: ~5 ms (~20 ms under -S) of every worker tick that runs no child
    import tempfile  # deferred with it: ~6 ms under -S
    mark = records.new_mark()
    env = dict(os.environ if env is None else env, **{records.MARK_ENV: mark})  # the supervisor's child inherits it
    watch_r, watch_w = os.pipe()
    status_r, status_w = os.pipe()
    spec = [repr(float(timeout_s)), repr(float(term_grace_s)), str(int(max_bytes)), str(watch_r), str(status_w),
            repr(float(lease.until)) if lease is not None else "-", "--"] + [str(a) for a in argv]
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin.write(payload)
        stdin.seek(0)
        try:
            try:
                proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", supervisor.BOOT, supervisor.__file__]
                                        + spec, stdin=stdin, stdout=out, stderr=err, env=env,
                                        pass_fds=(watch_r, status_w), start_new_session=True)
            finally:
                os.close(watch_r)
                os.close(status_w)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv
            os.close(watch_w)
            os.close(status_r)
            why = getattr(exc, "strerror", None) or exc
            return Outcome(False, b"", "cannot start the child supervisor: %s" % why, reason="start")
        _running.add(proc)
        raw = b""
        try:
            backstop_s = timeout_s + term_grace_s + defaults.CHILD_SUPERVISOR_SLACK_S
            raw = _wait(proc, watch_w, status_r, should_stop, backstop_s, lease, record, mark)
        finally:
            if watch_w is not None and proc.poll() is None:
                os.close(watch_w)  # the supervisor kills the child's group at once
                watch_w = None
                proc.wait()
            for fd in (watch_w, status_r):
                if fd is not None:
                    os.close(fd)
            _running.discard(proc)
        started, raw = supervisor.parse_started(raw)
        if started is not None and supervisor.parse_report(raw) is None:  # the supervisor was killed
            records.kill_recorded(started[0], started[1], mark)  # its child's group goes too
        if record and started is not None:
            records.remove(record)
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
            if select.select([status_r], [], [], defaults.CHILD_STOP_POLL_S)[0]:
                data = os.read(status_r, defaults.READ_CHUNK_BYTES)
                if not data:
                    proc.wait()
                    return raw
                raw += data
                if record and not recorded and b"\n" in raw:
                    recorded = True
                    started = supervisor.parse_started(raw)[0]
                    if started is not None:
                        records.write_record(record, started, mark)
            if not stop_sent and should_stop is not None and should_stop():
                proc.send_signal(signal.SIGTERM)
                stop_sent = True
            if time.monotonic() > give_up:
                proc.kill()  # a hung supervisor: its child's leader dies with it (Linux)
            if next_renew is not None and time.monotonic() >= next_renew:
                next_renew = _renew(lease, watch_w)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


def _renew(lease: Lease, watch_w: int):
    """One renewal of ``lease``, its new end sent to the supervisor; when the next one is due (None: never)."""
    until = lease.renew()
    if until is None:
        return time.monotonic() + lease.period_s * defaults.CHILD_RENEW_RETRY_FRACTION
    try:
        os.write(watch_w, b"%.6f\n" % until)
    except OSError:
        pass  # the supervisor ended: its report comes next
    return time.monotonic() + lease.period_s if until else None


def _raise_on_sigterm():
    """In a one-shot tick, turn SIGTERM into ``Terminated`` so the child is killed, not orphaned, and the
    runner says so in one line (exit 143).

    Returns the handler to restore, or None where SIGTERM is already handled
    (loop mode, the foreground runner's threads).
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return None

    def stop(_signum, _frame):
        raise Terminated("stopped by SIGTERM while a task handler ran; its whole process group was killed")
    return signal.signal(signal.SIGTERM, stop)


def _outcome(raw: bytes, code: int, out, err, timeout_s: float) -> Outcome:
    out.seek(0)
    output = out.read()
    status = supervisor.parse_report(raw)
    if status is None:
        return Outcome(False, output, "the child supervisor ended without a report (%s)" % exit_text(code),
                       reason="no report")
    if status.get("error"):
        return Outcome(False, b"", status["error"], reason="start")
    out_bytes, reason, code = status.get("out_bytes", len(output)), status.get("reason"), status.get("code")
    err.seek(0)
    err_tail = err.read()
    if code == 0 and reason is None:
        return Outcome(True, output, "", out_bytes, code=0, err_tail=err_tail)
    text = {"timeout": "timed out after %gs: killed" % timeout_s, "stopped": "stopped by its owner: killed",
            "lease": "its lease ran out unrenewed (or was lost): killed"}.get(reason) or exit_text(code)
    detail = err_tail.decode("utf-8", "replace").strip() or output[-supervisor.ERR_TAIL_BYTES:].decode(
        "utf-8", "replace").strip()
    return Outcome(False, output, text + (": " + detail if detail else ""), out_bytes, reason, code, err_tail)


def exit_text(code) -> str:
    """An exit code as words: ``exit 3``, ``killed by signal 9``, ``no exit status``."""
    if code is None:
        return "no exit status"
    return "exit %d" % code if code >= 0 else "killed by signal %d" % -code


def stop_all(wait_s: float) -> int:
    """Ask every supervisor this process runs to stop its child, and wait up to ``wait_s`` for them."""
    import subprocess  # run() imported it already if anything runs; otherwise nothing is waited for
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
        except subprocess.TimeoutExpired:  # it gets SIGKILL when this process exits (its pipe closes)
            pass
    return len(procs)


def start_detached(argv: list, env: dict, timeout_s: float, max_bytes: int, log_path: str, label: str,
                   rotate=(0, 0), record_prefix: str = ""):
    """Run ``argv`` as ``run`` does, from a detached owner process; return that process (a Popen)
    at once, without waiting.

    The owner (detached.py, in a session of its own) appends at most
    ``max_bytes`` of the child's output to ``<log_path>.out`` (rotated at
    ``rotate`` = (max bytes, backups), as the logs are) and one line with
    ``label``, the argv and the outcome to ``log_path``. ``record_prefix``:
    its record is ``<prefix><owner pid>.json`` (records.kill_leftovers
    kills what a killed owner and supervisor left). OSError if it cannot start.
    """
    import subprocess  # deferred: ~5 ms of every tick that fires nothing (most do not)
    spec = [repr(float(timeout_s)), str(int(max_bytes)), log_path, str(int(rotate[0])), str(int(rotate[1])),
            record_prefix or "-", label, "--"] + [str(a) for a in argv]
    return subprocess.Popen([sys.executable, "-I", "-S", "-c", DETACHED_BOOT, SCRIPTS_DIR] + spec, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
