"""Command-line flags and ``--help`` for every script, parsed by hand.

The parser is hand-written because ``argparse`` costs a cron tick about as
much as its Redis round trip. A bad flag is a ``UsageError`` (exit 2, one
line, nothing done); a numeric flag is refused unless finite, in range and
written in ASCII digits.
"""

from distnode.core import exits, settings
from distnode.core.errors import UsageError

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
