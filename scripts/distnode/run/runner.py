"""The shared ``main()`` of every tick script: flags, config, log, lock, retries, loop.

A tick script defines ``tick(ctx) -> dict`` and calls ``runner.main(...)``.
This module turns that into a command that:

- parses the common flags (``--config-dir``, ``--log-dir``, ``--print-config``,
  ``--loop``, ``--json``, ``--quiet``, ``--help``) plus the script's own;
- never overlaps a previous run of itself for the same node (non-blocking
  ``flock``; the late run logs and exits 0);
- retries a tick on connection faults only, ``retry_count`` times,
  ``retry_delay`` seconds apart with jitter;
- maps failures to exit codes with one line on stderr and no traceback:
  0 ok, 1 Redis unreachable or refusing, 2 bad config or usage,
  3 an unexpected error (its traceback goes to the log file only);
- refuses an unwritable log dir as a config error (exit 2) before the tick;
- treats output cut short by its reader (``status | head``) as success;
- in ``--loop``, survives every exception a tick raises (traceback to the
  log, one line to the console) and keeps ticking.

The flag parser is hand-written because ``argparse`` costs a cron tick
about as much as its Redis round trip.
"""

import os
import sys
import time

from distnode.core import config as config_mod
from distnode.redis import client as rc
from distnode.core.errors import NodeIdCollision, TickError

EXIT_OK, EXIT_REDIS, EXIT_CONFIG, EXIT_INTERNAL = 0, 1, 2, 3
RETRYABLE = (rc.RedisConnectionError, rc.LoadingError, rc.ReadOnlyError, rc.MasterDownError)

COMMON_FLAGS = [
    ("--config-dir", "DIR", "config folder (env OPENCLAW_DISTRIBUTED_CONFIG_DIR; default: the skill's config/)"),
    ("--log-dir", "DIR", "log folder (env OPENCLAW_DISTRIBUTED_LOG_DIR; default: the skill's logs/)"),
    ("--print-config", None, "print the effective config with the source of each value, then exit"),
    ("--loop", None, "run ticks forever in one process (hosts without OpenClaw cron); stop with SIGTERM"),
    ("--json", None, "print the tick's result as one JSON object on stdout"),
    ("--quiet", None, "log to the file and syslog only, not to stderr"),
    ("--help", None, "show this help and exit"),
]


class UsageError(Exception):
    pass


