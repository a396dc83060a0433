"""What every script does around its work: guarded output, flags, config, log, exit code.

``run(script, description, flags_spec, usage, argv, body)`` parses the flags
(``--help`` and ``--print-config`` end there), loads the config, refuses an
unwritable log dir (exit 2), opens the log, builds the ``Context`` and calls
``body(ctx)``; its result is printed with ``--json``. Every failure becomes
an exit code from ``core/exits.py`` with one line on stderr, as
``core/errors.describe`` says: 0 ok, 1 Redis unreachable or refusing, 2 bad
config or usage, 3 an unexpected error (its traceback goes to the log file
only), 130 Ctrl-C, 143 a one-shot command stopped by SIGTERM
(``errors.Terminated``). Output cut short by its reader (``status | head``)
is success, and a closed or failing stdout or stderr costs the output only,
never the exit code.

The tick runner (``ticks``) and the command runner (``commands``) are the two
bodies; neither imports the other's concerns.
"""

import os
import sys

from distnode.core import config as config_mod
from distnode.core import errors, exits, redact
from distnode.core.errors import ConfigError, UsageError
from distnode.run.context import Context
from distnode.run.flags import format_help, parse_flags


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


def run(script: str, description: str, flags_spec, usage: str, argv, body, codes=exits.COMMON,
        locked: bool = False) -> int:
    """Run ``body(ctx)`` once with everything around it; return the exit code.

    ``body`` returns the result to print with ``--json`` (None: nothing) and may set
    ``ctx.exit_code`` for a non-zero exit without an error. stdout and stderr are guarded
    (``_Output``) for the run: closed or failing, they cost the output only. ``codes`` and
    ``locked`` are for ``--help`` (``flags.format_help``).
    """
    return guarded(_run, script, description, flags_spec, usage, argv, body, (codes, locked))


def guarded(main, *args):
    """``main(*args)`` with stdout and stderr guarded (``_Output``): closed or failing, they cost
    the output only. Every ``main()`` of this skill runs this way (this runner, node_setup.py)."""
    _fill_closed_fds()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Output(saved[0]), _Output(saved[1])
    try:
        return main(*args)
    finally:
        lost = [guard for guard in (sys.stdout, sys.stderr) if isinstance(guard, _Output) and guard.lost]
        sys.stdout, sys.stderr = saved
        for guard in lost:  # the interpreter's final flush must not fail on the same stream again
            _silence(guard.stream)


def _run(script, description, flags_spec, usage, argv, body, help_codes: tuple) -> int:
    prog = script + ".py"
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv, flags_spec)
    except UsageError as exc:
        sys.stderr.write("%s: %s\n" % (prog, exc.line()))
        return exc.exit_code
    if flags.get("--help"):
        print(format_help(prog, description, flags_spec, usage, *help_codes))
        return exits.OK
    cfg, code = _load_config(prog, flags)
    if cfg is None:  # the config was only printed, or refused
        return code
    from distnode.core import log as log_mod  # deferred: --help and a bad config exit without it
    log = log_mod.for_config(script, cfg, console=None if flags.get("--quiet") else sys.stderr)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    ctx = Context(script, cfg, log, flags)
    try:
        emit(ctx, body(ctx))
        sys.stdout.flush()  # a closed pipe shows here, inside main(), not at interpreter exit
        return ctx.exit_code
    except BrokenPipeError:  # the reader stopped early (`status | head`): output cut short is not an error
        _silence(sys.stdout)
        return ctx.exit_code
    except BaseException as exc:  # the top of main(): every failure becomes an exit code
        return fail(ctx, prog, exc)
    finally:
        ctx.close()
        log.close()


def _load_config(prog: str, flags: dict) -> tuple:
    """(the loaded config, None); or (None, exit code) when it was only printed, or refused (one line)."""
    printing = bool(flags.get("--print-config"))
    try:
        cfg = config_mod.load(flags.get("--config-dir", ""), flags.get("--log-dir", ""),
                              check_relations=not printing)
        if not printing:
            cfg.check_log_dir()
    except ConfigError as exc:
        sys.stderr.write("%s: %s\n" % (prog, exc.line()))
        return None, exc.exit_code
    if not printing:
        return cfg, None
    for warning in cfg.warnings:
        sys.stderr.write("warning: %s\n" % warning)
    print(cfg.describe())
    if cfg.relation_error:
        sys.stderr.write("%s: %s\n" % (prog, ConfigError(cfg.relation_error).line()))
        return None, exits.BAD_CONFIG
    return None, exits.OK


def emit(ctx: Context, result) -> None:
    """Print ``result`` as one JSON line when the run asked for ``--json``."""
    if ctx.flags.get("--json") and result is not None:
        import json  # deferred: a cron tick runs without --json (~1 ms)
        print(json.dumps(result, sort_keys=True))


def _silence(stream) -> None:
    """Point ``stream``'s fd at /dev/null, so the interpreter's final flush does not fail on it again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        pass


def fail(ctx: Context, prog: str, exc: BaseException) -> int:
    """The exit code for ``exc``, with its one line on stderr and in the log (a bug: its traceback, log only)."""
    if isinstance(exc, KeyboardInterrupt):
        ctx.log.info("interrupted")
        return exits.INTERRUPTED
    if isinstance(exc, errors.Terminated):  # not a fault: one line, shown even with --quiet, as a wait's outcome
        line = scrub(ctx, exc.message)
        ctx.log.log("WARNING", line, console=False)
        sys.stderr.write("%s: %s\n" % (prog, line))
        return exc.exit_code
    if isinstance(exc, SystemExit):
        raise exc
    if under_log_dir(ctx, exc):  # the node's own files (state, token, mirror): a full disk, not a bug
        exc = ConfigError(config_mod.log_dir_fault(ctx.cfg.log_dir, exc))
    known = errors.describe(exc)
    if known is None:
        import traceback  # deferred: only a bug needs it (~3 ms with linecache)
        ctx.log.log("ERROR", scrub(ctx, "unexpected error:\n" + traceback.format_exc()), console=False)
        code, line = exits.INTERNAL, "unexpected error: %s: %s (traceback in %s)" % (
            type(exc).__name__, exc, ctx.log.path)
    else:
        code, line = known
    line = scrub(ctx, line)
    if code != exits.INTERNAL:
        ctx.log.log("ERROR", line, console=False)
    sys.stderr.write("%s: %s\n" % (prog, line))
    return code


def scrub(ctx: Context, text: str) -> str:
    """``text`` with every secret the config holds cut out (a password echoed by a server, inside a host)."""
    secrets = getattr(ctx.cfg, "secrets", None)
    return redact.scrub(text, secrets) if secrets else text


def under_log_dir(ctx: Context, exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for a file under the log dir (local_state names the file)."""
    name = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    if not isinstance(name, str):
        return False
    folder = os.path.abspath(ctx.cfg.log_dir)
    return os.path.abspath(name).startswith(folder + os.sep)
