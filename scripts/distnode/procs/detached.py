"""The detached owner: runs one child through ``spawn.run`` and logs what it did (hooks).

``spawn.start_detached`` starts this module in a session of its own so the
process that fired the child (a one-shot tick) never waits for it. Here it is
an owner like any other: the same supervisor, the same group kill at the
deadline, the same record for a successor should this process and the
supervisor both be killed, and killing this process (even with SIGKILL)
kills the child's group at once (the supervisor sees its pipe close).

It writes at most ``max_bytes`` of the child's stdout, then the tail of its
stderr, to ``<log_path>.out`` (rotated as the logs are), and one line to
``log_path``: ``<UTC time> <INFO|ERROR> <label> <argv> (<outcome>, <seconds>s)``,
the outcome one of ``exit <n>``, ``killed by signal <n>``, ``killed after
<timeout>s``, ``failed to start: <why>``, with ``, <n> output bytes dropped``
when the output went past ``max_bytes``. Its exit status mirrors the child's
(124 at the timeout, 127 when it could not start, 128 + n for signal n).
"""

import os
import time

from distnode.procs import spawn

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_NOT_STARTED = 127  # as a shell's "command not found"
LOG_MODE = 0o640


def main(args: list) -> int:
    """``args`` (start_detached builds them): timeout_s max_bytes log_path rotate_bytes backups
    record_prefix (or -) label ``--`` argv..."""
    timeout_s, max_bytes, log_path, rotate_bytes, backups, record_prefix, label = args[:7]
    argv = args[8:] if args[7:8] == ["--"] else []
    timeout_s, max_bytes = float(timeout_s), int(max_bytes)
    record = None if record_prefix == "-" else "%s%d.json" % (record_prefix, os.getpid())
    started = time.monotonic()
    try:
        outcome = spawn.run(argv, b"", None, timeout_s, max_bytes, record=record)
    except OSError as exc:  # no pipe, no temporary file: nothing ran
        outcome = spawn.Outcome(False, b"", "cannot start: %s" % (exc.strerror or exc), reason="start")
    append_rotating(log_path + ".out", outcome.output + outcome.err_tail, int(rotate_bytes), int(backups))
    code, text = describe(outcome, timeout_s)
    if outcome.out_bytes > max_bytes:
        text += ", %d output bytes dropped" % (outcome.out_bytes - max_bytes)
    line = "%s %s %s %s (%s, %.2fs)\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                          "INFO" if code == 0 else "ERROR", label, " ".join(argv), text,
                                          time.monotonic() - started)
    _append(log_path, line.encode("utf-8", "replace"))
    return code


def describe(outcome, timeout_s: float) -> tuple:
    """(exit status for this process, the outcome in words) of a spawn.Outcome."""
    if outcome.reason == "start":
        return EXIT_NOT_STARTED, "failed to start: %s" % outcome.error.split(": ", 1)[-1]
    if outcome.reason == "timeout":
        return EXIT_TIMEOUT, "killed after %gs" % timeout_s
    if outcome.code is None:
        return 1, outcome.error
    code = outcome.code
    return (code if code >= 0 else 128 - code), spawn.exit_text(code)


def append_rotating(path: str, data: bytes, max_bytes: int, backups: int) -> None:
    """Append ``data`` to ``path``, first rotating it (path.1, path.2, ...) once it would pass
    ``max_bytes`` (0: never rotated); at most ``max_bytes`` of ``data`` is written."""
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
    _append(path, data[:max_bytes] if max_bytes > 0 else data)


def _append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
