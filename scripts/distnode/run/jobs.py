"""Every job a node runs, in one table: what cron installs, what ``--foreground`` runs, what each entry script ticks.

A job is one thing a node does on a period: its name (also its lock's, its
log file's and its cron declaration key's), the entry script and words a cron
job runs for one tick, one line saying what it does, its period in seconds as
a function of the loaded config, where its tick lives, and the longest one
cron run of it holds its lock (``node_manager.py deregister`` waits that long
for a cron tick to end: the worker's runs a task to its end).

Guarantees:
- the three ways to run a node run the same jobs at the same periods: the cron
  installer (``run/cron.py``, one cron job per row, ``--every`` the period),
  ``--foreground`` (``run/foreground.py``, one thread per row) and an entry
  script's ``--loop`` (``run/ticks.py``, ticking at the row's period);
- the task worker ticks every ``tasks.poll_interval_s`` under all three (until
  issue 14 a cron worker ticked every min(``node.heartbeat_interval``, 2 s));
- the failover, state-sync jobs tick with the heartbeat, every
  ``node.heartbeat_interval``; the election every ``election.renew_interval``
  (0: the heartbeat interval);
- reading this table imports no tick: a tick is named by its import path and
  imported only by the run that ticks it, so a heartbeat tick never loads the
  worker or the elector.

A tick path names ``module:function`` (``tick(ctx) -> dict``) or ``module:Class``:
a class is made once per process, at its first tick (``Tick``), with the Context
(state kept between ticks of a loop) and its instance is the tick; ``stop(ctx)``, if it has one, runs when a
``--loop`` ends (the election gives its lease up at once).
"""

from distnode.core import defaults
from distnode.run.context import retry_window_s  # already loaded by every script that reads this table


def redis_tick_s(cfg) -> float:
    """The longest a tick that only talks to Redis runs: its requests at their timeouts, with retries."""
    return retry_window_s(cfg, defaults.TICK_MAX_REQUESTS)


def worker_tick_s(cfg) -> float:
    """The longest a cron worker tick runs: it claims until ``tasks.tick_budget_s``, then finishes the
    task it runs (``tasks.default_timeout_s``; a task submitted with a longer ``--timeout`` takes longer),
    kills its process group (JOB_STOP_SLACK_S covers an agent turn's grace) and stores the outcome."""
    t = cfg["tasks"]
    return t["tick_budget_s"] + t["default_timeout_s"] + defaults.JOB_STOP_SLACK_S + retry_window_s(cfg)


class Job:
    """One row of the table. A plain class, not a NamedTuple: every tick reads this module, and
    ``typing`` would cost it ~3 ms (``-X importtime``, Python 3.11)."""

    __slots__ = ("name", "argv", "text", "period_s", "tick", "run_max_s")

    def __init__(self, name: str, argv: tuple, text: str, period_s, tick, run_max_s=redis_tick_s):
        self.name = name
        self.argv = argv  # the entry script in scripts/ and the words that make it run one tick
        self.text = text  # what it does, in one line (the cron job's description)
        self.period_s = period_s  # cfg -> seconds between ticks
        self.tick = tick  # "module:attr" (see the module docstring); a callable is used as is (tests)
        self.run_max_s = run_max_s  # cfg -> seconds one cron run may hold the job's lock

    def __repr__(self) -> str:
        return "Job(%r, %r)" % (self.name, self.argv)


JOBS = (
    Job("heartbeat", ("heartbeat.py",), "tell the cluster this node is alive",
        lambda cfg: cfg.heartbeat_interval_s, "distnode.cluster.membership:tick"),
    Job("leader_election", ("leader_election.py",), "renew or take the leader lease",
        lambda cfg: cfg.renew_interval_s, "distnode.cluster.election_job:ElectionJob"),
    Job("failover_manager", ("failover_manager.py",), "leader: mark dead nodes offline, reclaim their tasks",
        lambda cfg: cfg.heartbeat_interval_s, "distnode.cluster.failover:step"),
    Job("state_sync", ("state_sync.py", "tick"), "publish / mirror the cluster snapshot",
        lambda cfg: cfg.heartbeat_interval_s, "distnode.cluster.cluster_state:sync"),
    Job("task_queue", ("task_queue.py", "work"), "run queued tasks on this node",
        lambda cfg: cfg["tasks"]["poll_interval_s"], "distnode.tasks.worker:WorkerJob", worker_tick_s),
)

NAMES = tuple(job.name for job in JOBS)


def get(name: str) -> Job:
    """The job called ``name``; KeyError for any other."""
    for job in JOBS:
        if job.name == name:
            return job
    raise KeyError(name)


def load_tick(job: Job):
    """The object ``job.tick`` names, imported now (only this job's modules are loaded)."""
    if callable(job.tick):
        return job.tick
    module_name, _, attr = job.tick.partition(":")
    # __import__ rather than importlib.import_module: a builtin, nothing more to load at tick time
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


class Tick:
    """``job``'s tick in this process: the named function, or an instance of the named class, made on
    the first call. Made there, inside the runner's protection, a local fault while making it (the
    elector's instance file in a directory it cannot write) is one failed tick that a ``--loop`` or
    ``--foreground`` job logs and retries next period, not the end of the process; a one-shot tick
    fails with the same exit code it always had."""

    __slots__ = ("job", "made")

    def __init__(self, job: Job):
        self.job, self.made = job, None

    def __call__(self, ctx):
        if self.made is None:
            target = load_tick(self.job)
            self.made = target(ctx) if isinstance(target, type) else target
        return self.made(ctx)

    def wait(self, ctx, seconds: float) -> None:
        """Between two ticks of a loop: the made tick's ``wait(ctx, seconds)`` if it has one (it may
        return early: ``run/wake.py``), else ``ctx.sleep(seconds)``."""
        own = getattr(self.made, "wait", None)
        if own is None:
            ctx.sleep(seconds)
        else:
            own(ctx, seconds)

    def stop(self, ctx) -> None:
        """The made tick's ``stop(ctx)``, if it was made and has one (see the module docstring)."""
        on_stop = getattr(self.made, "stop", None)
        if on_stop is not None:
            on_stop(ctx)

    def __repr__(self) -> str:
        return "Tick(%r)" % self.job.name