def parse_flags(argv, flags) -> dict:
    """Parse ``--name VALUE`` / ``--name=VALUE`` / ``--switch``; return {name: value}.

    Words that are not options are collected in order under ``"args"``, and so is
    every word after ``--`` (a value like ``-1`` is then not taken for an option).
    A repeated ``--name VALUE`` keeps every value in a list under ``"--name*"``.
    """
    spec = {name: metavar for name, metavar, _ in flags}
    out, i = {"args": []}, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out["args"].extend(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            out["args"].append(arg)
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name == "-h":
            name = "--help"
        if name not in spec:
            raise UsageError("unknown option %s (see --help)" % arg)
        if spec[name] is None:
            if eq:
                raise UsageError("%s takes no value" % name)
            out[name] = True
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError("%s needs a value (%s)" % (name, spec[name]))
                value = argv[i]
            out[name] = value
            out.setdefault(name + "*", []).append(value)
        i += 1
    return out


MAX_FLAG_INT = 2 ** 63 - 1  # a whole-number flag never exceeds what Redis stores as an integer


def number_flag(ctx, flag: str, kind=float, minimum=0, above: bool = False, default=None, maximum=None):
    """The value of a numeric ``--flag`` (``default`` when absent); a bad one is a UsageError.

    It must be a finite ``kind`` of at least ``minimum`` (``above``: strictly more) and at most
    ``maximum`` (default: a year for a number of seconds, 2**63-1 for a whole number).
    """
    raw = ctx.flags.get(flag)
    if raw is None:
        return default
    if maximum is None:
        maximum = MAX_FLAG_INT if kind is int else config_mod.MAX_RETENTION_S
    try:  # ASCII only: int() and float() also take '\u0663' (Arabic-Indic 3) and '1_0'
        value = kind(raw) if len(raw) <= 40 and raw.isascii() and "_" not in raw else None
    except ValueError:
        value = None
    if value is not None and value > maximum:
        raise UsageError("%s must be at most %g, got %s" % (flag, maximum, shown(raw)))
    if value is None or value != value or value in (float("inf"), float("-inf")) or value < minimum \
            or (above and value == minimum):
        raise UsageError("%s must be a %s %s %g, got %s" % (
            flag, "whole number" if kind is int else "number", "above" if above else "of at least", minimum,
            shown(raw)))
    return value


def shown(value: str, width: int = 40) -> str:
    """``value`` quoted for a one-line message: control characters escaped, cut to about ``width``."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 4] + "...'"


def format_help(prog: str, description: str, flags, usage: str = "[options]") -> str:
    lines = ["usage: %s %s" % (prog, usage), "", description.strip(), "", "options:"]
    for name, metavar, text in flags:
        head = "  %s %s" % (name, metavar) if metavar else "  " + name
        lines.append("%-26s %s" % (head, text) if len(head) < 26 else head + "\n" + " " * 27 + text)
    lines += ["", "exit codes: 0 ok (or skipped: a previous run still holds the lock), 1 Redis unreachable",
              "or refusing, 2 bad config or usage, 3 unexpected error (details in the log file)."]
    return "\n".join(lines)


class Context:
    """What a tick gets: config, logger, a lazily connected client, its flags."""

    def __init__(self, script: str, cfg, log, flags: dict):
        self.script, self.cfg, self.log, self.flags = script, cfg, log, flags
        self.node_id = cfg.node_id
        self.args = flags.get("args", [])
        self.loop = bool(flags.get("--loop"))
        self.exit_code = EXIT_OK
        self.stop_event = None  # a threading.Event when several loops share one process
        self.failures_in_a_row = 0  # loop mode: ticks failed since the last good one
        self.last_ok_s = None  # loop mode: time.monotonic() of the last good tick
        self._stopping = False
        self._redis = None
        self._sleeping = False

    @property
    def stopping(self) -> bool:
        return self._stopping or (self.stop_event is not None and self.stop_event.is_set())

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = value

    @property
    def redis(self) -> rc.Redis:
        if self._redis is None:
            self._redis = rc.Redis.from_settings(self.cfg["redis"])
        return self._redis

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on SIGTERM/SIGINT in loop mode."""
        if self.stopping or seconds <= 0:
            return
        if self.stop_event is not None:
            self.stop_event.wait(seconds)
            return
        self._sleeping = True
        try:
            time.sleep(seconds)
        except _WakeUp:
            pass
        finally:
            self._sleeping = False


class _WakeUp(Exception):
    pass


def _jitter(delay_s: float) -> float:
    return delay_s * (1 + os.urandom(1)[0] / 510.0)  # +0..50 %, no `random` import


def run_with_retry(ctx: Context, tick):
    node = ctx.cfg["node"]
    attempts = node["retry_count"] + 1
    for attempt in range(1, attempts + 1):
        try:
            return tick(ctx)
        except RETRYABLE as exc:
            if attempt >= attempts or ctx.stopping:
                raise
            ctx.log.warning("attempt %d/%d failed: %s; retrying", attempt, attempts, exc)
            ctx.sleep(_jitter(node["retry_delay"]))


def acquire_lock(cfg, script: str, long_lived: bool = False):
    """Hold ``<run_dir>/<script>.<node>.lock``; None if another run holds it.

    ``long_lived`` (--loop, --foreground): the file then names our pid, for ``node_manager.py
    deregister`` to say which process to stop; a one-shot run leaves it empty (it writes only
    to clear a pid a finished loop left)."""
    import fcntl
    os.makedirs(cfg.run_dir, exist_ok=True)
    fd = os.open(os.path.join(cfg.run_dir, "%s.%s.lock" % (script, cfg.node_id)), os.O_RDWR | os.O_CREAT, 0o600)
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


def explain(exc: BaseException) -> str:
    """One line for an expected failure, with a hint of what to check."""
    if isinstance(exc, rc.SentinelError):
        return "Redis Sentinel: %s (check redis.sentinels, redis.master_name and redis.sentinel_password; " \
               "during a failover this clears within seconds)" % exc
    if isinstance(exc, rc.AuthError):
        return "%s (check redis.password / redis.username in secrets.json or REDIS_PASSWORD)" % exc
    if isinstance(exc, rc.RedisTimeoutError):
        return "Redis timed out: %s (is the host reachable and the server responsive?)" % exc
    if isinstance(exc, rc.RedisConnectionError):
        return "Redis unreachable: %s (check redis.host / redis.port and that redis-server runs)" % exc
    if isinstance(exc, rc.ProtocolError):
        return "not a Redis server? %s" % exc
    if isinstance(exc, rc.ReadOnlyError):
        return "Redis refused: %s (this server is a read-only replica: point redis.host at the master, or " \
               "use redis.sentinels)" % exc
    if isinstance(exc, rc.LoadingError):
        return "Redis refused: %s (the server is still loading its data: this clears by itself)" % exc
    if isinstance(exc, rc.NoPermError):
        return "Redis ACL refused a command: %s (grant the user the commands listed in the README)" % exc
    if isinstance(exc, rc.ResponseError):
        return "Redis refused: %s" % exc
    return str(exc)


class _Output:
    """stdout or stderr that never fails the run: a closed stream (None: started with ``>&-``) or a
    failing one (EPIPE from ``| head``, ENOSPC from ``>/dev/full``) drops what is written from then
    on. Output lost is not a failure of the work: the exit code stays the tick's (a submit whose id
    could not be printed has still queued its task, and must not invite a second submit)."""

    def __init__(self, stream):
        self.stream, self.lost = stream, stream is None

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self.stream.write(text)
            except (OSError, ValueError):
                self.lost = True
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.lost = True

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _fill_closed_fds() -> None:
    """Put /dev/null on a closed fd 0, 1 or 2, so no socket or file opened later lands there (a child
    would take it for its stdout). ``sys.stdin`` stays None: reading ``-`` then says stdin is closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass


def main(script: str, tick, description: str, extra_flags=(), interval_s=None, on_stop=None,
         argv=None, locked=True, usage: str = "[options]", common_flags=None) -> int:
    """Run ``tick`` once (or forever with --loop) and return the exit code.

    ``locked`` (a bool, or a function of the Context) says whether this run
    takes the per-node lock that keeps runs of this script from overlapping.
    The tick may set ``ctx.exit_code`` for a non-zero exit without an error.
    stdout and stderr are guarded (``_Output``) for the run: closed or failing, they cost the output only.
    """
    _fill_closed_fds()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Output(saved[0]), _Output(saved[1])
    try:
        return _main(script, tick, description, extra_flags, interval_s, on_stop, argv, locked, usage,
                     common_flags)
    finally:
        lost = [guard for guard in (sys.stdout, sys.stderr) if isinstance(guard, _Output) and guard.lost]
        sys.stdout, sys.stderr = saved
        for guard in lost:  # the interpreter's final flush must not fail on the same stream again
            _silence(guard.stream)


def _main(script, tick, description, extra_flags, interval_s, on_stop, argv, locked, usage, common_flags) -> int:
    prog = script + ".py"
    flags_spec = list(extra_flags) + (COMMON_FLAGS if common_flags is None else common_flags)
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv, flags_spec)
    except UsageError as exc:
        sys.stderr.write("%s: error: %s\n" % (prog, exc))
        return EXIT_CONFIG
    if flags.get("--help"):
        print(format_help(prog, description, flags_spec, usage))
        return EXIT_OK
    try:
        cfg = config_mod.load(flags.get("--config-dir", ""), flags.get("--log-dir", ""),
                              check_relations=not flags.get("--print-config"))
        if not flags.get("--print-config"):
            cfg.check_log_dir()
    except config_mod.ConfigError as exc:
        sys.stderr.write("%s: config error: %s\n" % (prog, exc))
        return EXIT_CONFIG
    if flags.get("--print-config"):
        for warning in cfg.warnings:
            sys.stderr.write("warning: %s\n" % warning)
        print(cfg.describe())
        if cfg.relation_error:
            sys.stderr.write("%s: config error: %s\n" % (prog, cfg.relation_error))
            return EXIT_CONFIG
        return EXIT_OK
    from distnode.core import log as log_mod
    log = log_mod.for_config(script, cfg, console=None if flags.get("--quiet") else sys.stderr)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    ctx = Context(script, cfg, log, flags)
    lock_fd = None
    try:
        if locked(ctx) if callable(locked) else locked:
            lock_fd = acquire_lock(cfg, script, long_lived=ctx.loop)
            if lock_fd is None:
                log.info("a previous %s run for node %s still holds the lock; skipping this one", prog, cfg.node_id)
                return EXIT_OK
        if ctx.loop:
            return _loop(ctx, tick, interval_s, on_stop)
        _emit(ctx, run_with_retry(ctx, tick))
        sys.stdout.flush()  # a closed pipe shows here, inside main(), not at interpreter exit
        return ctx.exit_code
    except BrokenPipeError:  # the reader stopped early (`status | head`): output cut short is not an error
        _silence_stdout()
        return ctx.exit_code
    except BaseException as exc:  # the top of main(): every failure becomes an exit code
        return _fail(ctx, prog, exc)
    finally:
        ctx.close()
        log.close()
        if lock_fd is not None:
            os.close(lock_fd)  # releases the flock (main() may run more than once per process)


def _silence_stdout() -> None:
    _silence(sys.stdout)


def _silence(stream) -> None:
    """Point ``stream``'s fd at /dev/null, so the interpreter's final flush does not fail on it again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        pass


def _emit(ctx: Context, result) -> None:
    if ctx.flags.get("--json") and result is not None:
        import json
        print(json.dumps(result, sort_keys=True))


def _fail(ctx: Context, prog: str, exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        ctx.log.info("interrupted")
        return 130
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, config_mod.ConfigError):
        code, line = EXIT_CONFIG, "config error: %s" % exc
    elif isinstance(exc, UsageError):
        code, line = EXIT_CONFIG, "error: %s" % exc
    elif isinstance(exc, (rc.RedisError, TickError)):
        code, line = EXIT_REDIS, "error: %s" % explain(exc)
    elif _under_log_dir(ctx, exc):  # the node's own files (state, token, mirror): a full disk, not a bug
        code, line = EXIT_CONFIG, "config error: %s" % config_mod.log_dir_fault(ctx.cfg.log_dir, exc)
    else:
        import traceback
        ctx.log.log("ERROR", scrub(ctx, "unexpected error:\n" + traceback.format_exc()), console=False)
        code, line = EXIT_INTERNAL, "unexpected error: %s: %s (traceback in %s)" % (
            type(exc).__name__, exc, ctx.log.path)
    line = scrub(ctx, line)
    if code != EXIT_INTERNAL:
        ctx.log.log("ERROR", line, console=False)
    sys.stderr.write("%s: %s\n" % (prog, line))
    return code


def scrub(ctx: Context, text: str) -> str:
    """``text`` with every secret the config holds cut out (a password echoed by a server, inside a host)."""
    secrets = getattr(ctx.cfg, "secrets", None)
    return config_mod._scrub(text, secrets) if secrets else text


def _under_log_dir(ctx: Context, exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for a file under the log dir (local_state names the file)."""
    name = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    if not isinstance(name, str):
        return False
    folder = os.path.abspath(ctx.cfg.log_dir)
    return os.path.abspath(name).startswith(folder + os.sep)


def run_loop(ctx: Context, tick, period_s: float, fatal=()) -> None:
    """Tick every ``period_s`` until ``ctx.stopping``; a failed tick is logged, never fatal.

    Every exception a tick raises is survived (a full disk, a bug): an expected one is one
    line in the log and on the console, anything else also leaves its traceback in the log;
    except the ``fatal`` ones, raised at once (no later tick fixes them).
    ``ctx.failures_in_a_row`` and ``ctx.last_ok_s`` (monotonic) record the loop's health
    for the other jobs of a ``--foreground`` process.
    """
    ctx.log.info("loop mode: a tick every %gs", period_s)
    while not ctx.stopping:
        started = time.monotonic()
        try:
            _emit(ctx, run_with_retry(ctx, tick))
            ctx.failures_in_a_row, ctx.last_ok_s = 0, time.monotonic()
        except (KeyboardInterrupt, SystemExit, _WakeUp, UsageError, config_mod.ConfigError):
            raise  # a stop, or bad input that no later tick fixes: exit 2 at once
        except fatal:
            raise
        except (rc.RedisError, TickError) as exc:
            ctx.failures_in_a_row += 1
            ctx.log.error("tick failed (%d in a row): %s", ctx.failures_in_a_row, scrub(ctx, explain(exc)))
        except BaseException as exc:  # the top of a long-running job: survive, traceback to the log
            ctx.failures_in_a_row += 1
            if _under_log_dir(ctx, exc):  # a full disk under the log dir is expected: one line
                ctx.log.error("tick failed (%d in a row): %s", ctx.failures_in_a_row,
                              config_mod.log_dir_fault(ctx.cfg.log_dir, exc))
            else:
                _log_unexpected(ctx, exc)
        ctx.sleep(period_s - (time.monotonic() - started))


def _log_unexpected(ctx: Context, exc: BaseException) -> None:
    """Traceback to the log file, one line to the console; never raises (the log itself may be the fault)."""
    try:
        import traceback
        line = scrub(ctx, "tick failed (%d in a row): unexpected %s: %s" % (
            ctx.failures_in_a_row, type(exc).__name__, exc))
        ctx.log.log("ERROR", scrub(ctx, line + "\n" + traceback.format_exc()), console=False)
        line += " (traceback in %s)" % ctx.log.path
        if ctx.log.console is not None:
            ctx.log.console.write(line + "\n")
            ctx.log.console.flush()
    except Exception:  # noqa: BLE001 - reporting a failure must not end the job
        pass


def _loop(ctx: Context, tick, interval_s, on_stop) -> int:
    import signal

    def stop(signum, _frame):
        ctx.stopping = True
        ctx.log.info("got %s; stopping", signal.Signals(signum).name)
        if ctx._sleeping:
            raise _WakeUp()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # another live process holds this node id: exit 1 with its one line (main's _fail), as --foreground
    # does, not a failed tick logged every poll; on_stop is skipped (the id's record and lease are not ours)
    run_loop(ctx, tick, interval_s(ctx.cfg), fatal=(NodeIdCollision,))
    if on_stop is not None:
        try:
            on_stop(ctx)
        except (rc.RedisError, TickError) as exc:
            ctx.log.error("on stop: %s", scrub(ctx, explain(exc)))
    return EXIT_OK
