"""The command runner: ``script.py COMMAND [WORDS] [options]``, dispatched through an explicit table.

A command script (node_manager.py, state_sync.py, task_queue.py) maps each
command name to a ``Command``: the function that does it, its usage line,
the script's own flags it takes, how many words it takes, or the job whose
tick it is. ``main`` checks the command line against that row (UsageError,
exit 2, one line naming the flag or word and the command, nothing done), then
calls ``run(ctx, words)`` exactly once.

SIGTERM ends a one-shot command with one line and exit 143 (``errors.Terminated``,
raised from the signal handler, so a ``finally`` on the way up still runs); a
command may raise its own Terminated with a better line (``submit --wait``: the
task stays queued). A job's tick keeps the default action (a cron tick is cheap
to kill, and its start pays no ``signal`` import), except while ``work`` runs a
handler: ``procs/spawn.py`` then raises Terminated itself, once the handler's
process group is killed.

Retries: a command is not retried as a whole. It does its local work once
(reads stdin or a file, draws a token, fixes a deadline) and wraps each Redis
call in ``ctx.retried(...)``, so a dropped connection repeats the call, never
the preparation. A job's tick (``Command(job=...)``) runs under the tick
runner instead: its lock, whole-tick retries, and ``--loop``.
"""

from distnode.core import exits
from distnode.core.errors import BadInput, Terminated, UsageError
from distnode.run import cli, jobs, ticks


class Command:
    """One row of a command table. A plain class, not a NamedTuple: ``state_sync.py tick`` and
    ``task_queue.py work`` are ticks, and ``typing`` would cost each ~3 ms (``-X importtime``)."""

    __slots__ = ("run", "usage", "flags", "words", "job")

    def __init__(self, run=None, usage: str = "", flags: tuple = (), words: "int | None" = None,
                 job: str = ""):
        self.run = run  # (ctx, words) -> result; None for a job's tick
        self.usage = usage  # shown in usage errors, e.g. "get KEY"
        self.flags = flags  # the script's own flags it takes (any other is a UsageError; common ones always)
        self.words = words  # how many words after the command name; None: run() checks them
        self.job = job  # a job of run/jobs.py: this command is one tick of it (its lock, retries, --loop)

    def __repr__(self) -> str:
        return "Command(%r)" % (self.usage or self.job)


def main(script: str, description: str, table: dict, own_flags, argv=None, default: str = "",
         common_flags=None, usage: str = "", more_codes: tuple = ()) -> int:
    """The ``main()`` of a command script; ``table`` maps each command name to its ``Command``.

    ``default``: the command run when none is named ("": one must be named). ``more_codes``:
    the exit codes its commands return beyond ``exits.COMMON`` and TERMINATED (for ``--help``)."""
    spec = list(own_flags) + list(cli.COMMON_FLAGS if common_flags is None else common_flags)
    names = "[%s]" % "|".join(table) if default else "{%s}" % ",".join(table)
    usage = usage or names + " [ARGS] [options]"

    def body(ctx):
        name, words = command_line(ctx.args, table, default)
        command = table[name]
        _check(ctx, name, words, command, own_flags, table)
        if command.job:
            return ticks.run(ctx, jobs.get(command.job))
        restore = _stop_on_sigterm()
        try:
            return command.run(ctx, words)
        except BadInput as exc:
            raise UsageError("%s: %s" % (name, exc)) from None
        finally:
            if restore is not None:
                restore()

    codes = exits.COMMON + (exits.TERMINATED,) + tuple(more_codes)
    return cli.run(script, description, spec, usage, argv, body, codes=codes,
                   locked=any(row.job for row in table.values()))


def command_line(args: list, table: dict, default: str = "") -> tuple:
    """(the command's name, the words after it) from ``args``; UsageError naming an unknown one."""
    words = args or ([default] if default else [])
    if not words or words[0] not in table:
        said = "unknown command %s; expected" % cli.shown(words[0]) if words else "expected a command,"
        raise UsageError("%s one of: %s" % (said, ", ".join(table)))
    return words[0], words[1:]


def _stop_on_sigterm():
    """Make SIGTERM raise ``Terminated`` in this (main) thread; the function that undoes it, or None
    where it cannot be set (not the main thread)."""
    import signal  # deferred: a job's tick installs no handler (~0.4 ms, -X importtime, Python 3.11)

    def stop(_signum, _frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        return None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _check(ctx, name: str, words: list, command: Command, own_flags, table: dict) -> None:
    """UsageError for a flag, a word count or a --loop this command does not take."""
    for flag, _metavar, _help in own_flags:
        if flag in ctx.flags and flag not in command.flags:
            raise UsageError("%s does not apply to %s (usage: %s)" % (flag, name, command.usage or name))
    if ctx.loop and not command.job:
        looping = [other for other, row in table.items() if row.job]
        raise UsageError("--loop works only with %s" % " or ".join(looping))
    if command.words is not None and len(words) > command.words:
        raise UsageError("unexpected word %s after %s (usage: %s)" % (
            cli.shown(words[command.words]), name, command.usage or name))
    if command.words is not None and len(words) < command.words:
        raise UsageError("expected: %s (got %d argument%s after the command)" % (
            command.usage or name, len(words), "" if len(words) == 1 else "s"))
