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

The command line is parsed by hand (``parse_flags``, at the end), because
``argparse`` costs a cron tick about as much as its Redis round trip. A bad
flag is a ``UsageError`` (exit 2, one line, nothing done); a numeric flag is
refused unless finite, in range and written in ASCII digits (``number_flag``).

The tick runner (``ticks``) and the command runner (``commands``) are the two
bodies; neither imports the other's concerns.
"""

import os
import sys

from distnode.core import config as config_mod
from distnode.core import errors, exits, settings
from distnode.core.errors import ConfigError, UsageError
from distnode.run.context import Context


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
    ``locked`` are for ``--help`` (``format_help``).
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
    if not secrets:
        return text
    from distnode.core import redact  # deferred: only a line about a failure is scrubbed (0.45 M instructions)
    return redact.scrub(text, secrets)


def under_log_dir(ctx: Context, exc: BaseException) -> bool:
    """Whether ``exc`` is a write refused for a file under the log dir (local_state names the file)."""
    name = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    if not isinstance(name, str):
        return False
    folder = os.path.abspath(ctx.cfg.log_dir)
    return os.path.abspath(name).startswith(folder + os.sep)


# -- the command line ------------------------------------------------------------------------------

COMMON_FLAGS = [  # every script takes these (node_manager.py and node_setup.py fewer: see without())
    ("--config-dir", "DIR", "config folder (env OPENCLAW_DISTRIBUTED_CONFIG_DIR; default: the skill's config/)"),
    ("--log-dir", "DIR", "log folder (env OPENCLAW_DISTRIBUTED_LOG_DIR; default: the skill's logs/)"),
    ("--print-config", None, "print the effective config with the source of each value, then exit"),
    ("--loop", None, "run ticks forever in one process (hosts without OpenClaw cron); stop with SIGTERM"),
    ("--json", None, "print the tick's result as one JSON object on stdout"),
    ("--quiet", None, "log to the file and syslog only, not to stderr"),
    ("--help", None, "show this help and exit"),
]


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
        maximum = MAX_FLAG_INT if kind is int else settings.MAX_RETENTION_S
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


def format_help(prog: str, description: str, flags, usage: str = "[options]", codes=exits.COMMON,
                locked: bool = False) -> str:
    """The ``--help`` text: usage, the script's docstring, one line per flag, the exit codes it returns
    (``codes``; ``locked``: it runs a job under its per-node lock, see ``exits.help_lines``)."""
    lines = ["usage: %s %s" % (prog, usage), "", description.strip(), "", "options:"]
    for name, metavar, text in flags:
        head = "  %s %s" % (name, metavar) if metavar else "  " + name
        lines.append("%-26s %s" % (head, text) if len(head) < 26 else head + "\n" + " " * 27 + text)
    lines += [""] + exits.help_lines(codes, locked)
    return "\n".join(lines)


def without(*names: str) -> list:
    """COMMON_FLAGS less ``names`` (a script that has no ``--loop``, say)."""
    return [flag for flag in COMMON_FLAGS if flag[0] not in names]
