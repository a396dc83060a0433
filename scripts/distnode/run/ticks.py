"""The tick runner: one job's tick, once (a cron run) or forever (``--loop``), never two at once.

``main(job, description)`` is the whole ``main()`` of a tick script
(heartbeat.py, leader_election.py, failover_manager.py); ``run(ctx, job)``
is the same for a command that is a job's tick (``state_sync.py tick``,
``task_queue.py work``). A run:

- holds the job's per-node lock (``run/lock.py``); a late run logs and exits 0;
- retries the whole tick on connection faults only (``Context.retried``);
- with ``--loop``, ticks every ``job.period_s(cfg)`` seconds until SIGTERM or
  SIGINT, survives every exception a tick raises (traceback to the log, one
  line to the console), then calls the tick's ``stop(ctx)`` if it has one.

It imports the job's tick and nothing of the command runner.

A tick script starts with the cyclic garbage collector off (``gc.disable()``
at the top of heartbeat.py, leader_election.py, failover_manager.py, when run
as a program): a one-shot tick makes some 10,000 objects that live until it
exits (modules, functions, classes) and next to no cyclic garbage, yet the
collector would walk them about ten times while the tick imports and once
more at exit, about 5 M instructions (1.5 ms, a fifth of the tick's cost
beyond the floor; cachegrind, Python 3.11). A loop makes garbage for as long
as it runs: ``run`` turns the collector back on before its first tick.
"""

import gc
import os
import time

from distnode.core import config as config_mod
from distnode.core import errors
from distnode.core.errors import AppError, ConfigError, NodeIdCollision, UsageError
from distnode.redis.errors import RedisError
from distnode.run import cli, jobs, lock
from distnode.run.context import Context, WakeUp


def main(job: jobs.Job, description: str, argv=None) -> int:
    """The ``main()`` of a script that runs one job's tick: its flags are the common ones, and it takes
    no words (a word is a UsageError, exit 2, nothing done)."""
    def body(ctx):
        if ctx.args:
            raise UsageError("unexpected word %s: %s takes no words, only options" % (
                cli.shown(ctx.args[0]), job.argv[0]))
        return run(ctx, job)
    return cli.run(job.name, description, cli.COMMON_FLAGS, "[options]", argv, body, locked=True)


def run(ctx: Context, job: jobs.Job):
    """One tick of ``job`` (or, with ``--loop``, ticks until a signal) under its lock; the tick's result."""
    fd = lock.acquire(ctx.cfg, job.name, long_lived=ctx.loop)
    if fd is None:
        ctx.log.info("a previous %s run for node %s still holds the lock; skipping this one", ctx.script + ".py",
                     ctx.node_id)
        return None
    try:
        tick = jobs.Tick(job)  # made at its first call, inside the loop's protection (run_loop)
        if ctx.loop:
            gc.enable()  # off for a one-shot tick only (see the module docstring)
            _loop(ctx, tick, job.period_s(ctx.cfg))
            return None
        return ctx.retried(tick, ctx)
    finally:
        os.close(fd)  # releases the flock (main() may run more than once per process)


def run_loop(ctx: Context, tick, period_s: float, fatal=(), wait=None) -> None:
    """Tick every ``period_s`` until ``ctx.stopping``; a failed tick is logged, never fatal.

    Between ticks it calls ``wait(ctx, seconds)`` with what is left of the period (default: the
    tick's own ``wait`` if it has one, else ``ctx.sleep``); a wait may return early, when something
    landed in Redis that the next tick must see (``run/wake.py``). After a failed tick it sleeps.

    Every exception a tick raises is survived (a full disk, a bug): an expected one is one
    line in the log and on the console, anything else also leaves its traceback in the log;
    except the ``fatal`` ones, raised at once (no later tick fixes them).
    ``ctx.failures_in_a_row`` and ``ctx.last_ok_s`` (monotonic) record the loop's health
    for the other jobs of a ``--foreground`` process.
    """
    ctx.log.info("loop mode: a tick every %gs", period_s)
    if wait is None:
        wait = getattr(tick, "wait", None) or _sleep
    while not ctx.stopping:
        started = time.monotonic()
        pause = _sleep
        try:
            cli.emit(ctx, ctx.retried(tick, ctx))
            ctx.failures_in_a_row, ctx.last_ok_s = 0, time.monotonic()
            pause = wait
        except (KeyboardInterrupt, SystemExit, WakeUp, UsageError, ConfigError):
            raise  # a stop, or bad input that no later tick fixes: exit 2 at once
        except fatal:
            raise
        except (RedisError, AppError) as exc:
            ctx.failures_in_a_row += 1
            ctx.log.error("tick failed (%d in a row): %s", ctx.failures_in_a_row, cli.scrub(ctx, errors.explain(exc)))
        except BaseException as exc:  # the top of a long-running job: survive, traceback to the log
            ctx.failures_in_a_row += 1
            if cli.under_log_dir(ctx, exc):  # a full disk under the log dir is expected: one line
                ctx.log.error("tick failed (%d in a row): %s", ctx.failures_in_a_row,
                              config_mod.log_dir_fault(ctx.cfg.log_dir, exc))
            else:
                _log_unexpected(ctx, exc)
        if not ctx.stopping:
            pause(ctx, period_s - (time.monotonic() - started))


def _sleep(ctx: Context, seconds: float) -> None:
    ctx.sleep(seconds)


def _log_unexpected(ctx: Context, exc: BaseException) -> None:
    """Traceback to the log file, one line to the console; never raises (the log itself may be the fault)."""
    try:
        import traceback  # deferred: only a bug needs it (~3 ms with linecache)
        line = cli.scrub(ctx, "tick failed (%d in a row): unexpected %s: %s" % (
            ctx.failures_in_a_row, type(exc).__name__, exc))
        ctx.log.log("ERROR", cli.scrub(ctx, line + "\n" + traceback.format_exc()), console=False)
        line += " (traceback in %s)" % ctx.log.path
        if ctx.log.console is not None:
            ctx.log.console.write(line + "\n")
            ctx.log.console.flush()
    except Exception:  # noqa: BLE001 - reporting a failure must not end the job
        pass


def _loop(ctx: Context, tick, period_s: float) -> None:
    import signal  # deferred: a one-shot tick installs no handler

    def stop(signum, _frame):
        ctx.stopping = True
        ctx.log.info("got %s; stopping", signal.Signals(signum).name)
        if ctx.sleeping:
            raise WakeUp()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # another live process holds this node id: exit 1 with its one line (cli.fail), as --foreground
    # does, not a failed tick logged every poll; stop() is skipped (the id's record and lease are not ours)
    run_loop(ctx, tick, period_s, fatal=(NodeIdCollision,))
    on_stop = getattr(tick, "stop", None)
    if on_stop is not None:
        try:
            on_stop(ctx)
        except (RedisError, AppError) as exc:
            ctx.log.error("on stop: %s", cli.scrub(ctx, errors.explain(exc)))
